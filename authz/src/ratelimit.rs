//! Rate limiting per (principal, model): GCRA over a pluggable store (DESIGN.md, step 4).
//!
//! # Public API (what the Check pipeline uses)
//!
//! ```text
//! // At start-up (inside the Tokio runtime), from the `[rate_limit]` section:
//! let limiter = RateLimiter::from_config(&config.rate_limit, &mut registry)?;
//! // Per configuration (start and every reload; `Runtime::limits` holds it), from each model's
//! // `rate_limit` table:
//! let limits = LimitTable::from_models("models", config.models.iter()
//!     .map(|(name, m)| (name.as_str(), m.rate_limit.as_ref())))?;        // Err: Vec<ConfigProblem>
//! // Per request, after authentication and policy, with the table of the configuration the
//! // request was decided with (so policy and limits change at the same instant on reload):
//! match limiter.check(&limits, &principal.id, &model, &principal.roles).await {
//!     RateLimitOutcome::Allowed(state) => /* OK + state.headers() as response headers */,
//!     RateLimitOutcome::Unlimited => /* OK, no headers */,
//!     RateLimitOutcome::Limited(state) => /* 429 `rate_limited` + state.headers() (Retry-After) */,
//!     RateLimitOutcome::StoreFailed { policy: OnStoreError::Allow, .. } => /* OK, degraded */,
//!     RateLimitOutcome::StoreFailed { policy: OnStoreError::Deny, .. } => /* 503 */,
//!     RateLimitOutcome::UnknownModel => /* deny: policy should have rejected it already */,
//! }
//! ```
//!
//! The limiter owns only what outlives a reload (the store, its connection, the breaker); the
//! limits belong to the configuration, so there is one table and it cannot go stale.
//!
//! [`RateLimiter::check`] never panics and never blocks longer than the store timeout (50 ms by
//! default) plus scheduling: every store call runs under a deadline and behind a circuit breaker.
//! [`RateLimiter::remaining`] (the catalog's `remaining`, `GET /v1/models`) reads a principal's
//! quota on a model without spending it, under the same deadline; it answers `None` rather than
//! an error when the store cannot say, and never calls a store whose breaker is open.
//! [`RateLimitOutcome::is_allowed`] and [`RateLimitOutcome::degraded`] summarize an outcome for
//! the audit record.
//!
//! # How the pieces fit
//!
//! - [`gcra`]: the arithmetic, pure and property-tested.
//! - [`store`]: the [`Store`] trait and classified [`StoreError`]s;
//!   [`memory::MemoryStore`] (in-process, the default) and [`redis::RedisStore`] (standalone or
//!   Cluster; the Lua script in [`scripts`], the key layout in [`keys`]).
//! - [`RateLimitOutcome`] and [`RateLimitState`] (in `outcome`): what a check answers.
//! - [`breaker`]: the circuit breaker; [`config`]: serde types, validation, role resolution;
//!   [`metrics`]: `authz_ratelimit_*` (full names: register into the root registry, not a
//!   prefixed sub-registry).
//!
//! # What is (not) guaranteed
//!
//! - With Redis, all replicas share one counter per (principal, model) and decisions are exact:
//!   the script is atomic and uses the Redis server's clock. With the in-process store each
//!   replica limits on its own (N replicas admit up to N × the limit).
//! - A Redis failover to a replica that had not yet received the latest writes forgets those
//!   admissions (the principal may get part of a burst again); a replica with a slower clock can
//!   only make limits stricter for at most the skew (stored times are clamped to `now + capacity`).
//! - While the store fails, each model's `on_store_error` decides (default `deny`, see
//!   [`config`]); those outcomes say so ([`RateLimitOutcome::degraded`]).

pub mod breaker;
pub mod clock;
pub mod config;
pub mod gcra;
pub mod keys;
pub mod memory;
pub mod metrics;
mod outcome;
pub mod redis;
pub mod scripts;
pub mod store;

pub use config::{
    Limit, ModelLimits, ModelRateLimit, OnStoreError, RateLimitConfig, RoleRateLimit,
    validate_model_limit,
};
pub use outcome::{RateLimitOutcome, RateLimitState};
pub use store::{Store, StoreError, StoreErrorKind};

