//! The `authz_audit_*` metrics.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::FailureKind;

/// Label set of `authz_audit_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailureLabels {
    /// The failure class (a bounded set).
    pub kind: FailureKind,
}

/// Handles to the audit metrics; cheap to clone (every field is a shared handle).
#[derive(Debug, Clone)]
pub struct AuditMetrics {
    /// `authz_audit_records_total`: decision records made durable.
    pub records: Counter,
    /// `authz_audit_write_duration_seconds`: time of one batch's `write(2)` calls.
    pub write_seconds: Histogram,
    /// `authz_audit_fsync_duration_seconds`: time of one batch's `fdatasync(2)`.
    pub fsync_seconds: Histogram,
    /// `authz_audit_queue_depth`: records waiting for the writer.
    pub queue_depth: Gauge,
    /// `authz_audit_batch_records`: records per group commit.
    pub batch_records: Histogram,
    /// `authz_audit_failures_total{kind}`: records that could not be made durable, by cause
    /// (each failed `append` counts once), plus one per failed rotation or retention clean-up.
    pub failures: Family<FailureLabels, Counter>,
    /// `authz_audit_rotations_total`: files rotated.
    pub rotations: Counter,
}

impl AuditMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "authz_audit_records",
            "Audit decision records made durable",
            metrics.records.clone(),
        );
        registry.register(
            "authz_audit_write_duration_seconds",
            "Time to write one group-commit batch to the audit sinks",
            metrics.write_seconds.clone(),
        );
        registry.register(
            "authz_audit_fsync_duration_seconds",
            "Time of one fdatasync of the audit file (fsync durability only)",
            metrics.fsync_seconds.clone(),
        );
        registry.register(
            "authz_audit_queue_depth",
            "Audit records waiting for the writer",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "authz_audit_batch_records",
            "Audit records written per group commit",
            metrics.batch_records.clone(),
        );
        registry.register(
            "authz_audit_failures",
            "Audit records that could not be made durable, by failure kind",
            metrics.failures.clone(),
        );
        registry.register(
            "authz_audit_rotations",
            "Audit files rotated",
            metrics.rotations.clone(),
        );
        metrics
    }

    /// Metrics that are not exported anywhere (for tools and benchmarks).
    pub fn unregistered() -> Self {
        AuditMetrics {
            records: Counter::default(),
            // 10 µs .. ~5 s: a page-cache write is microseconds, a slow disk flush is seconds.
            write_seconds: Histogram::new(exponential_buckets(0.00001, 3.0, 12)),
            fsync_seconds: Histogram::new(exponential_buckets(0.00001, 3.0, 12)),
            queue_depth: Gauge::default(),
            // 1, 2, 4, ... 4096 records per batch.
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            failures: Family::default(),
            rotations: Counter::default(),
        }
    }

    pub(crate) fn failed(&self, kind: FailureKind, records: u64) {
        self.failures
            .get_or_create(&FailureLabels { kind })
            .inc_by(records);
    }
}
