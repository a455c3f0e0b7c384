//! The typed configuration file (TOML) and its validation.
//!
//! [`Config::load`] reads, parses and validates one file and reports *every* problem at once, each
//! with its field path (`models.threat-triage.allowed_roles[1]`). Relative paths in the file
//! (policy files, JWKS files) are resolved against the file's directory. Loading the Cedar policies
//! and keys happens in `runtime.rs`, which adds its own problems to the same list.
//!
//! Each section's types live with the code that uses them: `[authn]` in `crate::authn::config`,
//! `[rate_limit]` in `crate::ratelimit::config`, `[audit]` in `crate::audit::config`. This module
//! owns the file as a whole, `[server]`, `[request]`, `[policy]`, `[[principals]]` and
//! `[models]`, and the pieces every section shares: [`problem::ConfigProblem`] (every
//! validator's problem type) and [`duration`] (the one duration syntax).
//!
//! `config/authz.toml` in the repository is the documented demo configuration, and
//! `config/README.md` documents every field.

pub mod duration;
pub mod problem;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::authn::config::AuthnConfig;
pub use duration::parse_duration;
pub use problem::ConfigProblem;
use problem::{Problems, check_ident, check_roles};

/// Default gRPC (ext_authz + health) listen address; loopback so a dev run is not exposed.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:9001";
/// Default admin HTTP listen address (`/healthz`, `/readyz`, `/metrics`).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9002";
/// How often the config and policy files are checked for changes: cheap (a few `stat`s) and
/// quick enough that an operator sees a change land while still looking at the terminal.
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(2);
/// How long in-flight checks may take to finish after SIGTERM before the server stops.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// DESIGN: the access reason is capped at 500 bytes; longer is `malformed_request`.
pub const DEFAULT_MAX_REASON_BYTES: usize = 500;
/// Envoy's default `max_request_headers_kb` is 60 KiB; anything above cannot be a real request.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// The whole authz configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen addresses and server behaviour.
    #[serde(default)]
    pub server: ServerConfig,
    /// Request parsing rules.
    #[serde(default)]
    pub request: RequestConfig,
    /// Cedar schema and policy files.
    pub policy: PolicyConfig,
    /// Credential verification.
    #[serde(default)]
    pub authn: AuthnConfig,
    /// Known principals and their usual roles. Used only by `authz policy test` (default roles
    /// for a case that names none); `authz token` does not read them (pass `--roles`). At run time
    /// roles come only from the credential (token claim, API-key entry, mTLS mapping), never from
    /// this table.
    #[serde(default)]
    pub principals: Vec<PrincipalEntry>,
    /// Models by name. A model not listed here is `unknown_model`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// `[rate_limit]`: the store shared by every replica (Redis) or the in-process default.
    /// Store settings take effect at start; per-model limits also on reload.
    #[serde(default)]
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// `[audit]`: where and how durably decision records are written. Takes effect at start.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address (ext_authz and grpc.health.v1).
    #[serde(default = "default_grpc_addr")]
    pub grpc_addr: SocketAddr,
    /// Also serve gRPC on this Unix domain socket (e.g. `"/run/authz/authz.sock"`), for an
    /// Envoy on the same host: no TCP/IP stack between them (docs/benchmarks.md measures it). A
    /// stale socket file is replaced at start; who may connect is decided by the permissions of
    /// its directory. The TCP listener stays (health checks, other Envoys).
    #[serde(default)]
    pub grpc_unix_socket: Option<PathBuf>,
    /// Admin HTTP listen address.
    #[serde(default = "default_admin_addr")]
    pub admin_addr: SocketAddr,
    /// How often files are checked for changes (e.g. `"2s"`); `"0s"` disables polling (SIGHUP
    /// still reloads).
    #[serde(
        default = "default_reload_poll",
        deserialize_with = "duration::deserialize"
    )]
    pub reload_poll_interval: Duration,
    /// Grace period for in-flight checks on shutdown.
    #[serde(default = "default_drain", deserialize_with = "duration::deserialize")]
    pub drain_timeout: Duration,
}

impl ServerConfig {
    /// The longest Unix socket path the kernel accepts (`sun_path` holds 108 bytes with its NUL).
    pub const MAX_UNIX_SOCKET_PATH: usize = 107;