use crate::config::ConfigProblem;
use breaker::{Admission, CircuitBreaker, Transition};
use clock::{Clock, MonotonicClock};
use gcra::{Decision, Gcra};
use memory::MemoryStore;
use metrics::{DegradedDecision, OutcomeLabel, RateLimitMetrics};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The validated limits of every configured model, by model name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitTable {
    models: HashMap<String, ModelLimits>,
}

impl LimitTable {
    /// A table from already validated per-model limits.
    pub fn new(models: impl IntoIterator<Item = (String, ModelLimits)>) -> Self {
        Self {
            models: models.into_iter().collect(),
        }
    }

    /// Validates every model's `rate_limit` table (`None` when the model has none, which is an
    /// error: every model must be limited or say `unlimited = true`). Paths in problems are
    /// `<prefix>.<model>.rate_limit.<field>`.
    ///
    /// # Errors
    /// Every problem in every model.
    pub fn from_models<'a>(
        prefix: &str,
        models: impl IntoIterator<Item = (&'a str, Option<&'a ModelRateLimit>)>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut table = HashMap::new();
        let mut problems = Vec::new();
        for (name, config) in models {
            match ModelLimits::from_config(&format!("{prefix}.{name}.rate_limit"), config) {
                Ok(limits) => {
                    table.insert(name.to_owned(), limits);
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if problems.is_empty() {
            Ok(Self { models: table })
        } else {
            Err(problems)
        }
    }

    /// The limits of `model`, if configured.
    pub fn get(&self, model: &str) -> Option<&ModelLimits> {
        self.models.get(model)
    }
}

/// Building a [`RateLimiter`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The `[rate_limit]` section is invalid.
    #[error("invalid rate-limit configuration: {}", crate::config::problem::join(.0))]
    Config(Vec<ConfigProblem>),
    /// The store could not be set up (no I/O happens at set-up, so this is a config issue too).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fault-handling settings of a [`RateLimiter`].
#[derive(Debug, Clone)]
pub struct LimiterOptions {
    /// Deadline of one store call.
    pub timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
    /// Prefix of store keys.
    pub key_prefix: String,
}

impl LimiterOptions {
    /// The options of a `[rate_limit]` section.
    pub fn from_config(config: &RateLimitConfig) -> Self {
        Self {
            timeout: config.timeout(),
            breaker_failures: config.breaker_failures,
            breaker_cooldown: Duration::from_millis(config.breaker_cooldown_ms),
            key_prefix: config.key_prefix.clone(),
        }
    }
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self::from_config(&RateLimitConfig::default())
    }
}

/// Decides rate limits; share one per process (it is `Send + Sync`; wrap it in an `Arc`).
#[derive(Debug)]
pub struct RateLimiter {
    store: Arc<dyn Store>,
    breaker: CircuitBreaker,
    options: LimiterOptions,
    metrics: RateLimitMetrics,
}

impl RateLimiter {
    /// Builds the limiter a `[rate_limit]` section describes: a Redis Cluster store when
    /// `redis_cluster_nodes` is set, a standalone Redis store when `redis_url` is, else the
    /// in-process store. Registers its metrics into `registry`. Must run inside a Tokio runtime;
    /// connects lazily, so a Redis that is down at start-up only makes checks degraded.
    ///
    /// # Errors
    /// [`RateLimitError::Config`] with every problem of the section, or
    /// [`RateLimitError::Store`] when the client library rejects the store settings.
    pub fn from_config(
        config: &RateLimitConfig,
        registry: &mut Registry,
    ) -> Result<Self, RateLimitError> {
        let problems = config.validate("rate_limit");
        if !problems.is_empty() {
            return Err(RateLimitError::Config(problems));
        }
        let ca = match &config.redis_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                RateLimitError::Config(vec![ConfigProblem::new(
                    "rate_limit.redis_ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )])
            })?),
            None => None,
        };
        let store: Arc<dyn Store> = if !config.redis_cluster_nodes.is_empty() {
            Arc::new(redis::RedisStore::cluster(
                &config.redis_cluster_nodes,
                ca.as_deref(),
                config.timeout(),
            )?)
        } else if let Some(url) = &config.redis_url {
            Arc::new(redis::RedisStore::standalone(
                url,
                ca.as_deref(),
                config.timeout(),
            )?)
        } else {
            Arc::new(MemoryStore::new(
                config.memory_max_keys,
                Arc::new(MonotonicClock::new()),
            ))
        };
        Ok(Self::new(
            store,
            LimiterOptions::from_config(config),
            registry,
        ))
    }

