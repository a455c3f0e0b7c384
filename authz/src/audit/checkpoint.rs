//! Signed checkpoints: a line in the chain, signed with Ed25519, that states the chain's state
//! (replica, file, seq, head hash, time, key id), so that a copy kept elsewhere (a *witness*)
//! proves later that the chain held exactly this prefix.
//!
//! A checkpoint line is an ordinary chain line: its `prev_hash` is the hash of the line before
//! it (the head it attests) and its own `hash` is computed like every other line's. The
//! signature covers the line's canonical encoding without `hash` and `signature`, prefixed by
//! [`SIGNING_CONTEXT`], so it commits to `replica`, `file_seq`, `seq`, `prev_hash`, `time` and
//! `key_id`. Because the line is in the chain, the witness's copy and the chain's line have the
//! same `hash`: a verifier compares them by `(seq, hash)`.
//!
//! Keys are PKCS#8 PEM (private, as `authz dev-init` writes them) and SubjectPublicKeyInfo PEM
//! (public); the key id is the first 16 hex digits of SHA-256 of the raw public key, the same
//! rule as the dev issuer's `kid`.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chain;
use crate::devkeys;

/// Prefix of every signed message: a signature over a checkpoint can never be mistaken for a
/// signature over anything else (a token, another version of the format).
pub const SIGNING_CONTEXT: &[u8] = b"authz audit checkpoint v2\n";

/// A signed checkpoint line (`"kind": "checkpoint"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    /// Schema version (2).
    pub v: u32,
    /// Always [`super::record::KIND_CHECKPOINT`].
    pub kind: String,
    /// Position of this line in the chain; it attests the chain up to `seq - 1`.
    pub seq: u64,
    /// When it was signed.
    pub time: String,
    /// The replica whose chain this is.
    pub replica: String,
    /// The file it was written into.
    pub file_seq: u64,
    /// Id of the signing key (first 16 hex digits of SHA-256 of the public key).
    pub key_id: String,
    /// Ed25519 signature, lowercase hex, over [`SIGNING_CONTEXT`] and the canonical encoding of
    /// this line without `hash` and `signature`.
    pub signature: String,
    /// Hash of the line at `seq - 1`: the head of the chain this checkpoint attests.
    pub prev_hash: String,
    /// This line's hash, as for every chain line.
    pub hash: String,
}

/// Why a checkpoint's signature does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No public key with this id was given.
    #[error("signed with key id {0}, which is not among the public keys given")]
    UnknownKey(String),
    /// The signature does not verify under the named key.
    #[error("the signature does not verify under key id {0}: forged or altered")]
    Invalid(String),
}

/// The message a checkpoint's signature covers.
fn signed_message(value: &Value) -> Vec<u8> {
    let mut message = SIGNING_CONTEXT.to_vec();
    chain::encode_skipping(value, &["hash", "signature"], &mut message);
    message
}

/// Key id of a raw Ed25519 public key.
pub fn key_id(public: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(public)[..8])
}

/// The signing side, held by the writer thread.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointSigner(key_id={})", self.key_id)
    }
}

impl CheckpointSigner {
    /// A signer for a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// A message when the PEM is not an Ed25519 PKCS#8 private key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let seed = devkeys::ed25519_seed_from_pem(pem)
            .ok_or("not an Ed25519 PKCS#8 private key PEM (make one with `authz dev-init`)")?;
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(&key.verifying_key().to_bytes());
        Ok(CheckpointSigner { key, key_id })
    }

    /// The id written into checkpoints.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Fills in `key_id` and `signature` (the hash is then set by [`chain::seal`]).
    ///
    /// # Errors
    /// When the record cannot be represented as JSON (not possible for this type).
    pub fn sign(&self, record: &mut CheckpointRecord) -> Result<(), serde_json::Error> {
        record.key_id = self.key_id.clone();
        record.signature = String::new();
        let message = signed_message(&serde_json::to_value(&*record)?);
        record.signature = hex::encode(self.key.sign(&message).to_bytes());
        Ok(())
    }
}

/// The public keys a verifier accepts, by key id (several: keys are rotated).
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl PublicKeys {
    /// Reads public key files (SubjectPublicKeyInfo PEM, or a PKCS#8 private key PEM whose
    /// public half is used).
    ///
    /// # Errors
    /// A message naming the file that cannot be read or is not an Ed25519 key.
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<Self, String> {
        let mut keys = PublicKeys::default();
        for path in paths {
            let path = path.as_ref();
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let public = devkeys::ed25519_public_from_pem(&pem)
                .or_else(|| {
                    devkeys::ed25519_seed_from_pem(&pem)
                        .map(|seed| SigningKey::from_bytes(&seed).verifying_key().to_bytes())
                })
                .ok_or_else(|| format!("{}: not an Ed25519 public key PEM", path.display()))?;
            let key = VerifyingKey::from_bytes(&public)
                .map_err(|e| format!("{}: not a valid Ed25519 key: {e}", path.display()))?;
            keys.keys.insert(key_id(&public), key);
        }
        Ok(keys)
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature of a checkpoint line given as parsed JSON.
    ///
    /// # Errors
    /// [`SignatureError`] when its key is unknown or the signature does not verify.
    pub fn verify(&self, line: &Value) -> Result<(), SignatureError> {
        let key_id = line
            .get("key_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(key) = self.keys.get(&key_id) else {
            return Err(SignatureError::UnknownKey(key_id));
        };
        let signature = line
            .get("signature")
            .and_then(Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .ok_or_else(|| SignatureError::Invalid(key_id.clone()))?;
        key.verify_strict(&signed_message(line), &signature)
            .map_err(|_| SignatureError::Invalid(key_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CheckpointRecord {
        CheckpointRecord {
            v: 2,
            kind: "checkpoint".into(),
            seq: 1001,
            time: "2026-11-28T07:34:41.123456789Z".into(),
            replica: "authz-0".into(),
            file_seq: 3,
            key_id: String::new(),
            signature: String::new(),
            prev_hash: "ab".repeat(32),
            hash: String::new(),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let key = devkeys::DevKey::generate();
        let signer = CheckpointSigner::from_pem(&key.to_pem()).unwrap();
        let mut checkpoint = record();
        signer.sign(&mut checkpoint).unwrap();
        let line = chain::seal(&mut checkpoint).unwrap();
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(chain::line_hash(&value), checkpoint.hash);

        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("k.pub.pem");
        std::fs::write(&public, key.to_public_pem()).unwrap();
        let keys = PublicKeys::read(&[&public]).unwrap();
        keys.verify(&value).unwrap();

        for (member, to) in [
            ("seq", serde_json::json!(1002)),
            ("replica", serde_json::json!("authz-1")),
            ("prev_hash", serde_json::json!("cd".repeat(32))),
            ("time", serde_json::json!("2026-11-28T07:34:42.000000000Z")),
        ] {
            let mut changed = value.clone();
            changed[member] = to;
            assert_eq!(
                keys.verify(&changed),
                Err(SignatureError::Invalid(signer.key_id().to_owned())),
                "{member}"
            );
        }
        let other = PublicKeys::read(&[{
            let p = dir.path().join("other.pem");
            std::fs::write(&p, devkeys::DevKey::generate().to_public_pem()).unwrap();
            p
        }])
        .unwrap();
        assert!(matches!(
            other.verify(&value),
            Err(SignatureError::UnknownKey(_))
        ));
    }
}
