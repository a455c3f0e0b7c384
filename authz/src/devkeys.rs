//! The development issuer: an Ed25519 (JWS `EdDSA`) key pair that `authz dev-init` writes to
//! `.dev/issuer-key.pem` (PKCS#8 PEM, mode 0600) with its public JWKS in `.dev/jwks.json`, and that
//! `authz token` signs dev tokens with. Ed25519 because keys are generated instantly, tokens are
//! small and verification is fast; production issuers may use any accepted algorithm.
//!
//! This is a convenience for local stacks and tests, not a token service.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// `iss` of dev tokens (and of the issuer in the demo config).
pub const DEV_ISSUER: &str = "https://issuer.authz.dev";
/// `aud` of dev tokens (and accepted by the demo config).
pub const DEV_AUDIENCE: &str = "inference-gateway";
/// Default key file, relative to the working directory (the repository root).
pub const DEFAULT_KEY_PATH: &str = ".dev/issuer-key.pem";

/// PKCS#8 v1 DER prefix of an Ed25519 private key (RFC 8410 §7); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// SubjectPublicKeyInfo DER prefix of an Ed25519 public key (RFC 8410 §4); the 32-byte key
/// follows.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Name of the audit checkpoint signing key `dev-init` writes beside the issuer key.
pub const CHECKPOINT_KEY_FILE: &str = "audit-checkpoint-key.pem";
/// Name of its public key (for `authz audit verify --public-key`).
pub const CHECKPOINT_PUBLIC_KEY_FILE: &str = "audit-checkpoint-key.pub.pem";

/// The DER body of a PEM (the base64 between the `-----` lines), if it decodes.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
}

fn strip_key(der: &[u8], prefix: &[u8]) -> Option<[u8; 32]> {
    der.strip_prefix(prefix)?.try_into().ok()
}

/// The 32-byte seed of an Ed25519 PKCS#8 private key PEM.
pub fn ed25519_seed_from_pem(pem: &str) -> Option<[u8; 32]> {
    strip_key(&pem_der(pem)?, &PKCS8_ED25519_PREFIX)
}

/// The 32-byte key of an Ed25519 SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn ed25519_public_from_pem(pem: &str) -> Option<[u8; 32]> {
    strip_key(&pem_der(pem)?, &SPKI_ED25519_PREFIX)
}

/// Problems with dev keys.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not an Ed25519 PKCS#8 PEM.
    #[error("{0}: not an Ed25519 PKCS#8 private key PEM (generate one with `authz dev-init`)")]
    BadKey(PathBuf),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// The demo config template could not be turned into a dev config.
    #[error("template {path}: {message}")]
    Template {
        /// The template.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevKeyError + '_ {
    move |source| DevKeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An Ed25519 signing key.
pub struct DevKey {
    seed: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevKey(kid={})", self.kid())
    }
}

impl DevKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    fn from_seed(seed: [u8; 32]) -> Self {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        DevKey { seed, public }
    }

    /// Reads a PKCS#8 PEM written by [`DevKey::to_pem`].
    ///
    /// # Errors
    /// I/O errors or [`DevKeyError::BadKey`].
    pub fn read(path: &Path) -> Result<Self, DevKeyError> {
        let pem = std::fs::read_to_string(path).map_err(io(path))?;
        ed25519_seed_from_pem(&pem)
            .map(Self::from_seed)
            .ok_or_else(|| DevKeyError::BadKey(path.to_owned()))
    }

    /// SubjectPublicKeyInfo PEM of the public key.
    pub fn to_public_pem(&self) -> String {
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&self.public);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    /// PKCS#8 PEM of the private key.
    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&self.seed);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    /// Key id: the first 16 hex digits of SHA-256 of the public key.
    pub fn kid(&self) -> String {
        crate::audit::checkpoint::key_id(&self.public)
    }

    /// The public JWKS document.
    pub fn jwks_json(&self) -> String {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public);
        serde_json::to_string_pretty(&serde_json::json!({
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid(), "alg": "EdDSA", "use": "sig"}]
        }))
        .unwrap_or_default()
    }

    /// Signs a token with these claims.
    ///
    /// # Errors
    /// [`DevKeyError::Sign`] if the signer rejects the key.
    pub fn mint(&self, claims: &serde_json::Value) -> Result<String, DevKeyError> {
        let key = jsonwebtoken::EncodingKey::from_ed_pem(self.to_pem().as_bytes())
            .map_err(|e| DevKeyError::Sign(e.to_string()))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid());
        jsonwebtoken::encode(&header, claims, &key).map_err(|e| DevKeyError::Sign(e.to_string()))
    }
}

/// Claims of a dev token: `iss`, `aud`, `sub`, `roles`, `iat`, `nbf`, `exp`.
pub fn dev_claims(
    sub: &str,
    roles: &[String],
    ttl: Duration,
    issuer: &str,
    audience: &str,
) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "roles": roles,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs(),
    })
}

/// What `dev-init` wrote.
#[derive(Debug)]
pub struct DevInit {
    /// The private key.
    pub key: PathBuf,
    /// The JWKS.
    pub jwks: PathBuf,
    /// The ready-to-run config.
    pub config: PathBuf,
    /// The audit checkpoint signing key (kept when it exists) and its public key.
    pub checkpoint_keys: (PathBuf, PathBuf),
    /// Whether a new key was generated (`false`: an existing key was kept).
    pub new_key: bool,
}