    /// A limiter over any store (tests use a [`MemoryStore`] with a manual clock).
    pub fn new(store: Arc<dyn Store>, options: LimiterOptions, registry: &mut Registry) -> Self {
        Self {
            store,
            breaker: CircuitBreaker::new(
                options.breaker_failures,
                options.breaker_cooldown,
                Arc::new(MonotonicClock::new()),
            ),
            options,
            metrics: RateLimitMetrics::register(registry),
        }
    }

    /// `memory`, `redis` or `redis_cluster`.
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Whether the circuit breaker is open (checks are following `on_store_error`).
    pub fn is_degraded(&self) -> bool {
        self.breaker.is_open()
    }

    /// Decides one request of `principal_id` (holding `roles`) on `model`, with the limits of
    /// `table`: the Check pipeline passes the table of the configuration it decided with, so a
    /// reload changes policy and limits at the same instant.
    ///
    /// Never panics; takes at most the store timeout (plus scheduling) however the store fails.
    pub async fn check(
        &self,
        table: &LimitTable,
        principal_id: &str,
        model: &str,
        roles: &[String],
    ) -> RateLimitOutcome {
        let Some(model_limits) = table.get(model) else {
            self.metrics.outcome("unknown", OutcomeLabel::unknown_model);
            return RateLimitOutcome::UnknownModel;
        };
        let limit = match model_limits.for_roles(roles) {
            Limit::Unlimited => {
                self.metrics.outcome(model, OutcomeLabel::unlimited);
                return RateLimitOutcome::Unlimited;
            }
            Limit::Limited(limit) => limit,
        };
        let key = self.key(model, principal_id);
        match self.call_store(&key, limit).await {
            Ok(decision) => {
                let state = RateLimitState::from_decision(limit, &decision);
                if decision.allowed {
                    self.metrics.outcome(model, OutcomeLabel::allowed);
                    RateLimitOutcome::Allowed(state)
                } else {
                    self.metrics.outcome(model, OutcomeLabel::limited);
                    RateLimitOutcome::Limited(state)
                }
            }
            Err(error) => self.store_failed(model, model_limits.on_store_error, &error),
        }
    }

    /// The requests `principal_id` (holding `roles`) could make on `model` right now under the
    /// limits of `table`: what the `RateLimit-Remaining` header of its last admitted request
    /// said, refilled by the time since (the full burst for a principal the store has not seen).
    /// Reads the same key [`RateLimiter::check`] decides on, with the same limit for the roles,
    /// and never consumes a request, creates a key or changes an expiry.
    ///
    /// `None` when there is no figure: the model is unknown or unlimited for these roles, the
    /// breaker is open (the store is not called), or the store failed or did not answer within
    /// the store timeout. A peek feeds neither the breaker nor the check metrics: listing the
    /// catalog does not change how checks are decided.
    pub async fn remaining(
        &self,
        table: &LimitTable,
        principal_id: &str,
        model: &str,
        roles: &[String],
    ) -> Option<u64> {
        let Limit::Limited(limit) = table.get(model)?.for_roles(roles) else {
            return None;
        };
        if self.breaker.is_open() {
            return None;
        }
        let key = self.key(model, principal_id);
        match self.within_timeout(self.store.peek(&key, limit)).await {
            Ok(remaining) => Some(remaining),
            Err(error) => {
                tracing::debug!(
                    model.name = model,
                    store.error = %error,
                    "rate-limit store could not be read; remaining quota unknown"
                );
                None
            }
        }
    }

    /// The store key of `principal_id` on `model`.
    fn key(&self, model: &str, principal_id: &str) -> String {
        keys::rate_limit_key(&self.options.key_prefix, model, principal_id)
    }

    /// `call` under the store deadline: [`StoreError::Timeout`] when it does not finish in time.
    async fn within_timeout<T>(
        &self,
        call: futures::future::BoxFuture<'_, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.options.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.options.timeout)))
    }

