//! JSON Web Key Sets: one [`Jwks`] per configured issuer, loaded from a file, an HTTPS URL, or
//! the `jwks_uri` of the issuer's OIDC discovery document, refreshed in the background and, when a
//! token names an unknown `kid`, on demand at most once per `min_refresh_interval`.
//!
//! The current key set is swapped atomically (`ArcSwapOption`), so verification never waits for a
//! refresh. A failed refresh keeps the previous keys.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use super::config::IssuerConfig;
use crate::metrics::Metrics;

/// Largest JWKS or discovery document accepted: real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A local file, re-read on each refresh.
    File(PathBuf),
    /// An HTTP(S) URL.
    Url(String),
    /// OIDC discovery from the issuer URL.
    Discovery(String),
}

/// A verification key.
pub struct VerifyKey {
    /// `kid`, when the JWK has one.
    pub kid: Option<String>,
    /// `alg`, when the JWK pins one.
    pub alg: Option<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.key.family())
            .finish()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`.
    fn accepts(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP request failed (connect, timeout, TLS).
    #[error("fetching {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// A non-success HTTP status.
    #[error("fetching {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The document is over `MAX_DOCUMENT_BYTES`.
    #[error("{0}: document larger than 1 MiB")]
    TooLarge(String),
    /// The document is not valid JSON of the expected shape.
    #[error("{what}: {message}")]
    Invalid {
        /// Which document.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// No key in the set can verify signatures with an accepted algorithm.
    #[error("{0}: no usable signing keys")]
    NoUsableKeys(String),
}

impl JwksError {
    /// Whether retrying later may succeed (network trouble, server errors), as opposed to a
    /// document that is wrong and needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            JwksError::Io { .. } | JwksError::Http { .. } => true,
            JwksError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// The result of looking up a key for a token.
#[derive(Debug)]
pub enum KeyLookup {
    /// Keys were never loaded (start-up fetch failed): the decision is `unavailable`.
    NotLoaded,
    /// No key matches the `kid` (or, without `kid`, no single key matches the algorithm).
    NotFound,
    /// The key to verify with.
    Found(Arc<VerifyKey>),
}

/// One issuer's key set.
pub struct Jwks {
    issuer: String,
    source: JwksSource,
    /// The current keys; `None` until the first successful load.
    keys: ArcSwapOption<Vec<Arc<VerifyKey>>>,
    /// Serializes refreshes and records when the last on-demand one started, so an unknown-`kid`
    /// storm causes at most one fetch per `min_refresh_interval`.
    last_demand_refresh: tokio::sync::Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
    allowed: Vec<Algorithm>,
    /// Whether `http://` URLs are accepted (tests and local development only).
    allow_insecure_http: bool,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("issuer", &self.issuer)
            .field("source", &self.source)
            .finish()
    }
}

impl Jwks {
    /// Creates an empty key set for a validated issuer config; call [`Jwks::refresh`] to load it.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS backend initialisation).
    pub fn new(cfg: &IssuerConfig, metrics: Arc<Metrics>) -> Result<Self, JwksError> {
        let source = match (&cfg.jwks_file, &cfg.jwks_url) {
            (Some(f), _) => JwksSource::File(f.clone()),
            (None, Some(u)) => JwksSource::Url(u.clone()),
            (None, None) => JwksSource::Discovery(cfg.issuer.clone()),
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!cfg.allow_insecure_http)
            .build()
            .map_err(|e| JwksError::Http {
                url: cfg.issuer.clone(),
                message: e.to_string(),
            })?;
        Ok(Jwks {
            issuer: cfg.issuer.clone(),
            source,
            keys: ArcSwapOption::empty(),
            last_demand_refresh: tokio::sync::Mutex::new(None),
            min_refresh_interval: cfg.min_refresh_interval,
            allowed: cfg
                .algorithms
                .iter()
                .filter_map(|a| super::jwt::parse_algorithm(a))
                .collect(),
            allow_insecure_http: cfg.allow_insecure_http,
            http,
            metrics,
        })
    }

