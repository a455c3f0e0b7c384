//! The hash chain: a canonical encoding of a line and the SHA-256 that links lines.
//!
//! A line's `hash` is the lowercase hex SHA-256 of its *canonical encoding*: the line's JSON
//! object without the `hash` member, written with
//! - object members sorted by key (byte order of the UTF-8 key), recursively;
//! - no whitespace between tokens;
//! - strings escaped as `serde_json` writes them (`\"`, `\\`, `\b \f \n \r \t`, other control
//!   characters as `\u00XX`, everything else as raw UTF-8);
//! - numbers as `serde_json` writes them (the schema only has integers, in decimal);
//! - `true`, `false`, `null` as such.
//!
//! Because the hash is computed from the *parsed* line, it does not depend on the key order or
//! spacing in the file, only on the content: any change of a value changes it. The `prev_hash`
//! member is part of the hashed content, which is what chains the lines.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes the canonical encoding of `value` (see the module docs) into `out`.
pub fn canonical_encode(value: &Value, out: &mut Vec<u8>) {
    encode_skipping(value, &[], out);
}

/// Canonical encoding of `value`, leaving out the top-level members in `skip` if it is an
/// object.
pub(crate) fn encode_skipping(value: &Value, skip: &[&str], out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(key, _)| !skip.contains(&key.as_str()))
                .collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, member)) in members.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                encode_string(key, out);
                out.push(b':');
                canonical_encode(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                canonical_encode(item, out);
            }
            out.push(b']');
        }
        scalar => encode_scalar(scalar, out),
    }
}

fn encode_string(text: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail; see encode_scalar.
    let _ = serde_json::to_writer(out, text);
}

fn encode_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail (no I/O, no non-string map keys); if it
    // ever did, the hash would simply not match and verification would flag the line.
    let _ = serde_json::to_writer(out, value);
}

/// The hash of a line given as a parsed JSON object: SHA-256 over the canonical encoding of the
/// object without its `hash` member, as lowercase hex.
pub fn line_hash(line: &Value) -> String {
    let mut canonical = Vec::with_capacity(1024);
    encode_skipping(line, &["hash"], &mut canonical);
    hex::encode(Sha256::digest(&canonical))
}

/// A line of the chain that carries its own `hash`.
pub trait ChainLine: serde::Serialize {
    /// Stores the computed hash in the line's `hash` member.
    fn set_hash(&mut self, hash: String);

    /// The canonical encoding of the line without `hash` (see the module docs). The default
    /// goes through a `serde_json::Value`, the same path `verify` takes for a line read back.
    ///
    /// # Errors
    /// When the line cannot be represented as JSON.
    fn canonical(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(1024);
        encode_skipping(&serde_json::to_value(self)?, &["hash"], &mut out);
        Ok(out)
    }
}

impl ChainLine for crate::audit::AuditRecord {
    fn set_hash(&mut self, hash: String) {
        self.hash = hash;
    }

    /// One record per decision, so this is on every check's path: serialized once, straight
    /// from borrowed fields already in canonical (sorted) order, instead of building a
    /// `serde_json::Value` tree, sorting it and encoding it. Debug builds (every test) check it
    /// against the generic path.
    fn canonical(&self) -> Result<Vec<u8>, serde_json::Error> {
        let out = serde_json::to_vec(&CanonicalRecord::from(self))?;
        #[cfg(debug_assertions)]
        {
            let mut slow = Vec::new();
            encode_skipping(&serde_json::to_value(self)?, &["hash"], &mut slow);
            debug_assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&slow),
                "CanonicalRecord is out of step with AuditRecord"
            );
        }
        Ok(out)
    }
}

