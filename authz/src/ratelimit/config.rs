//! Configuration the authz config embeds: the store section (`[rate_limit]`) and the per-model
//! limit type (`[models.<name>.rate_limit]` in the authz config), with validation that reports
//! every problem with its field path.
//!
//! ```toml
//! [rate_limit]                       # every field optional; no redis_* = in-process store
//! redis_url = "redis://127.0.0.1:6379"   # or rediss://…, or redis_cluster_nodes = [...]
//! # redis_ca_file = "/etc/authz/redis-ca.pem"   # rediss only; default: system roots
//! timeout_ms = 50
//!
//! [models.resnet50.rate_limit]
//! rate = 100                         # requests per period, sustained
//! period = "60s"                     # ms, s, m, h or d
//! burst = 20                         # admitted at once from a fresh start (default: rate)
//! on_store_error = "deny"            # or "allow"
//! [models.resnet50.rate_limit.roles.premium]
//! rate = 1000
//! period = "60s"
//! burst = 100
//!
//! [models.healthcheck.rate_limit]
//! unlimited = true
//! ```
//!
//! The per-model limits (`[models.<name>.rate_limit]`) and why they resolve as they do live in
//! `limits`.

mod limits;

pub use limits::{
    Limit, ModelLimits, ModelRateLimit, OnStoreError, RoleRateLimit, validate_model_limit,
};

use super::keys::DEFAULT_KEY_PREFIX;
use crate::config::ConfigProblem;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Default store deadline per check: one loopback or same-zone Redis round trip takes well under a
/// millisecond, so 50 ms only ever fires when Redis is truly unwell, and bounds the latency a
/// dead Redis adds to a request.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;
// The issue's bound on the default deadline, checked at compile time.
const _: () = assert!(DEFAULT_TIMEOUT_MS <= 50);

/// Largest accepted `timeout_ms`: beyond a second the limiter would be the slow part of every check.
pub const MAX_TIMEOUT_MS: u64 = 1_000;
/// Consecutive failures that open the breaker: enough to ride out a single lost packet, few enough
/// that a dead Redis costs at most a handful of timed-out checks per cool-down.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Cool-down before a probe: short, so limiting resumes well within a second of Redis coming back
/// (one probe per cool-down is negligible load on a recovering Redis).
pub const DEFAULT_BREAKER_COOLDOWN_MS: u64 = 250;
/// Default key bound of the in-process store: ~100 bytes per key, so about 10 MiB.
pub const DEFAULT_MEMORY_MAX_KEYS: usize = 100_000;

/// The `[rate_limit]` section: where counters live and how store faults are handled.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// A single Redis server (`redis://` or `rediss://`). Mutually exclusive with
    /// `redis_cluster_nodes`. Neither set: the in-process store.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each).
    #[serde(default)]
    pub redis_cluster_nodes: Vec<String>,
    /// PEM file of the CA certificates that sign the Redis servers' TLS certificates (`rediss://`
    /// only). Unset: the system's trusted roots. Certificates are always verified.
    #[serde(default)]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Deadline of one store call in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive store failures that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe, in milliseconds.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// Bound on keys held by the in-process store.
    #[serde(default = "default_memory_max_keys")]
    pub memory_max_keys: usize,
    /// Prefix of every Redis key (lets environments share a Redis). No `{` or `}`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_breaker_failures() -> u32 {
    DEFAULT_BREAKER_FAILURES
}
fn default_breaker_cooldown_ms() -> u64 {
    DEFAULT_BREAKER_COOLDOWN_MS
}
fn default_memory_max_keys() -> usize {
    DEFAULT_MEMORY_MAX_KEYS
}
fn default_key_prefix() -> String {
    DEFAULT_KEY_PREFIX.to_owned()
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            redis_ca_file: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cooldown_ms: DEFAULT_BREAKER_COOLDOWN_MS,
            memory_max_keys: DEFAULT_MEMORY_MAX_KEYS,
            key_prefix: default_key_prefix(),
        }
    }
}

impl fmt::Debug for RateLimitConfig {
    // Redis URLs may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self
            .redis_cluster_nodes
            .iter()
            .map(|n| redact_url(n))
            .collect();
        f.debug_struct("RateLimitConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_cluster_nodes", &nodes)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown_ms", &self.breaker_cooldown_ms)
            .field("memory_max_keys", &self.memory_max_keys)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// Replaces the user-info part of a URL (`user:password@`) with `***@`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

impl RateLimitConfig {
    /// The per-check store deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Every problem in this section; `path` is where it sits in the file (e.g. `rate_limit`).
    pub fn validate(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = self.redis_problems(path);
        let at = |field: &str| format!("{path}.{field}");
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            problems.push(ConfigProblem::new(
                at("timeout_ms"),
                format!(
                    "must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                    self.timeout_ms
                ),
            ));
        }
        if !(1..=1_000).contains(&self.breaker_failures) {
            problems.push(ConfigProblem::new(
                at("breaker_failures"),
                format!("must be between 1 and 1000, got {}", self.breaker_failures),
            ));
        }
        if !(1..=60_000).contains(&self.breaker_cooldown_ms) {
            problems.push(ConfigProblem::new(
                at("breaker_cooldown_ms"),
                format!(
                    "must be between 1 and 60000, got {}",
                    self.breaker_cooldown_ms
                ),
            ));
        }
        if !(1..=100_000_000).contains(&self.memory_max_keys) {
            problems.push(ConfigProblem::new(
                at("memory_max_keys"),
                format!(
                    "must be between 1 and 100000000, got {}",
                    self.memory_max_keys
                ),
            ));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || self.key_prefix.contains(['{', '}'])
        {
            problems.push(ConfigProblem::new(
                at("key_prefix"),
                "must be 1 to 64 characters without `{` or `}` (braces are reserved for hash tags)",
            ));
        }
        problems
    }

