//! The outcome of one check: [`Decision`], its stable [`ReasonCode`], and the authenticated
//! [`Principal`] it is about.
//!
//! Every step of the pipeline produces or refines a `Decision`; `response.rs` is the only place
//! that turns one into what Envoy sees, and (later) the audit step records it as it is.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::request::Action;

/// How a principal proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A verified JWT bearer token.
    Jwt,
    /// An API key from `x-api-key`, matched against a configured SHA-256 hash.
    ApiKey,
    /// A SPIFFE id from a client certificate that Envoy verified (`source.principal`).
    Mtls,
    /// No credentials: only for configured public paths.
    Anonymous,
}

impl AuthMethod {
    /// The wire/log name (`jwt`, `api_key`, `mtls`, `anonymous`), also used in Cedar's context.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Mtls => "mtls",
            AuthMethod::Anonymous => "anonymous",
        }
    }

    /// Parses the wire name back (used by policy test cases).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "jwt" => AuthMethod::Jwt,
            "api_key" => AuthMethod::ApiKey,
            "mtls" => AuthMethod::Mtls,
            "anonymous" => AuthMethod::Anonymous,
            _ => return None,
        })
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id (JWT `sub` or the configured claim, or the configured API-key / mTLS principal).
    pub id: String,
    /// How the caller authenticated.
    pub auth_method: AuthMethod,
    /// Roles the credential grants; in Cedar the principal is a member of each.
    pub roles: Vec<String>,
}

/// A stable, documented reason code. Built-in codes are variants; policy authors add their own
/// with `@reason("code")` on a `forbid` policy ([`ReasonCode::Policy`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// Allowed by policy.
    Allowed,
    /// Allowed without credentials because the path is configured public.
    PublicPath,
    /// No credentials were presented (401).
    Unauthenticated,
    /// A bearer token was presented but is not valid (401).
    InvalidToken,
    /// An API key was presented but matches no configured key (401).
    InvalidApiKey,
    /// An mTLS identity was presented that no configured mapping knows (401).
    UnknownPrincipal,
    /// More than one credential kind was presented (401): never guess which one counts.
    AmbiguousCredentials,
    /// The request itself is malformed: missing attributes, bad encoding, oversized input (400).
    MalformedRequest,
    /// The path is ambiguous or not canonical (400): never guess which model it means.
    InvalidPath,
    /// A well-formed path that no rule exposes (403): denied by default.
    PathNotAllowed,
    /// The model is not configured (403).
    UnknownModel,
    /// No policy permits this principal on this model (403).
    RoleNotAllowed,
    /// The model requires an `x-access-reason` and none was given (403).
    ReasonRequired,
    /// A `forbid` policy without a `@reason` annotation decided (403).
    ForbiddenByPolicy,
    /// Policy evaluation failed; denied to be safe (403).
    PolicyError,
    /// Over the rate limit (429, with `Retry-After`).
    RateLimited,
    /// A dependency needed for the decision is unavailable (signing keys not loaded) (503).
    Unavailable,
    /// The rate-limit store failed and the model's `on_store_error` is `deny` (503).
    RateLimitUnavailable,
    /// The audit record could not be written: no evidence, no access (503).
    AuditUnavailable,
    /// A code from a `forbid` policy's `@reason("...")` annotation (403).
    Policy(Arc<str>),
}

impl ReasonCode {
    /// The stable wire form used in responses, metrics and the audit log.
    pub fn as_str(&self) -> &str {
        match self {
            ReasonCode::Allowed => "allowed",
            ReasonCode::PublicPath => "public_path",
            ReasonCode::Unauthenticated => "unauthenticated",
            ReasonCode::InvalidToken => "invalid_token",
            ReasonCode::InvalidApiKey => "invalid_api_key",
            ReasonCode::UnknownPrincipal => "unknown_principal",
            ReasonCode::AmbiguousCredentials => "ambiguous_credentials",
            ReasonCode::MalformedRequest => "malformed_request",
            ReasonCode::InvalidPath => "invalid_path",
            ReasonCode::PathNotAllowed => "path_not_allowed",
            ReasonCode::UnknownModel => "unknown_model",
            ReasonCode::RoleNotAllowed => "role_not_allowed",
            ReasonCode::ReasonRequired => "reason_required",
            ReasonCode::ForbiddenByPolicy => "forbidden_by_policy",
            ReasonCode::PolicyError => "policy_error",
            ReasonCode::RateLimited => "rate_limited",
            ReasonCode::Unavailable => "unavailable",
            ReasonCode::RateLimitUnavailable => "rate_limit_unavailable",
            ReasonCode::AuditUnavailable => "audit_unavailable",
            ReasonCode::Policy(code) => code,
        }
    }

