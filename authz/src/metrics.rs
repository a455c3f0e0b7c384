//! Prometheus metrics (prometheus-client), exposed at the admin server's `/metrics`.
//!
//! Names follow `authz_<area>_<thing>_<unit>`. Labels come only from bounded sets: decision,
//! reason code (built-ins plus `@reason` annotations of loaded policies), configured model names
//! (anything else is `unknown`; no model at all is `none`), configured issuers, fixed results.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `authz_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// Stable reason code.
    pub reason: String,
    /// Configured model name, `unknown`, or `none`.
    pub model: String,
}

/// A single `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Outcome (`hit`/`miss`, `success`/`failure`).
    pub result: &'static str,
}

/// Labels of `authz_jwks_refresh_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    /// Configured issuer.
    pub issuer: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of `authz_policy_shadow_disagreements_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// The active policy's decision: `allow` or `deny`.
    pub active: &'static str,
    /// The shadow policy's decision: `allow` or `deny`.
    pub shadow: &'static str,
    /// Configured model name (a disagreement is only possible on one).
    pub model: String,
}

/// All authz metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    /// Decisions by decision, reason code and model.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Time to decide one check, in seconds.
    pub check_duration: Histogram,
    /// Verified-token cache lookups by result.
    pub token_cache: Family<ResultLabels, Counter>,
    /// JWKS loads/refreshes by issuer and result.
    pub jwks_refresh: Family<JwksLabels, Counter>,
    /// Config/policy reloads by result.
    pub config_reload: Family<ResultLabels, Counter>,
    /// Shadow policy loads by result.
    pub shadow_loads: Family<ResultLabels, Counter>,
    /// Checks where the shadow policy's reason code differs from the active policy's.
    pub shadow_disagreements: Family<ShadowLabels, Counter>,
    /// The registry; locked only while encoding `/metrics` (the families update lock-free).
    registry: Mutex<Registry>,
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Authorization decisions by decision, reason code and model",
            decisions.clone(),
        );
        // 5 µs .. ~80 ms: warm decisions are microseconds, cold JWKS fetches tens of ms.
        let check_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(5e-6, 2.0, 15),
        );
        registry.register_with_unit(
            "authz_check_duration",
            "Time to decide one ext_authz check",
            prometheus_client::registry::Unit::Seconds,
            check_duration.clone(),
        );
        let token_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "authz_token_cache_lookups",
            "Verified-token cache lookups by result (hit, miss)",
            token_cache.clone(),
        );
        let jwks_refresh = Family::<JwksLabels, Counter>::default();
        registry.register(
            "authz_jwks_refresh",
            "JWKS loads and refreshes by issuer and result (success, failure)",
            jwks_refresh.clone(),
        );
        let config_reload = Family::<ResultLabels, Counter>::default();
        registry.register(
            "authz_config_reloads",
            "Configuration and policy reloads by result (success, failure)",
            config_reload.clone(),
        );
        let shadow_loads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "authz_policy_shadow_loads",
            "Shadow policy loads by result (success, failure: the shadow is off)",
            shadow_loads.clone(),
        );
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "authz_policy_shadow_disagreements",
            "Checks where the shadow policy's verdict (decision or reason code) differs from the active policy's, by active decision, shadow decision and model",
            shadow_disagreements.clone(),
        );
        Metrics {
            shadow_loads,
            shadow_disagreements,
            decisions,
            check_duration,
            token_cache,
            jwks_refresh,
            config_reload,
            registry: Mutex::new(registry),
        }
    }

    /// Gives other modules (rate limiter, audit) a place to register their families.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut reg)
    }

    /// Renders the OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// Counts a token cache lookup.
    pub fn token_cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.token_cache
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a JWKS refresh.
    pub fn jwks_refreshed(&self, issuer: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_refresh
            .get_or_create(&JwksLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a shadow policy load.
    pub fn shadow_loaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.shadow_loads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn config_reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reload
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
