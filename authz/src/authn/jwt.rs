//! JWT bearer tokens: which issuer, which key, which algorithm, and what the claims say.
//!
//! A token is accepted only when: it is at most `max_token_bytes`; its `alg` is an asymmetric
//! algorithm on the issuer's allow-list (so `none` and `HS*` are never accepted, and an `HS256`
//! token "signed" with an RSA public key is rejected before any key is touched); its `iss` is a
//! configured issuer; the key found by `kid` belongs to the algorithm's family; the signature
//! verifies; `exp` is present and not past, `nbf` (if present) not in the future (both with the
//! issuer's leeway); `aud` names a configured audience. Verified tokens are cached until `exp`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::AuthnError;
use super::config::IssuerConfig;
use super::jwks::{Jwks, KeyLookup};
use crate::decision::{AuthMethod, Principal};
use crate::metrics::Metrics;

/// Most roles taken from one token: more is a misconfigured or hostile token.
const MAX_ROLES: usize = 64;
/// Longest principal id or role name taken from a token.
const MAX_CLAIM_STRING: usize = 256;

/// Maps a configured algorithm name to an accepted asymmetric [`Algorithm`]; `None` for `none`,
/// `HS*` and anything unknown.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    let alg = Algorithm::from_str(name).ok()?;
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512
        | Algorithm::ES256
        | Algorithm::ES384
        | Algorithm::EdDSA => Some(alg),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
    }
}

/// One trusted issuer.
#[derive(Debug)]
pub struct Issuer {
    /// Validated config.
    pub config: IssuerConfig,
    /// Its keys.
    pub jwks: Arc<Jwks>,
    /// Prepared validation per accepted algorithm.
    validations: HashMap<Algorithm, Validation>,
}

impl Issuer {
    /// Prepares an issuer from validated config.
    pub fn new(config: IssuerConfig, jwks: Arc<Jwks>) -> Self {
        let validations = config
            .algorithms
            .iter()
            .filter_map(|a| parse_algorithm(a))
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.leeway = config.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_issuer(&[config.issuer.as_str()]);
                v.set_audience(&config.audiences);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, v)
            })
            .collect();
        Issuer {
            config,
            jwks,
            validations,
        }
    }
}

#[derive(Clone)]
struct Cached {
    principal: Principal,
    exp: u64,
}

/// Verified tokens by their exact text, until `exp`. Bounded: when full, expired entries are
/// dropped, and if it is still full it is cleared (a cheap, allocation-free bound).
struct TokenCache {
    capacity: usize,
    /// Read by every token check, written on a miss; never held across an await.
    entries: RwLock<HashMap<Box<str>, Cached>>,
}

impl TokenCache {
    fn get(&self, token: &str, now: u64) -> Option<Principal> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(token)
            .filter(|c| c.exp > now)
            .map(|c| c.principal.clone())
    }

    fn put(&self, token: &str, entry: Cached, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity {
            map.retain(|_, c| c.exp > now);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(token.into(), entry);
    }
}

/// Verifies bearer tokens against the configured issuers.
pub struct JwtVerifier {
    issuers: HashMap<String, Issuer>,
    cache: TokenCache,
    max_token_bytes: usize,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuers.keys())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn invalid(msg: impl Into<String>) -> AuthnError {
    AuthnError::InvalidToken(msg.into())
}

impl JwtVerifier {
    /// Builds a verifier over prepared issuers.
    pub fn new(
        issuers: Vec<Issuer>,
        max_token_bytes: usize,
        cache_entries: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        super::crypto::install();
        JwtVerifier {
            issuers: issuers
                .into_iter()
                .map(|i| (i.config.issuer.clone(), i))
                .collect(),
            cache: TokenCache {
                capacity: cache_entries,
                entries: RwLock::new(HashMap::new()),
            },
            max_token_bytes,
            metrics,
        }
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.values()
    }

