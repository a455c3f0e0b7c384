//! The typed configuration file (TOML) and its validation.
//!
//! [`Config::load`] reads, parses and validates one file and reports *every* problem at once, each
//! with its field path (`models.threat-triage.allowed_roles[1]`). Relative paths in the file
//! (policy files, JWKS files) are resolved against the file's directory. Loading the Cedar policies
//! and keys happens in `runtime.rs`, which adds its own problems to the same list.
//!
//! `config/authz.toml` in the repository is the documented demo configuration, and
//! `config/README.md` documents every field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
/// Real JWTs are well under 4 KiB; a cap keeps base64/JSON work per request bounded.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens cached (until expiry). Bounded: a full cache is cleared, never grown.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;
/// Clock-skew allowance for `exp`/`nbf`: small, so expired tokens stop working promptly.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Background JWKS refresh period: picks up key rotation within minutes.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Minimum gap between refreshes triggered by an unknown `kid`, so forged `kid`s cannot make us
/// hammer the identity provider.
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Timeout for one JWKS / discovery HTTP fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Known principals and their usual roles. Used by `authz token` (default roles for `--sub`)
    /// and `authz policy test` (default roles for a case). At run time roles come only from the
    /// credential (token claim, API-key entry, mTLS mapping), never from this table.
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
    /// Admin HTTP listen address.
    #[serde(default = "default_admin_addr")]
    pub admin_addr: SocketAddr,
    /// How often files are checked for changes (e.g. `"2s"`); `"0s"` disables polling (SIGHUP
    /// still reloads).
    #[serde(default = "default_reload_poll", deserialize_with = "de_duration")]
    pub reload_poll_interval: Duration,
    /// Grace period for in-flight checks on shutdown.
    #[serde(default = "default_drain", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: default_grpc_addr(),
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
}

/// `[authn]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthnConfig {
    /// Longest accepted bearer token in bytes.
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// How many verified tokens to cache (until their `exp`); `0` disables the cache.
    #[serde(default = "default_cache_entries")]
    pub token_cache_entries: usize,
    /// Trusted JWT issuers (`[[authn.issuers]]`).
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// API keys (`[[authn.api_keys]]`), stored only as SHA-256 hashes.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
    /// mTLS SPIFFE id mappings (`[[authn.mtls]]`).
    #[serde(default)]
    pub mtls: Vec<MtlsEntry>,
}

impl Default for AuthnConfig {
    fn default() -> Self {
        AuthnConfig {
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            token_cache_entries: DEFAULT_TOKEN_CACHE_ENTRIES,
            issuers: Vec::new(),
            api_keys: Vec::new(),
            mtls: Vec::new(),
        }
    }
}

/// One trusted JWT issuer. Exactly one key source: `jwks_file`, `jwks_url`, or `discovery = true`
/// (JWKS found through `{issuer}/.well-known/openid-configuration`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Expected `iss`, exactly.
    pub issuer: String,
    /// Accepted `aud` values (a token must name at least one).
    pub audiences: Vec<String>,
    /// A local JWKS file (re-read on refresh).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// An HTTPS JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find the JWKS URL through OIDC discovery from `issuer`.
    #[serde(default)]
    pub discovery: bool,
    /// Accepted algorithms: any of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim holding the principal id.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// Dotted path of the claim holding the roles array (`roles`, `groups`, `realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock-skew allowance for `exp` and `nbf`.
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
    /// Background JWKS refresh period.
    #[serde(default = "default_refresh", deserialize_with = "de_duration")]
    pub refresh_interval: Duration,
    /// Minimum time between refreshes triggered by an unknown `kid`.
    #[serde(default = "default_min_refresh", deserialize_with = "de_duration")]
    pub min_refresh_interval: Duration,
    /// Timeout of one HTTP fetch.
    #[serde(default = "default_fetch_timeout", deserialize_with = "de_duration")]
    pub fetch_timeout: Duration,
    /// Accept `http://` JWKS/discovery URLs. For tests and local development only.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// One API key. The key itself never appears in config, only its SHA-256.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Principal id the key authenticates.
    pub principal: String,
    /// Roles the key grants.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Lower-case hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    pub sha256: String,
}

