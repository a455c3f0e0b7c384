//! What a rate-limit check answers: the outcome (with the store-failure policy applied), the state
//! behind the `RateLimit-*` / `Retry-After` headers, and how both read in the audit record.

use serde::Serialize;

#[cfg(doc)]
use super::RateLimiter;
use super::config::OnStoreError;
use super::gcra::{Decision, Gcra};
use super::store::StoreErrorKind;

/// What the response headers need, from one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimitState {
    /// `RateLimit-Limit`: the burst, i.e. requests a fresh principal may make at once.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests that could still be made right now.
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds (rounded up) until the full burst is available again.
    pub reset_secs: u64,
    /// `Retry-After`: seconds (rounded up) until this request would be admitted; 0 when admitted.
    pub retry_after_secs: u64,
}

impl RateLimitState {
    pub(super) fn from_decision(limit: Gcra, d: &Decision) -> Self {
        Self {
            limit: limit.burst(),
            remaining: d.remaining,
            reset_secs: d.reset_secs(),
            retry_after_secs: d.retry_after_secs(),
        }
    }

    /// The headers to send: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, plus
    /// `Retry-After` when the request was limited.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ];
        if self.retry_after_secs > 0 {
            headers.push(("retry-after", self.retry_after_secs.to_string()));
        }
        headers
    }
}

/// The result of [`RateLimiter::check`], with the store-failure policy already applied.
///
/// Serializes for the audit record as `{"result": "allowed", "limit": .., "remaining": ..,
/// "reset_secs": .., "retry_after_secs": ..}`, `{"result": "store_failed", "policy": "deny",
/// "error": "timeout"}`, `{"result": "unlimited"}`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RateLimitOutcome {
    /// Admitted within the limit.
    Allowed(RateLimitState),
    /// The model is configured `unlimited` (for this principal's roles): admitted, no headers.
    Unlimited,
    /// Over the limit: answer 429 `rate_limited` with the state's headers.
    Limited(RateLimitState),
    /// The store could not decide; `policy` (the model's `on_store_error`) did.
    StoreFailed {
        /// `Allow`: admit. `Deny`: answer 503.
        policy: OnStoreError,
        /// What went wrong.
        error: StoreErrorKind,
    },
    /// No limits are configured for this model name. Denied: policy should have rejected an
    /// unknown model before, so this is a config mismatch, never a reason to admit.
    UnknownModel,
}

impl RateLimitOutcome {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        match self {
            Self::Allowed(_) | Self::Unlimited => true,
            Self::StoreFailed { policy, .. } => *policy == OnStoreError::Allow,
            Self::Limited(_) | Self::UnknownModel => false,
        }
    }

    /// Whether the decision was made under degradation (by `on_store_error`).
    pub fn degraded(&self) -> bool {
        matches!(self, Self::StoreFailed { .. })
    }

    /// The header state, when the store decided.
    pub fn state(&self) -> Option<&RateLimitState> {
        match self {
            Self::Allowed(s) | Self::Limited(s) => Some(s),
            _ => None,
        }
    }
}
