//! The audit record schema (documented field by field in `docs/audit.md`).
//!
//! [`AuditEvent`] is what the Check pipeline knows about a decision; the writer stamps it with a
//! sequence number, time and hashes to make an [`AuditRecord`], one JSON line. Each file starts
//! with a [`HeaderRecord`]. None of these types has a field for credentials (tokens, API keys,
//! certificates) or tensor data, so neither can be logged by mistake.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Schema version written in every line's `v` field. Version 2 added the `replica` member
/// (every line) and checkpoint lines; version 1 lines (no `replica`) still verify. Version 3
/// added `request_time` (the time policy was evaluated at, so `authz policy replay` has every
/// fact a policy reads) and `shadow` (the shadow policy's verdict where it disagreed) to
/// decision lines; both are absent from older lines, which still verify.
pub const SCHEMA_VERSION: u32 = 3;
/// The first schema version whose decision lines carry `request_time` when policy ran.
pub const SCHEMA_VERSION_REQUEST_TIME: u32 = 3;
/// `kind` of a decision record.
pub const KIND_DECISION: &str = "decision";
/// `kind` of a file header record.
pub const KIND_HEADER: &str = "header";
/// `kind` of a signed checkpoint record.
pub const KIND_CHECKPOINT: &str = "checkpoint";
/// `prev_hash` of the very first line of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// The request was let through.
    Allow,
    /// The request was denied (any status).
    Deny,
}

/// Who made the request, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPrincipal {
    /// The principal id (JWT subject claim, API-key owner, or mapped SPIFFE id).
    pub id: String,
    /// How it authenticated: `jwt`, `api_key` or `mtls`.
    pub auth_method: String,
    /// Its roles, as policy saw them.
    pub roles: Vec<String>,
}

/// The rate limiter's view of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitState {
    /// `allowed`, `limited`, `store_error_allowed`, `store_error_denied` (bounded set chosen
    /// by the rate limiter).
    pub outcome: String,
    /// Requests allowed per period (the GCRA burst), when a limit applied.
    pub limit: Option<u64>,
    /// Requests left in the current burst, when a limit applied.
    pub remaining: Option<u64>,
    /// Milliseconds until a denied request may be retried, when limited.
    pub retry_after_ms: Option<u64>,
}

/// The shadow policy's verdict on a check where it disagreed with the active policy
/// (schema version 3; see `[policy] shadow`). Members are in key order, so its JSON is already
/// canonical (see `CanonicalRecord` in `audit/chain.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowVerdict {
    /// What the shadow policy would have decided.
    pub decision: AuditDecision,
    /// Its deciding policy ids.
    pub policy_ids: Vec<String>,
    /// Its reason code.
    pub reason: String,
}

/// What the Check pipeline knows about one decision: plain data, filled field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The decision id (UUIDv7), also returned to the client as `x-authz-decision-id` and in
    /// the error body; create it with [`Uuid::now_v7`].
    pub decision_id: Uuid,
    /// Envoy's `x-request-id`, if any.
    pub request_id: Option<String>,
    /// The W3C trace id of the check's spans: the caller's `traceparent`, or the trace authz
    /// started when it exports spans and none came in.
    pub trace_id: Option<String>,
    /// The authenticated principal; `None` when authentication failed or was absent.
    pub principal: Option<AuditPrincipal>,
    /// The model name, when the request named one that parsed.
    pub model: Option<String>,
    /// The model version, when the path or message named one.
    pub version: Option<String>,
    /// What was asked: `infer`, `ready`, `metadata`, `config`, ... (bounded, chosen by the
    /// request parser).
    pub action: String,
    /// Allow or deny.
    pub decision: AuditDecision,
    /// The HTTP status the client sees (200 for an allow).
    pub status: u16,
    /// The stable reason code (`ok`, `role_not_allowed`, `rate_limited`, ...).
    pub reason: String,
    /// Ids of the policies that decided (Cedar `@id`s).
    pub policy_ids: Vec<String>,
    /// The caller's access reason; the writer caps it to `max_reason_bytes`.
    pub access_reason: Option<String>,
    /// The rate limiter's state, when it ran.
    pub rate_limit: Option<RateLimitState>,
    /// The client address Envoy reported.
    pub source_ip: Option<IpAddr>,
    /// Time from receiving the check to the decision (excluding the audit write itself).
    pub latency: Duration,
    /// The request time policy was evaluated with (Unix seconds), when policy ran.
    pub request_time: Option<i64>,
    /// The shadow policy's verdict, only where it differs from the active one.
    pub shadow: Option<ShadowVerdict>,
}