    /// The problems of the Redis fields: URLs, cluster nodes, the CA file.
    fn redis_problems(&self, path: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let at = |field: &str| format!("{path}.{field}");
        if self.redis_url.is_some() && !self.redis_cluster_nodes.is_empty() {
            problems.push(ConfigProblem::new(
                at("redis_cluster_nodes"),
                "set either redis_url (one server) or redis_cluster_nodes (a cluster), not both",
            ));
        }
        if let Some(message) = self.redis_url.as_deref().and_then(check_redis_url) {
            problems.push(ConfigProblem::new(at("redis_url"), message));
        }
        for (i, node) in self.redis_cluster_nodes.iter().enumerate() {
            if let Some(message) = check_redis_url(node) {
                problems.push(ConfigProblem::new(
                    format!("{path}.redis_cluster_nodes[{i}]"),
                    message,
                ));
            }
        }
        if let Some(ca) = &self.redis_ca_file {
            let tls = self
                .redis_url
                .iter()
                .chain(&self.redis_cluster_nodes)
                .any(|u| u.starts_with("rediss://"));
            if !tls {
                problems.push(ConfigProblem::new(
                    at("redis_ca_file"),
                    "only used with rediss:// URLs, and none is configured",
                ));
            } else if let Err(e) = std::fs::metadata(ca) {
                problems.push(ConfigProblem::new(
                    at("redis_ca_file"),
                    format!("cannot read {}: {e}", ca.display()),
                ));
            }
        }
        problems
    }
}

fn check_redis_url(url: &str) -> Option<String> {
    let shown = redact_url(url);
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Some(format!("`{shown}` must start with redis:// or rediss://"));
    }
    redis::Client::open(url)
        .err()
        .map(|e| format!("`{shown}` is not a usable Redis URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        rate_limit: RateLimitConfig,
        models: BTreeMap<String, Model>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Model {
        rate_limit: Option<ModelRateLimit>,
    }

    fn problems(text: &str) -> Vec<String> {
        let file: File = toml::from_str(text).unwrap();
        let mut out: Vec<String> = file
            .rate_limit
            .validate("rate_limit")
            .iter()
            .map(ToString::to_string)
            .collect();
        for (name, model) in &file.models {
            let path = format!("models.{name}.rate_limit");
            out.extend(
                validate_model_limit(&path, model.rate_limit.as_ref())
                    .iter()
                    .map(ToString::to_string),
            );
        }
        out
    }

    #[test]
    fn a_good_file_has_no_problems_and_defaults_are_documented_values() {
        let text = r#"
            [rate_limit]
            redis_url = "redis://user:secret@127.0.0.1:6379/0"
            [models.a.rate_limit]
            rate = 100
            period = "60s"
            burst = 20
            on_store_error = "allow"
            [models.a.rate_limit.roles.premium]
            rate = 1000
            period = "1m"
            [models.b.rate_limit]
            unlimited = true
        "#;
        assert_eq!(problems(text), Vec::<String>::new());
        let file: File = toml::from_str(text).unwrap();
        assert_eq!(file.rate_limit.timeout_ms, DEFAULT_TIMEOUT_MS);
        let debug = format!("{:?}", file.rate_limit);
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("redis://***@127.0.0.1:6379/0"), "{debug}");
        let a = ModelLimits::from_config("a", file.models["a"].rate_limit.as_ref()).unwrap();
        assert_eq!(a.on_store_error, OnStoreError::Allow);
        let Limit::Limited(premium) = a.roles["premium"] else {
            panic!()
        };
        assert_eq!(premium.burst(), 1000, "burst defaults to rate");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            [rate_limit]
            redis_url = "http://x"
            redis_ca_file = "/nonexistent/ca.pem"
            redis_cluster_nodes = ["redis://127.0.0.1:1", "tcp://y"]
            timeout_ms = 0
            breaker_failures = 0
            breaker_cooldown_ms = 0
            memory_max_keys = 0
            key_prefix = "a{b}"
            [models.nolimit]
            [models.nothing.rate_limit]
            [models.both.rate_limit]
            unlimited = true
            rate = 5
            [models.bad.rate_limit]
            rate = 0
            period = "10 parsecs"
            burst = 0
            [models.bad.rate_limit.roles.r]
            period = "1s"
            [models.huge.rate_limit]
            rate = 1
            period = "3650d"
            burst = 10
        "#;
        let got = problems(text);
        let expected_paths = [
            "rate_limit.redis_cluster_nodes:",
            "rate_limit.redis_url:",
            "rate_limit.redis_cluster_nodes[1]:",
            "rate_limit.redis_ca_file:",
            "rate_limit.timeout_ms:",
            "rate_limit.breaker_failures:",
            "rate_limit.breaker_cooldown_ms:",
            "rate_limit.memory_max_keys:",
            "rate_limit.key_prefix:",
            "models.bad.rate_limit.period:",
            "models.bad.rate_limit.roles.r.rate:",
            "models.both.rate_limit.unlimited:",
            "models.huge.rate_limit.burst:",
            "models.nolimit.rate_limit:",
            "models.nothing.rate_limit.rate:",
            "models.nothing.rate_limit.period:",
        ];
        for path in expected_paths {
            assert!(
                got.iter().any(|p| p.starts_with(path)),
                "no problem at {path} in {got:#?}"
            );
        }
        assert_eq!(got.len(), expected_paths.len(), "{got:#?}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            toml::from_str::<ModelRateLimit>("rate = 1\nperiod = \"1s\"\nbrust = 3").unwrap_err();
        assert!(err.to_string().contains("brust"), "{err}");
    }
}