/// [`crate::audit::AuditRecord`] without `hash`, members in byte order of their keys, so that
/// `serde_json`'s compact output is the canonical encoding. Any field added to the record must
/// be added here in its sorted place (the debug check in `canonical` and the tests catch a miss).
#[derive(serde::Serialize)]
struct CanonicalRecord<'a> {
    access_reason: &'a Option<String>,
    access_reason_truncated: bool,
    action: &'a str,
    decision: crate::audit::AuditDecision,
    decision_id: &'a uuid::Uuid,
    kind: &'a str,
    latency_us: u64,
    model: &'a Option<String>,
    policy_ids: &'a [String],
    prev_hash: &'a str,
    principal: Option<CanonicalPrincipal<'a>>,
    rate_limit: Option<CanonicalRateLimit<'a>>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: &'a Option<String>,
    request_id: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_time: &'a Option<i64>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: &'a Option<crate::audit::record::ShadowVerdict>,
    source_ip: &'a Option<std::net::IpAddr>,
    status: u16,
    time: &'a str,
    trace_id: &'a Option<String>,
    v: u32,
    version: &'a Option<String>,
}

#[derive(serde::Serialize)]
struct CanonicalPrincipal<'a> {
    auth_method: &'a str,
    id: &'a str,
    roles: &'a [String],
}

#[derive(serde::Serialize)]
struct CanonicalRateLimit<'a> {
    limit: Option<u64>,
    outcome: &'a str,
    remaining: Option<u64>,
    retry_after_ms: Option<u64>,
}

impl<'a> From<&'a crate::audit::AuditRecord> for CanonicalRecord<'a> {
    fn from(r: &'a crate::audit::AuditRecord) -> Self {
        // Destructured so that a field added to the record fails to compile here.
        let crate::audit::AuditRecord {
            v,
            kind,
            seq,
            time,
            replica,
            decision_id,
            request_id,
            trace_id,
            principal,
            model,
            version,
            action,
            decision,
            status,
            reason,
            policy_ids,
            access_reason,
            access_reason_truncated,
            rate_limit,
            source_ip,
            latency_us,
            request_time,
            shadow,
            prev_hash,
            hash: _,
        } = r;
        CanonicalRecord {
            access_reason,
            access_reason_truncated: *access_reason_truncated,
            action,
            decision: *decision,
            decision_id,
            kind,
            latency_us: *latency_us,
            model,
            policy_ids,
            prev_hash,
            principal: principal.as_ref().map(|p| CanonicalPrincipal {
                auth_method: &p.auth_method,
                id: &p.id,
                roles: &p.roles,
            }),
            rate_limit: rate_limit.as_ref().map(|l| CanonicalRateLimit {
                limit: l.limit,
                outcome: &l.outcome,
                remaining: l.remaining,
                retry_after_ms: l.retry_after_ms,
            }),
            reason,
            replica,
            request_id,
            request_time,
            seq: *seq,
            shadow,
            source_ip,
            status: *status,
            time,
            trace_id,
            v: *v,
            version,
        }
    }
}

impl ChainLine for crate::audit::HeaderRecord {
    fn set_hash(&mut self, hash: String) {
        self.hash = hash;
    }
}

impl ChainLine for crate::audit::CheckpointRecord {
    fn set_hash(&mut self, hash: String) {
        self.hash = hash;
    }
}