    fn validate(&self, p: &mut Problems) {
        if let Some(path) = &self.grpc_unix_socket {
            let len = path.as_os_str().len();
            if !path.is_absolute() || len > Self::MAX_UNIX_SOCKET_PATH {
                p.add(
                    "server.grpc_unix_socket",
                    format!(
                        "must be an absolute path of at most {} bytes (got {} bytes: {})",
                        Self::MAX_UNIX_SOCKET_PATH,
                        len,
                        path.display()
                    ),
                );
            }
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: default_grpc_addr(),
            grpc_unix_socket: None,
            admin_addr: default_admin_addr(),
            reload_poll_interval: DEFAULT_RELOAD_POLL,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// `[request]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Exact paths served without credentials (e.g. `/v2/health/ready`). Everything else needs
    /// credentials and a policy that permits it.
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Longest accepted `x-access-reason` in bytes.
    #[serde(default = "default_max_reason")]
    pub max_reason_bytes: usize,
    /// Largest accepted total request header size in bytes.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            public_paths: Vec::new(),
            max_reason_bytes: DEFAULT_MAX_REASON_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The Cedar schema (`.cedarschema`); policies are validated against it at load.
    pub schema: PathBuf,
    /// Cedar policy files, evaluated as one policy set.
    pub files: Vec<PathBuf>,
    /// A candidate policy file evaluated beside the active policies on every check, never
    /// deciding anything: where it disagrees, the audit record carries its verdict and
    /// `authz_policy_shadow_disagreements_total` counts it. Same schema, models and validation
    /// as `files`, reloaded with them; one that fails to load is logged and counted
    /// (`authz_policy_shadow_loads_total{result="failure"}`) and the shadow is off until it
    /// loads. See docs/policy-rollout.md.
    #[serde(default)]
    pub shadow: Option<PathBuf>,
}

/// A known principal (see [`Config::principals`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalEntry {
    /// Principal id (the JWT `sub`).
    pub id: String,
    /// Roles it is usually issued.
    pub roles: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// Model sensitivity, a Cedar attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Public-ish, test and benchmark models.
    Low,
    /// Normal business data.
    Standard,
    /// Restricted data.
    Restricted,
}

impl Sensitivity {
    /// The Cedar string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Low => "low",
            Sensitivity::Standard => "standard",
            Sensitivity::Restricted => "restricted",
        }
    }
}

/// `[models.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Roles whose members the shipped policy permits on this model.
    pub allowed_roles: Vec<String>,
    /// Whether an `x-access-reason` is required to run inference.
    #[serde(default)]
    pub requires_reason: bool,
    /// Data sensitivity.
    pub sensitivity: Sensitivity,
    /// Model groups (Cedar `ModelGroup` parents), for policies that address families of models.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Rate limit per (principal, model): GCRA `rate` per `period` with `burst`, per-role
    /// overrides and `on_store_error`. Required: a model without limits must say
    /// `unlimited = true`. See `ratelimit::config`.
    pub rate_limit: Option<crate::ratelimit::ModelRateLimit>,
}

/// All problems found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration problem(s) in {}:\n{}", .problems.len(), .file.display(),
    .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    /// The config file.
    pub file: PathBuf,
    /// Every problem found.
    pub problems: Vec<ConfigProblem>,
}

impl Config {
    /// Reads, parses and validates the file, resolving relative paths against its directory.
    ///
    /// # Errors
    /// [`ConfigErrors`] with every problem found (I/O, TOML syntax/type, or validation).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let err = |location: String, message: String| ConfigErrors {
            file: path.to_owned(),
            problems: vec![ConfigProblem::new(location, message)],
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            let loc = match e.span() {
                Some(span) => {
                    let line = text.as_bytes()[..span.start.min(text.len())]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    format!("{}:{line}", path.display())
                }
                None => path.display().to_string(),
            };
            err(loc, e.message().to_owned())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors {
                file: path.to_owned(),
                problems,
            })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.policy.schema);
        self.policy.files.iter_mut().for_each(abs);
        self.policy.shadow.iter_mut().for_each(abs);
        for i in &mut self.authn.issuers {
            if let Some(f) = &mut i.jwks_file {
                abs(f);
            }
        }
        abs(&mut self.audit.path);
        if let Some(checkpoint) = &mut self.audit.checkpoint {
            checkpoint.signing_key.iter_mut().for_each(abs);
            checkpoint.witness_file.iter_mut().for_each(abs);
        }
        if let Some(ca) = &mut self.rate_limit.redis_ca_file {
            abs(ca);
        }
    }

    /// Every file whose change should trigger a reload (besides the config file itself).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.policy.schema.clone()];
        v.extend(self.policy.files.iter().cloned());
        v.extend(self.policy.shadow.iter().cloned());
        v
    }

    /// Checks everything that can be checked without reading other files.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        self.validate_request(&mut p);
        self.server.validate(&mut p);
        if self.policy.files.is_empty() {
            p.add("policy.files", "at least one policy file is required");
        }
        self.authn.validate(&mut p);
        self.validate_principals(&mut p);
        self.validate_models(&mut p);
        p.extend(self.rate_limit.validate("rate_limit"));
        if let Err(problems) = self.audit.validate("audit") {
            p.extend(problems);
        }
        p.into_vec()
    }

    /// The problems of `principals`: ids, roles, duplicates.
    fn validate_principals(&self, p: &mut Problems) {
        for (i, pr) in self.principals.iter().enumerate() {
            check_ident(p, &format!("principals[{i}].id"), &pr.id);
            check_roles(p, &format!("principals[{i}].roles"), &pr.roles);
        }
        let mut seen = BTreeSet::new();
        for (i, pr) in self.principals.iter().enumerate() {
            if !seen.insert(&pr.id) {
                p.add(
                    format!("principals[{i}].id"),
                    format!("duplicate principal '{}'", pr.id),
                );
            }
        }
    }

    /// The problems of `models`: names, roles, groups and rate limits.
    fn validate_models(&self, p: &mut Problems) {
        for (name, m) in &self.models {
            let at = format!("models.{name}");
            if name.is_empty()
                || name.len() > crate::request::MAX_MODEL_NAME
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                || name == "."
                || name == ".."
            {
                p.add(&at, "model names must match [A-Za-z0-9._-]{1,128}");
            }
            if m.allowed_roles.is_empty() {
                p.add(
                    format!("{at}.allowed_roles"),
                    "empty: nobody could use this model",
                );
            }
            check_roles(p, &format!("{at}.allowed_roles"), &m.allowed_roles);
            check_roles(p, &format!("{at}.groups"), &m.groups);
            p.extend(crate::ratelimit::validate_model_limit(
                &format!("{at}.rate_limit"),
                m.rate_limit.as_ref(),
            ));
        }
    }

    fn validate_request(&self, p: &mut Problems) {
        for (i, path) in self.request.public_paths.iter().enumerate() {
            let at = format!("request.public_paths[{i}]");
            match crate::request::parse_path(path, &[]) {
                Err(e) => p.add(at, format!("'{path}' is not a canonical path: {e}")),
                Ok(crate::request::Route::Other) if !path.contains('?') => {}
                Ok(_) => p.add(
                    at,
                    format!("'{path}' addresses a model; models are never public"),
                ),
            }
        }
        if self.request.max_reason_bytes == 0 || self.request.max_reason_bytes > 4096 {
            p.add("request.max_reason_bytes", "must be between 1 and 4096");
        }
        if self.request.max_header_bytes < 1024 {
            p.add("request.max_header_bytes", "must be at least 1024");
        }
    }

    /// Roles configured for a known principal, if any.
    pub fn principal_roles(&self, id: &str) -> Option<&[String]> {
        self.principals
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.roles.as_slice())
    }
}