impl fmt::Debug for ApiKeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyEntry")
            .field("principal", &self.principal)
            .field("roles", &self.roles)
            .field("sha256", &"<redacted>")
            .finish()
    }
}

/// One mTLS identity mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsEntry {
    /// The SPIFFE id Envoy reports as `source.principal` (`spiffe://trust-domain/path`).
    pub spiffe_id: String,
    /// Principal id.
    pub principal: String,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
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

/// One configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Field path (`models.x.allowed_roles`) or file location (`policies/gateway.cedar`).
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
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
            problems: vec![ConfigProblem { location, message }],
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
        for i in &mut self.authn.issuers {
            if let Some(f) = &mut i.jwks_file {
                abs(f);
            }
        }
        abs(&mut self.audit.path);
        if let Some(ca) = &mut self.rate_limit.redis_ca_file {
            abs(ca);
        }
    }

    /// Every file whose change should trigger a reload (besides the config file itself).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.policy.schema.clone()];
        v.extend(self.policy.files.iter().cloned());
        v
    }

    /// Checks everything that can be checked without reading other files.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        self.validate_request(&mut p);
        if self.policy.files.is_empty() {
            p.add("policy.files", "at least one policy file is required");
        }
        self.validate_authn(&mut p);
        for (i, pr) in self.principals.iter().enumerate() {
            check_ident(&mut p, &format!("principals[{i}].id"), &pr.id);
            check_roles(&mut p, &format!("principals[{i}].roles"), &pr.roles);
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
            check_roles(&mut p, &format!("{at}.allowed_roles"), &m.allowed_roles);
            check_roles(&mut p, &format!("{at}.groups"), &m.groups);
            for problem in crate::ratelimit::validate_model_limit(
                &format!("{at}.rate_limit"),
                m.rate_limit.as_ref(),
            ) {
                p.add(problem.path, problem.message);
            }
        }
        for problem in self.rate_limit.validate("rate_limit") {
            p.add(problem.path, problem.message);
        }
        if let Err(problems) = self.audit.validate("audit") {
            for problem in problems {
                p.add(problem.field, problem.message);
            }
        }
        p.0
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

    fn validate_authn(&self, p: &mut Problems) {
        let a = &self.authn;
        if a.max_token_bytes < 256 || a.max_token_bytes > 64 * 1024 {
            p.add("authn.max_token_bytes", "must be between 256 and 65536");
        }
        if a.token_cache_entries > 10_000_000 {
            p.add("authn.token_cache_entries", "must be at most 10000000");
        }
        let mut issuers = BTreeSet::new();
        for (i, iss) in a.issuers.iter().enumerate() {
            let at = format!("authn.issuers[{i}]");
            if iss.issuer.is_empty() {
                p.add(format!("{at}.issuer"), "must not be empty");
            }
            if !issuers.insert(&iss.issuer) {
                p.add(
                    format!("{at}.issuer"),
                    format!("duplicate issuer '{}'", iss.issuer),
                );
            }
            if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
                p.add(
                    format!("{at}.audiences"),
                    "at least one non-empty audience is required",
                );
            }
            let sources = usize::from(iss.jwks_file.is_some())
                + usize::from(iss.jwks_url.is_some())
                + usize::from(iss.discovery);
            if sources != 1 {
                p.add(
                    &at,
                    "exactly one of jwks_file, jwks_url or discovery = true is required",
                );
            }
            let check_url = |p: &mut Problems, field: &str, url: &str| {
                let https = url.starts_with("https://");
                let http = url.starts_with("http://");
                if !(https || (http && iss.allow_insecure_http)) {
                    p.add(
                        format!("{at}.{field}"),
                        format!("'{url}' must be https:// (http only with allow_insecure_http)"),
                    );
                }
            };
            if let Some(u) = &iss.jwks_url {
                check_url(p, "jwks_url", u);
            }
            if iss.discovery {
                check_url(p, "issuer", &iss.issuer);
            }
            if iss.algorithms.is_empty() {
                p.add(
                    format!("{at}.algorithms"),
                    "at least one algorithm is required",
                );
            }
            for (j, alg) in iss.algorithms.iter().enumerate() {
                if crate::authn::jwt::parse_algorithm(alg).is_none() {
                    p.add(
                        format!("{at}.algorithms[{j}]"),
                        format!(
                            "'{alg}' is not an accepted asymmetric algorithm \
                             (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                        ),
                    );
                }
            }
            if iss.principal_claim.is_empty() {
                p.add(format!("{at}.principal_claim"), "must not be empty");
            }
            if iss.roles_claim.is_empty() || iss.roles_claim.split('.').any(str::is_empty) {
                p.add(
                    format!("{at}.roles_claim"),
                    "must be a dotted claim path like realm_access.roles",
                );
            }
            if iss.leeway > Duration::from_secs(300) {
                p.add(format!("{at}.leeway"), "must be at most 5m");
            }
            if iss.refresh_interval < Duration::from_secs(1) {
                p.add(format!("{at}.refresh_interval"), "must be at least 1s");
            }
            if iss.fetch_timeout.is_zero() {
                p.add(format!("{at}.fetch_timeout"), "must be positive");
            }
        }
        let mut hashes = BTreeSet::new();
        for (i, k) in a.api_keys.iter().enumerate() {
            let at = format!("authn.api_keys[{i}]");
            check_ident(p, &format!("{at}.principal"), &k.principal);
            check_roles(p, &format!("{at}.roles"), &k.roles);
            let ok = k.sha256.len() == 64
                && k.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                p.add(
                    format!("{at}.sha256"),
                    "must be 64 lower-case hex characters (SHA-256)",
                );
            }
            if !hashes.insert(&k.sha256) {
                p.add(format!("{at}.sha256"), "duplicate key hash");
            }
        }
        let mut ids = BTreeSet::new();
        for (i, m) in a.mtls.iter().enumerate() {
            let at = format!("authn.mtls[{i}]");
            if let Err(e) = crate::authn::mtls::check_spiffe_id(&m.spiffe_id) {
                p.add(format!("{at}.spiffe_id"), e);
            }
            if !ids.insert(&m.spiffe_id) {
                p.add(format!("{at}.spiffe_id"), "duplicate SPIFFE id");
            }
            check_ident(p, &format!("{at}.principal"), &m.principal);
            check_roles(p, &format!("{at}.roles"), &m.roles);
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

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            location: location.into(),
            message: message.into(),
        });
    }
}