/// Computes `line`'s hash (whatever its `hash` member holds is ignored), stores it, and returns
/// the JSON line to write, with its trailing newline.
///
/// # Errors
/// When the line cannot be represented as JSON (not possible for the audit types).
pub fn seal<T: ChainLine>(line: &mut T) -> Result<Vec<u8>, serde_json::Error> {
    let hash = hex::encode(Sha256::digest(line.canonical()?));
    line.set_hash(hash);
    let mut bytes = serde_json::to_vec(&*line)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Arbitrary JSON of the kinds the schema uses (integers, strings with any characters,
    /// booleans, null, arrays, objects).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What `verify` relies on: a line written by the writer, parsed back, has the same
        /// canonical encoding (and so the same hash) as the value it was written from.
        #[test]
        fn canonical_encoding_survives_a_write_and_read_back(value in json_value()) {
            let mut first = Vec::new();
            canonical_encode(&value, &mut first);
            let written = serde_json::to_vec(&value).unwrap();
            let read_back: Value = serde_json::from_slice(&written).unwrap();
            let mut second = Vec::new();
            canonical_encode(&read_back, &mut second);
            prop_assert_eq!(&first, &second);
            // The canonical encoding is itself JSON for the same value.
            let reparsed: Value = serde_json::from_slice(&first).unwrap();
            prop_assert_eq!(reparsed, value);
        }
    }

    /// A decision record with every optional member present or absent, and arbitrary text
    /// (quotes, control characters, non-ASCII) where the record carries text.
    fn record(text: String, full: bool, n: u64) -> crate::audit::AuditRecord {
        use crate::audit::{AuditDecision, AuditPrincipal, AuditRecord, RateLimitState};
        let some = |t: &str| full.then(|| t.to_owned());
        AuditRecord {
            v: 2,
            kind: "decision".into(),
            seq: n,
            time: "2026-11-28T07:34:41.123456789Z".into(),
            replica: full.then(|| "authz-0".to_owned()),
            decision_id: uuid::Uuid::from_u128(u128::from(n) << 64 | 7),
            request_id: some(&text),
            trace_id: some("4bf92f3577b34da6a3ce929d0e0e4736"),
            principal: full.then(|| AuditPrincipal {
                id: text.clone(),
                auth_method: "jwt".into(),
                roles: vec![text.clone(), "analyst".into()],
            }),
            model: some(&text),
            version: some("1"),
            action: "infer".into(),
            decision: if full {
                AuditDecision::Allow
            } else {
                AuditDecision::Deny
            },
            status: if full { 200 } else { 429 },
            reason: "ok".into(),
            policy_ids: if full { vec![text.clone()] } else { vec![] },
            access_reason: some(&text),
            access_reason_truncated: full,
            rate_limit: full.then(|| RateLimitState {
                outcome: "allowed".into(),
                limit: Some(n),
                remaining: None,
                retry_after_ms: Some(n / 2),
            }),
            source_ip: full.then(|| "2001:db8::1".parse().unwrap()),
            latency_us: n,
            request_time: full.then_some(1_700_000_000),
            shadow: full.then(|| crate::audit::ShadowVerdict {
                decision: AuditDecision::Deny,
                reason: "forbidden_by_policy".into(),
                policy_ids: vec![text.clone()],
            }),
            prev_hash: GENESIS.into(),
            hash: "ignored".into(),
        }
    }

    const GENESIS: &str = crate::audit::record::GENESIS_HASH;

    proptest! {
        /// The writer's direct encoding of a decision record is the canonical encoding `verify`
        /// computes from the parsed line.
        #[test]
        fn record_fast_path_matches_the_canonical_encoding(text in any::<String>(), full: bool, n: u64) {
            let record = record(text, full, n);
            let fast = record.canonical().unwrap();
            let written = serde_json::to_vec(&record).unwrap();
            let read_back: Value = serde_json::from_slice(&written).unwrap();
            let mut slow = Vec::new();
            encode_skipping(&read_back, &["hash"], &mut slow);
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
    }

    #[test]
    fn sealed_record_verifies_from_its_own_line() {
        let mut record = record("a \"quoted\"\n reason é".into(), true, 42);
        let line = seal(&mut record).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed["hash"].as_str().unwrap(), record.hash);
        assert_eq!(line_hash(&parsed), record.hash);
    }

    #[test]
    fn canonical_encoding_sorts_keys_and_drops_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "b": 1, "a": {"z": null, "y": [true, "x\n"]} }"#).unwrap();
        let mut out = Vec::new();
        canonical_encode(&value, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"y":[true,"x\n"],"z":null},"b":1}"#
        );
    }

    #[test]
    fn hash_ignores_key_order_and_its_own_member_but_not_values() {
        let a = json!({"seq": 1, "prev_hash": "00", "hash": "whatever"});
        let b: Value = serde_json::from_str(r#"{"prev_hash":"00","seq":1}"#).unwrap();
        assert_eq!(line_hash(&a), line_hash(&b));
        let c = json!({"seq": 2, "prev_hash": "00"});
        assert_ne!(line_hash(&a), line_hash(&c));
        // SHA-256 of `{"prev_hash":"00","seq":1}`, computed independently with sha256sum.
        assert_eq!(
            line_hash(&b),
            "7a78f2a2e93f97ac4f282b9fb7ce29e4f88a5d8791380038d6b174a83c51277d"
        );
    }
}