    /// The outcome when the store could not decide: the model's `on_store_error` does.
    fn store_failed(
        &self,
        model: &str,
        policy: OnStoreError,
        error: &StoreError,
    ) -> RateLimitOutcome {
        tracing::debug!(
            model.name = model,
            store.error = %error,
            store.transient = error.is_transient(),
            ratelimit.on_store_error = policy.as_str(),
            "rate-limit store failed; applying on_store_error"
        );
        let (outcome, decision) = match policy {
            OnStoreError::Allow => (OutcomeLabel::store_error_allowed, DegradedDecision::allow),
            OnStoreError::Deny => (OutcomeLabel::store_error_denied, DegradedDecision::deny),
        };
        self.metrics.outcome(model, outcome);
        self.metrics.degraded_decision(model, decision);
        RateLimitOutcome::StoreFailed {
            policy,
            error: error.kind(),
        }
    }

    /// One store call under the breaker and the deadline, with its metrics.
    async fn call_store(&self, key: &str, limit: Gcra) -> Result<Decision, StoreError> {
        if self.breaker.admit() == Admission::Reject {
            self.metrics.store_error(StoreErrorKind::CircuitOpen);
            return Err(StoreError::CircuitOpen);
        }
        let started = Instant::now();
        let result = self.within_timeout(self.store.check(key, limit)).await;
        self.metrics.store_latency(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                if self.breaker.on_success() == Some(Transition::Closed) {
                    tracing::info!(
                        store = self.store.name(),
                        "rate-limit store recovered; circuit closed"
                    );
                    self.metrics.set_degraded(false);
                }
            }
            Err(error) => {
                self.metrics.store_error(error.kind());
                if self.breaker.on_failure() == Some(Transition::Opened) {
                    tracing::warn!(
                        store = self.store.name(),
                        store.error = %error,
                        "rate-limit store failing; circuit opened, checks follow on_store_error"
                    );
                    self.metrics.set_degraded(true);
                }
            }
        }
        result
    }
}