    /// Verifies one token and returns its principal.
    ///
    /// # Errors
    /// [`AuthnError::InvalidToken`] for anything wrong with the token,
    /// [`AuthnError::KeysUnavailable`] when the issuer's keys were never loaded.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthnError> {
        if token.len() > self.max_token_bytes {
            return Err(invalid(format!(
                "token longer than {} bytes",
                self.max_token_bytes
            )));
        }
        let now = now_secs();
        if let Some(p) = self.cache.get(token, now) {
            self.metrics.token_cache_lookup(true);
            return Ok(p);
        }
        self.metrics.token_cache_lookup(false);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("malformed token header or unsupported algorithm"))?;
        let iss = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .get(&iss)
            .ok_or_else(|| invalid("untrusted issuer"))?;
        let validation = issuer
            .validations
            .get(&header.alg)
            .ok_or_else(|| invalid(format!("algorithm {:?} not accepted", header.alg)))?;
        let kid = header.kid.as_deref();
        let key = match issuer.jwks.find(kid, header.alg) {
            KeyLookup::Found(k) => k,
            KeyLookup::NotLoaded => return Err(AuthnError::KeysUnavailable(iss)),
            KeyLookup::NotFound => {
                // Maybe the issuer rotated keys: refresh (rate-limited) and look again.
                issuer.jwks.refresh_for_unknown_kid().await;
                match issuer.jwks.find(kid, header.alg) {
                    KeyLookup::Found(k) => k,
                    _ => return Err(invalid("unknown signing key (kid)")),
                }
            }
        };
        if key.key.family() != header.alg.family() || key.alg.is_some_and(|a| a != header.alg) {
            return Err(invalid("algorithm does not match the key"));
        }
        let data = jsonwebtoken::decode::<Value>(token, &key.key, validation).map_err(|e| {
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_owned(),
                ErrorKind::ImmatureSignature => "token not yet valid (nbf)".to_owned(),
                ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
                ErrorKind::InvalidAudience => "wrong audience".to_owned(),
                ErrorKind::InvalidSignature => "bad signature".to_owned(),
                ErrorKind::InvalidAlgorithm => "algorithm does not match the key".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("missing required claim '{c}'"),
                _ => "malformed token".to_owned(),
            })
        })?;
        let principal = principal_from_claims(&data.claims, &issuer.config)?;
        let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        self.cache.put(
            token,
            Cached {
                principal: principal.clone(),
                exp,
            },
            now,
        );
        Ok(principal)
    }
}

/// Reads `iss` from the (not yet verified) payload, only to pick the issuer whose keys verify it.
fn unverified_issuer(token: &str) -> Result<String, AuthnError> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS (three parts)"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| invalid("payload is not base64url"))?;
    // serde_json bounds recursion (128 levels), so deeply nested claims fail here cleanly.
    let iss: Iss =
        serde_json::from_slice(&bytes).map_err(|_| invalid("payload is not a JSON object"))?;
    iss.iss
        .ok_or_else(|| invalid("missing required claim 'iss'"))
}

/// Extracts the principal id and roles from verified claims.
fn principal_from_claims(claims: &Value, cfg: &IssuerConfig) -> Result<Principal, AuthnError> {
    let id = claims
        .get(&cfg.principal_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_CLAIM_STRING)
        .ok_or_else(|| {
            invalid(format!(
                "missing or invalid '{}' claim",
                cfg.principal_claim
            ))
        })?;
    let mut node = Some(claims);
    for part in cfg.roles_claim.split('.') {
        node = node.and_then(|n| n.get(part));
    }
    // A token without the roles claim has no roles (policy then decides: role_not_allowed);
    // a roles claim of the wrong shape is a broken token.
    let roles = match node {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_ROLES {
                return Err(invalid(format!("more than {MAX_ROLES} roles")));
            }
            items
                .iter()
                .map(|r| {
                    r.as_str()
                        .filter(|s| !s.is_empty() && s.len() <= MAX_CLAIM_STRING)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            invalid(format!("'{}' must be an array of strings", cfg.roles_claim))
                        })
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(invalid(format!(
                "'{}' must be an array of strings",
                cfg.roles_claim
            )));
        }
    };
    Ok(Principal {
        id: id.to_owned(),
        auth_method: AuthMethod::Jwt,
        roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        assert_eq!(parse_algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(parse_algorithm("EdDSA"), Some(Algorithm::EdDSA));
        assert_eq!(parse_algorithm("HS256"), None);
        assert_eq!(parse_algorithm("none"), None);
        assert_eq!(parse_algorithm("rs256"), None);
    }

    fn cfg(roles_claim: &str) -> IssuerConfig {
        toml::from_str(&format!(
            "issuer = \"i\"\naudiences = [\"a\"]\njwks_file = \"f\"\nroles_claim = \"{roles_claim}\""
        ))
        .unwrap()
    }

    #[test]
    fn roles_come_from_a_claim_path() {
        let claims =
            serde_json::json!({"sub": "u", "realm_access": {"roles": ["a", "b"]}, "groups": "x"});
        let p = principal_from_claims(&claims, &cfg("realm_access.roles")).unwrap();
        assert_eq!(p.roles, vec!["a", "b"]);
        assert!(principal_from_claims(&claims, &cfg("groups")).is_err());
        assert!(
            principal_from_claims(&claims, &cfg("roles"))
                .unwrap()
                .roles
                .is_empty()
        );
        let bad = serde_json::json!({"sub": "u", "roles": [1, 2]});
        assert!(principal_from_claims(&bad, &cfg("roles")).is_err());
        let nosub = serde_json::json!({"roles": []});
        assert!(principal_from_claims(&nosub, &cfg("roles")).is_err());
    }

    #[test]
    fn garbage_payloads_are_rejected() {
        assert!(unverified_issuer("a.b").is_err());
        assert!(unverified_issuer("a.!!!.c").is_err());
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let b64 =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"x\":{nested}}}"));
        assert!(unverified_issuer(&format!("e30.{b64}.sig")).is_err());
    }
}
