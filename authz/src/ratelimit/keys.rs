//! The Redis key layout, in one place.
//!
//! One key per (model, principal): `<prefix>:{<model>|<principal>}`. The whole pair is the
//! `{hash tag}`, so every key of one (model, principal) lands on one Redis Cluster slot and keys of
//! different principals spread over the cluster. Both parts are percent-encoded with everything
//! outside `[A-Za-z0-9._:@/-]` escaped, so `{`, `}` and the `|` separator never appear inside a
//! part: the tag is exactly the pair and two different pairs never share a key. Principal ids whose
//! encoding is longer than [`MAX_ENCODED_PRINCIPAL`] bytes are replaced by `#` and the hex SHA-256
//! of the id (`#` is always escaped in the plain form, so the two forms cannot collide), which
//! bounds the key size whatever an identity provider puts in a token.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Longest encoded principal id kept verbatim in a key.
pub const MAX_ENCODED_PRINCIPAL: usize = 256;

/// Default key prefix: names the owner and leaves room for a layout version.
pub const DEFAULT_KEY_PREFIX: &str = "authz:rl:v1";

/// The key holding the GCRA state of `principal_id` on `model`.
pub fn rate_limit_key(prefix: &str, model: &str, principal_id: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + model.len() + principal_id.len() + 8);
    key.push_str(prefix);
    key.push_str(":{");
    encode_into(&mut key, model);
    key.push('|');
    let start = key.len();
    encode_into(&mut key, principal_id);
    if key.len() - start > MAX_ENCODED_PRINCIPAL {
        key.truncate(start);
        key.push('#');
        for byte in Sha256::digest(principal_id.as_bytes()) {
            let _ = write!(key, "{byte:02x}");
        }
    }
    key.push('}');
    key
}

/// The hash tag of a key (the text between the first `{` and the next `}`), which decides its
/// cluster slot; `None` when the key has no tag.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

fn encode_into(out: &mut String, part: &str) {
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || b"._:@/-".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_tagged_by_the_whole_pair() {
        let key = rate_limit_key(DEFAULT_KEY_PREFIX, "resnet50", "spiffe://example.org/ns/a");
        assert_eq!(key, "authz:rl:v1:{resnet50|spiffe://example.org/ns/a}");
        assert_eq!(hash_tag(&key), Some("resnet50|spiffe://example.org/ns/a"));
    }

    #[test]
    fn braces_and_separators_in_ids_cannot_break_the_tag_or_collide() {
        let a = rate_limit_key("p", "m", "x}|{y");
        assert_eq!(hash_tag(&a), Some("m|x%7D%7C%7By"));
        assert_ne!(
            rate_limit_key("p", "a|b", "c"),
            rate_limit_key("p", "a", "b|c")
        );
        assert_ne!(
            rate_limit_key("p", "m", "%41"),
            rate_limit_key("p", "m", "A")
        );
    }

    #[test]
    fn long_principal_ids_are_hashed_and_cannot_collide_with_plain_ids() {
        let long = "u".repeat(1000);
        let key = rate_limit_key("p", "m", &long);
        assert!(key.len() < 100, "{key}");
        let tag = hash_tag(&key).unwrap();
        assert!(tag.starts_with("m|#"));
        let lookalike = rate_limit_key("p", "m", &tag[2..]);
        assert_ne!(lookalike, key);
    }
}
