//! Rate-limit metrics, registered under `authz_ratelimit_*`.
//!
//! Labels come from bounded sets only: `model` is a configured model name (or `unknown`),
//! `outcome`, `decision` and `kind` are fixed enumerations.

use super::store::StoreErrorKind;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a check concluded, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OutcomeLabel {
    /// Admitted under its limit.
    allowed,
    /// Over the limit (429).
    limited,
    /// The model is configured unlimited.
    unlimited,
    /// Store failed, `on_store_error = allow`.
    store_error_allowed,
    /// Store failed, `on_store_error = deny` (503).
    store_error_denied,
    /// The model has no limits configured (denied).
    unknown_model,
}

/// A decision made by `on_store_error`, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DegradedDecision {
    /// Admitted without a limit.
    allow,
    /// Denied with 503.
    deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: OutcomeLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DegradedLabels {
    model: String,
    decision: DegradedDecision,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// The rate limiter's metric handles (cheap to clone: they share state).
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    degraded_decisions: Family<DegradedLabels, Counter>,
    store_errors: Family<ErrorLabels, Counter>,
    store_latency: Histogram,
    degraded: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~0.4 s: loopback Redis is ~100 µs, the default timeout 50 ms.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 14))
}

impl RateLimitMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            outcomes: Family::default(),
            degraded_decisions: Family::default(),
            store_errors: Family::default(),
            store_latency: latency_histogram(),
            degraded: Gauge::default(),
        };
        registry.register(
            "authz_ratelimit_outcomes",
            "Rate-limit checks by configured model and outcome",
            metrics.outcomes.clone(),
        );
        registry.register(
            "authz_ratelimit_degraded_decisions",
            "Rate-limit decisions made by on_store_error because the store failed, by model and decision",
            metrics.degraded_decisions.clone(),
        );
        registry.register(
            "authz_ratelimit_store_errors",
            "Rate-limit store failures by kind (timeout, circuit_open, connection, server, protocol, config)",
            metrics.store_errors.clone(),
        );
        registry.register(
            "authz_ratelimit_store_latency_seconds",
            "Latency of rate-limit store calls, failures included",
            metrics.store_latency.clone(),
        );
        registry.register(
            "authz_ratelimit_store_degraded",
            "1 while the store's circuit breaker is open (checks follow on_store_error), else 0",
            metrics.degraded.clone(),
        );
        metrics
    }

    pub(crate) fn outcome(&self, model: &str, outcome: OutcomeLabel) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                model: model.to_owned(),
                outcome,
            })
            .inc();
    }

    pub(crate) fn degraded_decision(&self, model: &str, decision: DegradedDecision) {
        self.degraded_decisions
            .get_or_create(&DegradedLabels {
                model: model.to_owned(),
                decision,
            })
            .inc();
    }

    pub(crate) fn store_error(&self, kind: StoreErrorKind) {
        self.store_errors
            .get_or_create(&ErrorLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub(crate) fn store_latency(&self, seconds: f64) {
        self.store_latency.observe(seconds);
    }

    pub(crate) fn set_degraded(&self, degraded: bool) {
        self.degraded.set(i64::from(degraded));
    }
}