    /// Maps a code string (from a policy annotation or a test case) to a code, preferring the
    /// built-in variant when the string names one.
    pub fn from_code(code: &str) -> Self {
        const BUILTIN: [ReasonCode; 19] = [
            ReasonCode::Allowed,
            ReasonCode::PublicPath,
            ReasonCode::Unauthenticated,
            ReasonCode::InvalidToken,
            ReasonCode::InvalidApiKey,
            ReasonCode::UnknownPrincipal,
            ReasonCode::AmbiguousCredentials,
            ReasonCode::MalformedRequest,
            ReasonCode::InvalidPath,
            ReasonCode::PathNotAllowed,
            ReasonCode::UnknownModel,
            ReasonCode::RoleNotAllowed,
            ReasonCode::ReasonRequired,
            ReasonCode::ForbiddenByPolicy,
            ReasonCode::PolicyError,
            ReasonCode::RateLimited,
            ReasonCode::Unavailable,
            ReasonCode::RateLimitUnavailable,
            ReasonCode::AuditUnavailable,
        ];
        BUILTIN
            .into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or_else(|| ReasonCode::Policy(Arc::from(code)))
    }

    /// The HTTP status Envoy returns to the client for this code.
    pub fn http_status(&self) -> u16 {
        match self {
            ReasonCode::Allowed | ReasonCode::PublicPath => 200,
            ReasonCode::Unauthenticated
            | ReasonCode::InvalidToken
            | ReasonCode::InvalidApiKey
            | ReasonCode::UnknownPrincipal
            | ReasonCode::AmbiguousCredentials => 401,
            ReasonCode::MalformedRequest | ReasonCode::InvalidPath => 400,
            ReasonCode::PathNotAllowed
            | ReasonCode::UnknownModel
            | ReasonCode::RoleNotAllowed
            | ReasonCode::ReasonRequired
            | ReasonCode::ForbiddenByPolicy
            | ReasonCode::PolicyError
            | ReasonCode::Policy(_) => 403,
            ReasonCode::RateLimited => 429,
            ReasonCode::Unavailable
            | ReasonCode::RateLimitUnavailable
            | ReasonCode::AuditUnavailable => 503,
        }
    }

    /// Whether this code allows the request.
    pub fn is_allow(&self) -> bool {
        matches!(self, ReasonCode::Allowed | ReasonCode::PublicPath)
    }

