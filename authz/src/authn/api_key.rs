//! API keys from `x-api-key`. Config holds only each key's SHA-256; a presented key is hashed and
//! compared against *every* configured hash in constant time, so neither the comparison nor the
//! number of entries checked reveals how close a guess was.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::config::ApiKeyEntry;
use crate::decision::{AuthMethod, Principal};

/// Longest accepted key: real keys are tens of bytes; this bounds hashing work.
pub const MAX_API_KEY_BYTES: usize = 512;

/// The configured keys.
#[derive(Default)]
pub struct ApiKeys {
    entries: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.entries.len())
    }
}

impl ApiKeys {
    /// Builds the table from validated config (hashes already checked to be 64 hex chars;
    /// malformed ones are skipped, which can only make authentication fail).
    pub fn new(entries: &[ApiKeyEntry]) -> Self {
        let entries = entries
            .iter()
            .filter_map(|e| {
                let bytes = hex::decode(&e.sha256).ok()?;
                let hash: [u8; 32] = bytes.try_into().ok()?;
                Some((
                    hash,
                    Principal {
                        id: e.principal.clone(),
                        auth_method: AuthMethod::ApiKey,
                        roles: e.roles.clone(),
                    },
                ))
            })
            .collect();
        ApiKeys { entries }
    }

    /// The principal whose key this is, if any.
    pub fn lookup(&self, presented: &str) -> Option<Principal> {
        if presented.is_empty() || presented.len() > MAX_API_KEY_BYTES {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u32;
        for (i, (hash, _)) in self.entries.iter().enumerate() {
            let eq = hash.ct_eq(&digest);
            // Record the match without branching on it.
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        if bool::from(found) {
            self.entries.get(index as usize).map(|(_, p)| p.clone())
        } else {
            None
        }
    }
}

/// Lower-case hex SHA-256 of a key, as written in config.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_their_own_hash() {
        let keys = ApiKeys::new(&[
            ApiKeyEntry {
                principal: "a".into(),
                roles: vec!["r1".into()],
                sha256: hash_key("key-a"),
            },
            ApiKeyEntry {
                principal: "b".into(),
                roles: vec![],
                sha256: hash_key("key-b"),
            },
        ]);
        assert_eq!(keys.lookup("key-a").unwrap().id, "a");
        assert_eq!(keys.lookup("key-b").unwrap().id, "b");
        assert!(keys.lookup("key-c").is_none());
        // The stored hash itself is not a key.
        assert!(keys.lookup(&hash_key("key-a")).is_none());
        assert!(keys.lookup("").is_none());
        assert!(keys.lookup(&"x".repeat(10_000)).is_none());
    }
}