fn default_grpc_addr() -> SocketAddr {
    // A constant literal address: parsing cannot fail.
    DEFAULT_GRPC_ADDR
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9001)))
}
fn default_admin_addr() -> SocketAddr {
    DEFAULT_ADMIN_ADDR
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9002)))
}
fn default_reload_poll() -> Duration {
    DEFAULT_RELOAD_POLL
}
fn default_drain() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}
fn default_max_reason() -> usize {
    DEFAULT_MAX_REASON_BYTES
}
fn default_max_header() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("authz.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            r#"
[policy]
schema = "s.cedarschema"
files = []

[[authn.issuers]]
issuer = "https://idp"
audiences = []
algorithms = ["HS256", "none"]

[[authn.api_keys]]
principal = "svc"
sha256 = "NOT-HEX"

[[authn.mtls]]
spiffe_id = "http://x"
principal = "p"

[models."bad/name"]
allowed_roles = []
sensitivity = "low"
rate_limit = { rate = 1, period = "soon" }
"#,
        );
        let e = Config::load(&p).unwrap_err();
        let locs: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "policy.files",
            "authn.issuers[0].audiences",
            "authn.issuers[0]",
            "authn.issuers[0].algorithms[0]",
            "authn.issuers[0].algorithms[1]",
            "authn.api_keys[0].sha256",
            "authn.mtls[0].spiffe_id",
            "models.bad/name",
            "models.bad/name.allowed_roles",
            "models.bad/name.rate_limit.period",
        ] {
            assert!(locs.contains(&want), "missing {want} in {locs:?}");
        }
        // The rendered error lists every problem.
        assert!(e.to_string().contains("10 configuration problem(s)"), "{e}");
    }

    #[test]
    fn syntax_and_unknown_fields_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "[policy]\nschema = \"s\"\nfiles = [\"p\"]\nbogus = 1\n",
        );
        let e = Config::load(&p).unwrap_err();
        assert!(e.problems[0].message.contains("bogus"), "{e}");
        assert!(e.problems[0].path.ends_with(":4"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "[policy]\nschema = \"s.cedarschema\"\nfiles = [\"p.cedar\"]\n",
        );
        let c = Config::load(&p).unwrap();
        assert_eq!(c.policy.schema, dir.path().join("s.cedarschema"));
        assert_eq!(c.server.grpc_addr.port(), 9001);
        assert_eq!(c.server.admin_addr.port(), 9002);
    }

    #[test]
    fn public_paths_must_be_canonical_and_not_models() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "[request]\npublic_paths = [\"/v2/models/m/infer\", \"/v2//x\", \"/v2/health/live\"]\n\
             [policy]\nschema = \"s\"\nfiles = [\"p\"]\n",
        );
        let e = Config::load(&p).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
    }
}