    /// Whether this code is given only after policy allowed the request (the rate limit and
    /// the audit step run only then), so policy's own verdict was `allowed`.
    pub fn is_after_policy(&self) -> bool {
        matches!(
            self,
            ReasonCode::RateLimited
                | ReasonCode::RateLimitUnavailable
                | ReasonCode::AuditUnavailable
        )
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One authorization decision and everything known about the request it answers.
///
/// Built by `service.rs`, turned into a `CheckResponse` only by `response.rs`, and (once wired)
/// written to the audit log exactly as it is returned.
#[derive(Debug, Clone)]
pub struct Decision {
    /// UUIDv7: time-ordered, unique per decision; returned to the client and audited.
    pub id: Uuid,
    /// Why: the stable reason code. `reason.is_allow()` is the decision.
    pub reason: ReasonCode,
    /// Human-readable explanation, safe to show the client (never contains credentials).
    pub message: String,
    /// `@id`s of the Cedar policies that decided, in policy-file order.
    pub policies: Vec<String>,
    /// The authenticated caller, when authentication got that far.
    pub principal: Option<Principal>,
    /// The model the request is about (as named on the path or in the gRPC message).
    pub model: Option<String>,
    /// The model version, when the path or message names one.
    pub version: Option<String>,
    /// What the request does to the model.
    pub action: Option<Action>,
    /// The caller's `x-access-reason` (trimmed; `None` when missing or blank).
    pub access_reason: Option<String>,
    /// Client address as Envoy saw it.
    pub source_ip: Option<IpAddr>,
    /// `x-request-id`, when present and well-formed.
    pub request_id: Option<String>,
    /// Trace id from a well-formed W3C `traceparent`.
    pub trace_id: Option<String>,
    /// Extra headers for the client's response (e.g. `RateLimit-*` from the rate limiter).
    pub response_headers: Vec<(String, String)>,
    /// What the rate limiter decided, when it ran (for headers and the audit record).
    pub rate_limit: Option<crate::ratelimit::RateLimitOutcome>,
    /// The request time policy was evaluated with (Unix seconds), when policy ran.
    pub request_time: Option<i64>,
    /// The shadow policy's verdict, only when one is configured and it disagrees with the
    /// active policy's (reason code or deciding policies aside, the reason code carries the
    /// decision). Never changes the answer; it is evidence for the audit record and a metric.
    pub shadow: Option<crate::policy::PolicyOutcome>,
    /// The caller's catalog, on an allowed `GET /v1/models` (authz answers it itself:
    /// `response.rs`). Audited with the action `list`.
    pub catalog: Option<crate::catalog::Catalog>,
}

impl Decision {
    /// A fresh decision with a new UUIDv7 and nothing else known yet.
    pub fn new(reason: ReasonCode, message: impl Into<String>) -> Self {
        Decision {
            id: Uuid::now_v7(),
            reason,
            message: message.into(),
            policies: Vec::new(),
            principal: None,
            model: None,
            version: None,
            action: None,
            access_reason: None,
            source_ip: None,
            request_id: None,
            trace_id: None,
            response_headers: Vec::new(),
            rate_limit: None,
            request_time: None,
            shadow: None,
            catalog: None,
        }
    }

    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.reason.is_allow()
    }

    /// The HTTP status the client gets (200 for allow: Envoy forwards upstream).
    pub fn http_status(&self) -> u16 {
        self.reason.http_status()
    }

    /// `"allow"` or `"deny"`, as used in metrics and logs.
    pub fn decision_str(&self) -> &'static str {
        if self.allowed() { "allow" } else { "deny" }
    }

    /// Whether policy allowed the request, even if a later step (rate limit, audit) denied it:
    /// those steps run only on a policy allow.
    pub fn policy_allowed(&self) -> bool {
        self.reason.is_allow() || self.reason.is_after_policy()
    }

    /// Replaces the verdict (e.g. the rate limiter turning an allow into `rate_limited`).
    pub fn set_outcome(&mut self, reason: ReasonCode, message: impl Into<String>) {
        self.reason = reason;
        self.message = message.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_statuses() {
        for code in [
            "allowed",
            "unauthenticated",
            "invalid_token",
            "malformed_request",
            "invalid_path",
            "unknown_model",
            "role_not_allowed",
            "reason_required",
            "rate_limited",
            "unavailable",
            "rate_limit_unavailable",
            "audit_unavailable",
        ] {
            assert_eq!(ReasonCode::from_code(code).as_str(), code);
        }
        assert_eq!(
            ReasonCode::from_code("restricted_via_api_key").http_status(),
            403
        );
        assert!(matches!(
            ReasonCode::from_code("x_custom"),
            ReasonCode::Policy(_)
        ));
        assert_eq!(ReasonCode::Unauthenticated.http_status(), 401);
        assert_eq!(ReasonCode::RateLimited.http_status(), 429);
        assert_eq!(ReasonCode::InvalidPath.http_status(), 400);
    }

    #[test]
    fn decision_ids_are_uuid_v7() {
        let d = Decision::new(ReasonCode::Allowed, "ok");
        assert_eq!(d.id.get_version_num(), 7);
        assert!(d.allowed());
        assert_eq!(d.decision_str(), "allow");
    }
}