/// A clock for the in-process store that reads real monotonic time; re-exported for callers
/// building a [`MemoryStore`] themselves.
pub fn default_clock() -> Arc<dyn Clock> {
    Arc::new(MonotonicClock::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clock::ManualClock;
    use prometheus_client::encoding::text::encode;

    fn table(text: &str) -> LimitTable {
        let models: std::collections::BTreeMap<String, ModelRateLimit> =
            toml::from_str(text).unwrap();
        LimitTable::from_models("models", models.iter().map(|(n, m)| (n.as_str(), Some(m))))
            .unwrap()
    }

    #[tokio::test]
    async fn reloaded_limits_apply_to_the_next_check_and_outcomes_are_counted_per_configured_model()
    {
        let clock = ManualClock::new(1);
        let store = Arc::new(MemoryStore::new(100, Arc::new(clock.clone())));
        let mut registry = Registry::default();
        let limiter = RateLimiter::new(store, LimiterOptions::default(), &mut registry);
        let limits = table("[m]\nrate = 1\nperiod = \"1h\"\nburst = 1");
        assert!(limiter.check(&limits, "p", "m", &[]).await.is_allowed());
        assert!(matches!(
            limiter.check(&limits, "p", "m", &[]).await,
            RateLimitOutcome::Limited(_)
        ));
        assert_eq!(
            limiter.check(&limits, "p", "evil\"label", &[]).await,
            RateLimitOutcome::UnknownModel
        );
        let reloaded = table("[m]\nrate = 1\nperiod = \"1h\"\nburst = 3");
        let state = *limiter
            .check(&reloaded, "p", "m", &[])
            .await
            .state()
            .unwrap();
        assert_eq!(
            (state.limit, state.remaining),
            (3, 1),
            "the stored TAT carries over"
        );
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "authz_ratelimit_outcomes_total{model=\"m\",outcome=\"allowed\"} 2",
            "authz_ratelimit_outcomes_total{model=\"m\",outcome=\"limited\"} 1",
            "authz_ratelimit_outcomes_total{model=\"unknown\",outcome=\"unknown_model\"} 1",
            "authz_ratelimit_store_degraded 0",
            "authz_ratelimit_store_latency_seconds_count 3",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("evil"), "labels only from configured names");
    }

    #[tokio::test]
    async fn remaining_peeks_the_key_a_check_decides_on_for_the_roles_limit_without_spending() {
        let clock = ManualClock::new(1);
        let store = Arc::new(MemoryStore::new(100, Arc::new(clock.clone())));
        let mut registry = Registry::default();
        let limiter = RateLimiter::new(store, LimiterOptions::default(), &mut registry);
        let limits = table(
            "[m]\nrate = 1\nperiod = \"1h\"\nburst = 4\n[m.roles.vip]\nrate = 1\nperiod = \"1h\"\nburst = 10\n[m.roles.staff]\nunlimited = true\n[open]\nunlimited = true",
        );
        let vip = ["vip".to_owned()];
        assert_eq!(limiter.remaining(&limits, "p", "m", &[]).await, Some(4));
        assert_eq!(limiter.remaining(&limits, "p", "m", &vip).await, Some(10));
        assert!(limiter.check(&limits, "p", "m", &[]).await.is_allowed());
        let said = limiter.check(&limits, "p", "m", &[]).await.state().copied();
        assert_eq!(said.map(|s| s.remaining), Some(2));
        for _ in 0..3 {
            assert_eq!(limiter.remaining(&limits, "p", "m", &[]).await, Some(2));
        }
        assert_eq!(
            limiter.remaining(&limits, "q", "m", &[]).await,
            Some(4),
            "per principal"
        );
        assert_eq!(
            limiter.remaining(&limits, "p", "m", &vip).await,
            Some(8),
            "same key, the role's limit: 2 of 10 spent"
        );
        let staff = ["staff".to_owned()];
        assert_eq!(limiter.remaining(&limits, "p", "m", &staff).await, None);
        assert_eq!(limiter.remaining(&limits, "p", "open", &[]).await, None);
        assert_eq!(limiter.remaining(&limits, "p", "nope", &[]).await, None);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("authz_ratelimit_store_latency_seconds_count 2"),
            "peeks are not checks:\n{text}"
        );
    }

    /// A store whose peeks never answer (`hang`) or fail, and whose checks fail; counts peeks.
    #[derive(Debug, Default)]
    struct Broken {
        hang: bool,
        peeks: std::sync::atomic::AtomicUsize,
    }

    impl Store for Broken {
        fn check<'a>(
            &'a self,
            _key: &'a str,
            _limit: Gcra,
        ) -> futures::future::BoxFuture<'a, Result<Decision, StoreError>> {
            Box::pin(async { Err(StoreError::Protocol("broken".into())) })
        }

        fn peek<'a>(
            &'a self,
            _key: &'a str,
            _limit: Gcra,
        ) -> futures::future::BoxFuture<'a, Result<u64, StoreError>> {
            self.peeks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let hang = self.hang;
            Box::pin(async move {
                if hang {
                    futures::future::pending::<()>().await;
                }
                Err(StoreError::Protocol("broken".into()))
            })
        }

        fn name(&self) -> &'static str {
            "broken"
        }
    }

    #[tokio::test]
    async fn remaining_is_none_when_the_store_fails_or_stalls_and_peeks_never_trip_the_breaker() {
        let limits = table("[m]\nrate = 1\nperiod = \"1h\"");
        let options = LimiterOptions {
            timeout: Duration::from_millis(20),
            breaker_failures: 1,
            ..LimiterOptions::default()
        };
        for hang in [false, true] {
            let store = Arc::new(Broken {
                hang,
                ..Broken::default()
            });
            let limiter = RateLimiter::new(
                Arc::clone(&store) as Arc<dyn Store>,
                options.clone(),
                &mut Registry::default(),
            );
            let started = Instant::now();
            assert_eq!(limiter.remaining(&limits, "p", "m", &[]).await, None);
            assert!(started.elapsed() < Duration::from_secs(1), "bounded");
            assert!(!limiter.is_degraded(), "a peek does not open the breaker");
            // A failed check opens it; then peeks do not call the store at all.
            assert!(!limiter.check(&limits, "p", "m", &[]).await.is_allowed());
            assert!(limiter.is_degraded());
            assert_eq!(limiter.remaining(&limits, "p", "m", &[]).await, None);
            let peeks = store.peeks.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(peeks, 1, "no store call while the breaker is open");
        }
    }
}