    /// Whether keys have been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.keys.load().is_some()
    }

    /// Finds the key for a token's `kid` and `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
        let guard = self.keys.load();
        let Some(keys) = guard.as_ref() else {
            return KeyLookup::NotLoaded;
        };
        let found = match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            None => {
                let mut usable = keys.iter().filter(|k| k.accepts(alg));
                match (usable.next(), usable.next()) {
                    (Some(k), None) => Some(k.clone()),
                    _ => None,
                }
            }
        };
        found.map_or(KeyLookup::NotFound, KeyLookup::Found)
    }

    /// Loads the keys now and swaps them in; the old keys stay on failure. Counted in metrics.
    ///
    /// # Errors
    /// [`JwksError`] when the source cannot be read or holds no usable key.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let result = self.load().await;
        self.metrics.jwks_refreshed(&self.issuer, result.is_ok());
        let keys = result?;
        let n = keys.len();
        self.keys.store(Some(Arc::new(keys)));
        Ok(n)
    }

    /// A refresh triggered by an unknown `kid`, at most once per `min_refresh_interval`.
    /// Returns whether a refresh ran and succeeded.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let mut last = self.last_demand_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "JWKS refresh for unknown kid failed");
                false
            }
        }
    }

    async fn load(&self) -> Result<Vec<Arc<VerifyKey>>, JwksError> {
        let (what, doc) = match &self.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::Io {
                        path: path.clone(),
                        source,
                    })?;
                if bytes.len() > MAX_DOCUMENT_BYTES {
                    return Err(JwksError::TooLarge(path.display().to_string()));
                }
                (path.display().to_string(), bytes)
            }
            JwksSource::Url(url) => (url.clone(), self.fetch(url).await?),
            JwksSource::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc = self.fetch(&url).await?;
                let jwks_uri = discovered_jwks_uri(issuer, &url, &doc)?;
                let scheme_ok = jwks_uri.starts_with("https://")
                    || (self.allow_insecure_http && jwks_uri.starts_with("http://"));
                if !scheme_ok {
                    return Err(JwksError::Invalid {
                        what: url,
                        message: format!("jwks_uri '{jwks_uri}' is not https"),
                    });
                }
                (jwks_uri.clone(), self.fetch(&jwks_uri).await?)
            }
        };
        parse_jwks(&what, &doc, &self.allowed)
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let http_err = |e: reqwest::Error| JwksError::Http {
            url: url.to_owned(),
            message: e.to_string(),
        };
        let mut resp = self.http.get(url).send().await.map_err(http_err)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(JwksError::TooLarge(url.to_owned()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Runs background refreshes every `interval` until the returned task is aborted. The first
    /// attempt happens immediately when keys are not yet loaded.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            // Retry quickly (but not in a tight loop) until the first load succeeds.
            let mut retry = Duration::from_millis(500);
            while !me.is_loaded() {
                if let Err(e) = me.refresh().await {
                    tracing::warn!(issuer = %me.issuer, error = %e, "JWKS load failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(interval);
                }
            }
            loop {
                tokio::time::sleep(interval).await;
                if let Err(e) = me.refresh().await {
                    tracing::warn!(issuer = %me.issuer, error = %e, "JWKS refresh failed; keeping previous keys");
                }
            }
        })
    }
}

fn discovered_jwks_uri(issuer: &str, url: &str, doc: &[u8]) -> Result<String, JwksError> {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let d: Discovery = serde_json::from_slice(doc).map_err(|e| JwksError::Invalid {
        what: url.to_owned(),
        message: e.to_string(),
    })?;
    // OIDC Discovery §4.3: the document's issuer must be exactly the one we asked about.
    if d.issuer != issuer {
        return Err(JwksError::Invalid {
            what: url.to_owned(),
            message: format!(
                "discovery document names issuer '{}', expected '{issuer}'",
                d.issuer
            ),
        });
    }
    Ok(d.jwks_uri)
}

/// Parses a JWKS document, keeping signature keys usable with one of `allowed`; keys of other
/// types (and symmetric `oct` keys, which are never accepted) are skipped.
///
/// # Errors
/// [`JwksError::Invalid`] for malformed JSON, [`JwksError::NoUsableKeys`] when nothing remains.
pub fn parse_jwks(
    what: &str,
    doc: &[u8],
    allowed: &[Algorithm],
) -> Result<Vec<Arc<VerifyKey>>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(doc).map_err(|e| JwksError::Invalid {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match &jwk.common.key_algorithm {
            Some(ka) => match Algorithm::from_str(&ka.to_string()) {
                Ok(a) if allowed.contains(&a) => Some(a),
                _ => continue,
            },
            None => None,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if key.family() == AlgorithmFamily::Hmac
            || !allowed.iter().any(|a| a.family() == key.family())
        {
            continue;
        }
        out.push(Arc::new(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        }));
    }
    if out.is_empty() {
        return Err(JwksError::NoUsableKeys(what.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","alg":"EdDSA"},
            {"kty":"weird"}
        ]}"#;
        let keys = parse_jwks("t", doc, &[Algorithm::EdDSA, Algorithm::RS256]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert!(parse_jwks("t", doc, &[Algorithm::RS256]).is_err());
        assert!(parse_jwks("t", b"{", &[Algorithm::EdDSA]).is_err());
    }

    #[test]
    fn discovery_issuer_must_match() {
        let doc = br#"{"issuer":"https://evil","jwks_uri":"https://evil/jwks"}"#;
        assert!(discovered_jwks_uri("https://idp", "u", doc).is_err());
        let doc = br#"{"issuer":"https://idp","jwks_uri":"https://idp/jwks"}"#;
        assert_eq!(
            discovered_jwks_uri("https://idp", "u", doc).unwrap(),
            "https://idp/jwks"
        );
    }
}
