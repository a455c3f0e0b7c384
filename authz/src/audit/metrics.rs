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

/// Label set of the `authz_audit_witness_*` metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WitnessLabels {
    /// `file` or `redis` (a bounded set: one per witness kind).
    pub witness: &'static str,
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
    /// `authz_audit_inline_commits_total`: records a check committed itself, without the
    /// writer thread (it was the only append in flight).
    pub inline_commits: Counter,
    /// `authz_audit_failures_total{kind}`: records that could not be made durable, by cause
    /// (each failed `append` counts once), plus one per failed rotation or retention clean-up.
    pub failures: Family<FailureLabels, Counter>,
    /// `authz_audit_rotations_total`: files rotated.
    pub rotations: Counter,
    /// `authz_audit_checkpoints_total`: signed checkpoints written into the chain.
    pub checkpoints: Counter,
    /// `authz_audit_witness_delivered_total{witness}`: checkpoints a witness accepted.
    pub witness_delivered: Family<WitnessLabels, Counter>,
    /// `authz_audit_witness_failures_total{witness}`: failed attempts to reach a witness (each
    /// is retried).
    pub witness_failures: Family<WitnessLabels, Counter>,
    /// `authz_audit_witness_dropped_total{witness}`: checkpoints given up on because the
    /// witness's backlog was full (the next delivered checkpoint still covers their records).
    pub witness_dropped: Family<WitnessLabels, Counter>,
    /// `authz_audit_witness_pending{witness}`: checkpoints waiting for a witness.
    pub witness_pending: Family<WitnessLabels, Gauge>,
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
            "authz_audit_inline_commits",
            "Audit records committed by the check itself, without a hand-off to the writer thread",
            metrics.inline_commits.clone(),
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
        registry.register(
            "authz_audit_checkpoints",
            "Signed audit checkpoints written into the chain",
            metrics.checkpoints.clone(),
        );
        registry.register(
            "authz_audit_witness_delivered",
            "Audit checkpoints a witness accepted, by witness",
            metrics.witness_delivered.clone(),
        );
        registry.register(
            "authz_audit_witness_failures",
            "Failed attempts to deliver audit checkpoints to a witness (retried), by witness",
            metrics.witness_failures.clone(),
        );
        registry.register(
            "authz_audit_witness_dropped",
            "Audit checkpoints dropped from a full witness backlog, by witness",
            metrics.witness_dropped.clone(),
        );
        registry.register(
            "authz_audit_witness_pending",
            "Audit checkpoints waiting for a witness, by witness",
            metrics.witness_pending.clone(),
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
            inline_commits: Counter::default(),
            failures: Family::default(),
            rotations: Counter::default(),
            checkpoints: Counter::default(),
            witness_delivered: Family::default(),
            witness_failures: Family::default(),
            witness_dropped: Family::default(),
            witness_pending: Family::default(),
        }
    }

    pub(crate) fn failed(&self, kind: FailureKind, records: u64) {
        self.failures
            .get_or_create(&FailureLabels { kind })
            .inc_by(records);
    }
}