/// Writes the dev issuer key (kept when `out/issuer-key.pem` already holds a valid one, unless
/// `force`, so tokens minted earlier stay valid across restarts), its JWKS, and `authz.toml`
/// rendered from `template` with every path made absolute and the dev issuer's `jwks_file`
/// pointing at the JWKS.
///
/// # Errors
/// I/O errors, or a template that is not the expected shape.
pub fn dev_init(out: &Path, template: &Path, force: bool) -> Result<DevInit, DevKeyError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let out = out.canonicalize().map_err(io(out))?;
    let tmpl_text = std::fs::read_to_string(template).map_err(io(template))?;
    // A bare file name (`--template x.toml`) has the empty path as its parent: the current
    // directory, which canonicalize would not resolve.
    let tmpl_dir = template
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(io(template))?;
    let bad = |message: String| DevKeyError::Template {
        path: template.to_owned(),
        message,
    };
    let mut doc: toml::Table = toml::from_str(&tmpl_text).map_err(|e| bad(e.to_string()))?;
    let abs = |v: &mut toml::Value| {
        if let Some(s) = v.as_str() {
            let p = Path::new(s);
            if p.is_relative() {
                *v = toml::Value::String(tmpl_dir.join(p).display().to_string());
            }
        }
    };
    let policy = doc
        .get_mut("policy")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| bad("no [policy] table".into()))?;
    if let Some(v) = policy.get_mut("schema") {
        abs(v);
    }
    if let Some(files) = policy.get_mut("files").and_then(toml::Value::as_array_mut) {
        files.iter_mut().for_each(abs);
    }
    let jwks_path = out.join("jwks.json");
    let mut found = false;
    if let Some(issuers) = doc
        .get_mut("authn")
        .and_then(|a| a.get_mut("issuers"))
        .and_then(toml::Value::as_array_mut)
    {
        for iss in issuers.iter_mut().filter_map(toml::Value::as_table_mut) {
            if iss.get("issuer").and_then(toml::Value::as_str) == Some(DEV_ISSUER) {
                iss.insert(
                    "jwks_file".into(),
                    toml::Value::String(jwks_path.display().to_string()),
                );
                found = true;
            } else if let Some(v) = iss.get_mut("jwks_file") {
                abs(v);
            }
        }
    }
    if !found {
        return Err(bad(format!(
            "no [[authn.issuers]] with issuer = \"{DEV_ISSUER}\""
        )));
    }
    let checkpoint_keys = write_checkpoint_keys(&out, force)?;
    if let Some(checkpoint) = doc
        .get_mut("audit")
        .and_then(|a| a.get_mut("checkpoint"))
        .and_then(toml::Value::as_table_mut)
    {
        checkpoint.insert(
            "signing_key".into(),
            toml::Value::String(checkpoint_keys.0.display().to_string()),
        );
        if let Some(v) = checkpoint.get_mut("witness_file") {
            abs(v);
        }
    }
    let rendered = toml::to_string(&doc).map_err(|e| bad(e.to_string()))?;
    let key_path = out.join("issuer-key.pem");
    let existing = if force {
        None
    } else {
        DevKey::read(&key_path).ok()
    };
    let new_key = existing.is_none();
    let key = match existing {
        Some(k) => k,
        None => {
            let k = DevKey::generate();
            write_private(&key_path, k.to_pem().as_bytes())?;
            k
        }
    };
    std::fs::write(&jwks_path, key.jwks_json()).map_err(io(&jwks_path))?;
    let config_path = out.join("authz.toml");
    let header = format!(
        "# Generated by `authz dev-init` from {}; regenerate rather than edit.\n\n",
        template.display()
    );
    std::fs::write(&config_path, header + &rendered).map_err(io(&config_path))?;
    Ok(DevInit {
        key: key_path,
        jwks: jwks_path,
        config: config_path,
        checkpoint_keys,
        new_key,
    })
}

/// Writes the audit checkpoint key pair into `out` (the private key kept when it is valid and
/// not `force`d, so earlier checkpoints stay verifiable with the same public key).
fn write_checkpoint_keys(out: &Path, force: bool) -> Result<(PathBuf, PathBuf), DevKeyError> {
    let private = out.join(CHECKPOINT_KEY_FILE);
    let public = out.join(CHECKPOINT_PUBLIC_KEY_FILE);
    let existing = if force {
        None
    } else {
        DevKey::read(&private).ok()
    };
    let key = match existing {
        Some(key) => key,
        None => {
            let key = DevKey::generate();
            write_private(&private, key.to_pem().as_bytes())?;
            key
        }
    };
    std::fs::write(&public, key.to_public_pem()).map_err(io(&public))?;
    Ok((private, public))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DevKeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_tokens_verify() {
        let dir = tempfile::tempdir().unwrap();
        let k = DevKey::generate();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, k.to_pem()).unwrap();
        let back = DevKey::read(&p).unwrap();
        assert_eq!(back.kid(), k.kid());
        let token = back
            .mint(&dev_claims(
                "u",
                &["r".into()],
                Duration::from_secs(60),
                DEV_ISSUER,
                DEV_AUDIENCE,
            ))
            .unwrap();
        let keys = crate::authn::jwks::parse_jwks(
            "t",
            k.jwks_json().as_bytes(),
            &[jsonwebtoken::Algorithm::EdDSA],
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_audience(&[DEV_AUDIENCE]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &keys[0].key, &v).unwrap();
        assert_eq!(data.claims["sub"], "u");
        std::fs::write(
            &p,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(DevKey::read(&p), Err(DevKeyError::BadKey(_))));
    }
}
