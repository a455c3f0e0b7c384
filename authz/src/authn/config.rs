//! The `[authn]` section: trusted JWT issuers, API keys (as SHA-256 hashes) and mTLS identity
//! mappings, with their defaults and validation. The verifiers in the sibling modules are built
//! from these types; `crate::config` embeds [`AuthnConfig`] as its `authn` field.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;
use crate::config::problem::{Problems, check_ident, check_roles};

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
    #[serde(default = "default_leeway", deserialize_with = "duration::deserialize")]
    pub leeway: Duration,
    /// Background JWKS refresh period.
    #[serde(
        default = "default_refresh",
        deserialize_with = "duration::deserialize"
    )]
    pub refresh_interval: Duration,
    /// Minimum time between refreshes triggered by an unknown `kid`.
    #[serde(
        default = "default_min_refresh",
        deserialize_with = "duration::deserialize"
    )]
    pub min_refresh_interval: Duration,
    /// Timeout of one HTTP fetch.
    #[serde(
        default = "default_fetch_timeout",
        deserialize_with = "duration::deserialize"
    )]
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

impl AuthnConfig {
    /// Adds every problem of the `[authn]` section to `p` (paths start with `authn.`).
    pub fn validate(&self, p: &mut Problems) {
        let a = self;
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
            iss.validate_source(&at, p);
            iss.validate_token_rules(&at, p);
        }
        self.validate_api_keys(p);
        self.validate_mtls(p);
    }

    /// The problems of `api_keys`.
    fn validate_api_keys(&self, p: &mut Problems) {
        let mut hashes = BTreeSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
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
    }

    /// The problems of `mtls`.
    fn validate_mtls(&self, p: &mut Problems) {
        let mut ids = BTreeSet::new();
        for (i, m) in self.mtls.iter().enumerate() {
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
}

impl IssuerConfig {
    /// The problems of its audiences and where its keys come from, at `at`.
    fn validate_source(&self, at: &str, p: &mut Problems) {
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            p.add(
                format!("{at}.audiences"),
                "at least one non-empty audience is required",
            );
        }
        let sources = usize::from(self.jwks_file.is_some())
            + usize::from(self.jwks_url.is_some())
            + usize::from(self.discovery);
        if sources != 1 {
            p.add(
                at,
                "exactly one of jwks_file, jwks_url or discovery = true is required",
            );
        }
        let check_url = |p: &mut Problems, field: &str, url: &str| {
            let https = url.starts_with("https://");
            let http = url.starts_with("http://");
            if !(https || (http && self.allow_insecure_http)) {
                p.add(
                    format!("{at}.{field}"),
                    format!("'{url}' must be https:// (http only with allow_insecure_http)"),
                );
            }
        };
        if let Some(u) = &self.jwks_url {
            check_url(p, "jwks_url", u);
        }
        if self.discovery {
            check_url(p, "issuer", &self.issuer);
        }
    }

    /// The problems of how its tokens are checked and read, at `at`.
    fn validate_token_rules(&self, at: &str, p: &mut Problems) {
        if self.algorithms.is_empty() {
            p.add(
                format!("{at}.algorithms"),
                "at least one algorithm is required",
            );
        }
        for (j, alg) in self.algorithms.iter().enumerate() {
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
        if self.principal_claim.is_empty() {
            p.add(format!("{at}.principal_claim"), "must not be empty");
        }
        if self.roles_claim.is_empty() || self.roles_claim.split('.').any(str::is_empty) {
            p.add(
                format!("{at}.roles_claim"),
                "must be a dotted claim path like realm_access.roles",
            );
        }
        if self.leeway > Duration::from_secs(300) {
            p.add(format!("{at}.leeway"), "must be at most 5m");
        }
        if self.refresh_interval < Duration::from_secs(1) {
            p.add(format!("{at}.refresh_interval"), "must be at least 1s");
        }
        if self.fetch_timeout.is_zero() {
            p.add(format!("{at}.fetch_timeout"), "must be positive");
        }
    }
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