/// Principal and role ids: printable, no whitespace, bounded.
fn check_ident(p: &mut Problems, at: &str, s: &str) {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.add(
            at,
            format!("'{s}' must be 1-256 printable characters without whitespace"),
        );
    }
}

fn check_roles(p: &mut Problems, at: &str, roles: &[String]) {
    for (i, r) in roles.iter().enumerate() {
        check_ident(p, &format!("{at}[{i}]"), r);
    }
}

/// Parses durations like `500ms`, `30s`, `15m`, `1h`, `2d`.
///
/// # Errors
/// A message when the number or unit is not understood.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30s, 15m, 1h"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}': unit must be one of ms, s, m, h, d")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
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
fn default_max_token() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
fn default_cache_entries() -> usize {
    DEFAULT_TOKEN_CACHE_ENTRIES
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(String::from)
        .to_vec()
}
fn default_principal_claim() -> String {
    "sub".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn default_refresh() -> Duration {
    DEFAULT_JWKS_REFRESH
}
fn default_min_refresh() -> Duration {
    DEFAULT_JWKS_MIN_REFRESH
}
fn default_fetch_timeout() -> Duration {
    DEFAULT_FETCH_TIMEOUT
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
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1 hour").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
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
        let locs: Vec<&str> = e.problems.iter().map(|p| p.location.as_str()).collect();
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
        assert!(e.problems[0].location.ends_with(":4"), "{e}");
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