/// One decision line, as written and as read back.
///
/// The field order here is the order in the line; the hash does not depend on it (see
/// [`crate::audit::chain`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// Always [`KIND_DECISION`].
    pub kind: String,
    /// Position in the chain: one more than the previous line's (headers included).
    pub seq: u64,
    /// When the writer sequenced the record, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// The replica that wrote it (schema version 2; absent in version 1 lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// See [`AuditEvent`] for the fields from here to `latency_us`.
    pub decision_id: Uuid,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// The principal, or `null` when unauthenticated.
    pub principal: Option<AuditPrincipal>,
    /// Model name.
    pub model: Option<String>,
    /// Model version.
    pub version: Option<String>,
    /// Action.
    pub action: String,
    /// `allow` or `deny`.
    pub decision: AuditDecision,
    /// HTTP status.
    pub status: u16,
    /// Reason code.
    pub reason: String,
    /// Deciding policy ids.
    pub policy_ids: Vec<String>,
    /// Access reason, capped.
    pub access_reason: Option<String>,
    /// Whether `access_reason` was cut to the cap.
    pub access_reason_truncated: bool,
    /// Rate-limit state.
    pub rate_limit: Option<RateLimitState>,
    /// Source IP, textual.
    pub source_ip: Option<IpAddr>,
    /// Decision latency in microseconds.
    pub latency_us: u64,
    /// The request time policy saw, Unix seconds (schema version 3; absent when policy did
    /// not run and in older lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_time: Option<i64>,
    /// The shadow policy's verdict where it disagreed (schema version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowVerdict>,
    /// The previous line's `hash` ([`GENESIS_HASH`] for the first line of a chain).
    pub prev_hash: String,
    /// SHA-256 (lowercase hex) of this line's canonical encoding without `hash`.
    pub hash: String,
}

/// The first line of every file: links the file to the last line of the previous file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRecord {
    /// Schema version.
    pub v: u32,
    /// Always [`KIND_HEADER`].
    pub kind: String,
    /// Position in the chain (continues across files).
    pub seq: u64,
    /// When the file was started.
    pub time: String,
    /// The replica that wrote it (schema version 2; absent in version 1 lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The file's number in the sequence: 0 for the first file, one more per rotation.
    pub file_seq: u64,
    /// The software that wrote it, e.g. `authz/0.1.0`.
    pub writer: String,
    /// The last hash of the previous file ([`GENESIS_HASH`] for file 0).
    pub prev_hash: String,
    /// SHA-256 of this line's canonical encoding without `hash`.
    pub hash: String,
}

impl AuditRecord {
    /// Builds the unhashed record for `event` at chain position `seq` (the writer then sets
    /// `hash`). The access reason is cut to `max_reason_bytes` at a character boundary.
    pub(crate) fn stamp(
        event: AuditEvent,
        seq: u64,
        time: String,
        replica: Option<String>,
        prev_hash: String,
        max_reason_bytes: usize,
    ) -> Self {
        let (access_reason, access_reason_truncated) = match event.access_reason {
            Some(reason) => {
                let (kept, cut) = cap_utf8(reason, max_reason_bytes);
                (Some(kept), cut)
            }
            None => (None, false),
        };
        AuditRecord {
            v: SCHEMA_VERSION,
            kind: KIND_DECISION.to_owned(),
            seq,
            time,
            replica,
            decision_id: event.decision_id,
            request_id: event.request_id,
            trace_id: event.trace_id,
            principal: event.principal,
            model: event.model,
            version: event.version,
            action: event.action,
            decision: event.decision,
            status: event.status,
            reason: event.reason,
            policy_ids: event.policy_ids,
            access_reason,
            access_reason_truncated,
            rate_limit: event.rate_limit,
            source_ip: event.source_ip,
            latency_us: u64::try_from(event.latency.as_micros()).unwrap_or(u64::MAX),
            request_time: event.request_time,
            shadow: event.shadow,
            prev_hash,
            hash: String::new(),
        }
    }
}

/// Cuts `text` to at most `max` bytes without splitting a character.
fn cap_utf8(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// The current time as RFC 3339 UTC with exactly nine fractional digits
/// (`2026-11-28T07:34:41.123456789Z`), so timestamps also sort as strings.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_reason_is_capped_at_a_character_boundary() {
        assert_eq!(cap_utf8("short".into(), 10), ("short".into(), false));
        assert_eq!(
            cap_utf8("exactly10!".into(), 10),
            ("exactly10!".into(), false)
        );
        // "é" is two bytes: a cap of 4 on "aaaé" (5 bytes) must not split it.
        assert_eq!(cap_utf8("aaaé".into(), 4), ("aaa".into(), true));
    }

    #[test]
    fn time_is_rfc3339_utc() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z'), "{now}");
        assert_eq!(now.len(), "2026-11-28T07:34:41.123456789Z".len(), "{now}");
        time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339).unwrap();
    }
}
