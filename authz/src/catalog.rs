//! `GET /v1/models`: "what may I call?" for the authenticated caller.
//!
//! The catalog lists the configured models the **active** policy lets the caller run inference
//! on — never the others — each with its sensitivity, whether `infer` needs an
//! `x-access-reason`, the other actions it may use, and the rate limit configured for the
//! caller's roles. Access is decided by [`PolicyEngine::access`], the code `authz policy diff`
//! uses, so the catalog and the diff cannot disagree (and neither can the catalog and a check,
//! short of a policy reading the source address or the access reason's text).
//!
//! **`remaining`.** Each model's `remaining` is the number of inference requests the caller could
//! make on it right now: what the `RateLimit-Remaining` header of its last admitted request said,
//! refilled by the time since, and the full burst for a model it has not called. It is read by
//! [`fill_remaining`] with [`RateLimiter::remaining`], a read-only peek of the same store key,
//! under the same role-selected limit, that a check of `infer` on the model decides on (a
//! [`crate::ratelimit::Store::peek`]: a map read in memory, a read-only script in Redis), so
//! listing the catalog never spends a request, and listing it twice shows the same figure
//! (short of refill in between). The peeks of all models run concurrently, each bounded by the
//! rate-limit store timeout (`[rate_limit] timeout_ms`).
//!
//! `remaining` is `null` when there is no figure: the model is unlimited for the caller, or the
//! store could not be read (it failed, did not answer within the timeout, or its circuit breaker
//! is open). The catalog still answers 200 then; a failing store never fails the catalog, and a
//! peek neither trips nor resets the breaker. With the in-process store each authz replica
//! counts on its own, so the figure is that replica's (as its header would be).
//!
//! authz answers the catalog itself, inside the ext_authz check (`service.rs`, `response.rs`):
//! why, and what Envoy then counts, is in docs/policy-rollout.md ("What may I call?").

use serde::Serialize;

use crate::config::ModelConfig;
use crate::decision::Principal;
use crate::policy::PolicyEngine;
use crate::policy::access::{ACTIONS, Access};
use crate::ratelimit::{LimitTable, RateLimiter};
use crate::request::Action;

/// The catalog of one caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    /// The caller's principal id.
    pub principal: String,
    /// How it authenticated (`jwt`, `api_key`, `mtls`).
    pub auth_method: &'static str,
    /// The models it may call, by name.
    pub models: Vec<CatalogModel>,
}

/// One model the caller may run inference on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogModel {
    /// Model name, as in `/v2/models/{name}/infer`.
    pub name: String,
    /// `low`, `standard` or `restricted`.
    pub sensitivity: &'static str,
    /// Whether `infer` needs an `x-access-reason` header.
    pub reason_required: bool,
    /// Every action the caller may use on the model (`infer`, `ready`, `metadata`, ...).
    pub actions: Vec<&'static str>,
    /// The rate limit that applies to the caller on this model.
    pub rate_limit: CatalogLimit,
    /// Inference requests the caller could make right now; `null` when unlimited or when the
    /// rate-limit store could not be read (see the module docs).
    pub remaining: Option<u64>,
}

/// The configured limit that applies to a caller (the most generous of its roles' overrides,
/// else the model's own; `ratelimit::config::limits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogLimit {
    /// No limit at all.
    pub unlimited: bool,
    /// Requests per period (`null` when unlimited).
    pub rate: Option<u64>,
    /// The period as configured (`"60s"`).
    pub period: Option<String>,
    /// Requests admitted at once from a fresh start (defaults to `rate`).
    pub burst: Option<u64>,
    /// The role whose override applies, `null` for the model's own limit.
    pub role: Option<String>,
}

/// The catalog of `principal` under `policy` at `now` (Unix seconds), with the limits of
/// `limits` as configured in `models`. Pure: every `remaining` is `None` until
/// [`fill_remaining`] reads the store.
pub fn catalog(
    policy: &PolicyEngine,
    limits: &LimitTable,
    principal: &Principal,
    now: i64,
) -> Catalog {
    let models = policy
        .models()
        .iter()
        .filter_map(|(name, config)| {
            let infer = policy.access(principal, name, Action::Infer, now);
            if !infer.is_allowed() {
                return None;
            }
            let actions = ACTIONS
                .into_iter()
                .filter(|a| policy.access(principal, name, *a, now).is_allowed())
                .map(Action::as_str)
                .collect();
            Some(CatalogModel {
                name: name.clone(),
                sensitivity: config.sensitivity.as_str(),
                reason_required: infer == Access::AllowWithReason,
                actions,
                rate_limit: limit_of(limits, name, config, &principal.roles),
                remaining: None,
            })
        })
        .collect();
    Catalog {
        principal: principal.id.clone(),
        auth_method: principal.auth_method.as_str(),
        models,
    }
}

/// Sets each model's `remaining` in `catalog` (of `principal`) from read-only peeks of `limiter`
/// under `limits`, all models concurrently, each bounded by the store timeout; a model whose
/// quota cannot be read keeps `None` (see [`RateLimiter::remaining`]).
pub async fn fill_remaining(
    catalog: &mut Catalog,
    limiter: &RateLimiter,
    limits: &LimitTable,
    principal: &Principal,
) {
    let peeks = catalog
        .models
        .iter()
        .map(|m| limiter.remaining(limits, &principal.id, &m.name, &principal.roles));
    let remaining = futures::future::join_all(peeks).await;
    for (model, remaining) in catalog.models.iter_mut().zip(remaining) {
        model.remaining = remaining;
    }
}

/// The configured limit of `model` for a principal holding `roles`: the override
/// [`crate::ratelimit::ModelLimits::for_roles`] would apply, as written in the config.
fn limit_of(
    limits: &LimitTable,
    model: &str,
    config: &ModelConfig,
    roles: &[String],
) -> CatalogLimit {
    let role = limits.get(model).and_then(|l| l.winning_role(roles));
    let unlimited = CatalogLimit {
        unlimited: true,
        rate: None,
        period: None,
        burst: None,
        role: role.map(str::to_owned),
    };
    let Some(base) = config.rate_limit.as_ref() else {
        return unlimited;
    };
    let (rate, period, burst, is_unlimited) = match role.and_then(|r| base.roles.get(r)) {
        Some(o) => (o.rate, o.period.clone(), o.burst, o.unlimited),
        None => (base.rate, base.period.clone(), base.burst, base.unlimited),
    };
    if is_unlimited {
        return unlimited;
    }
    CatalogLimit {
        unlimited: false,
        rate,
        period,
        burst: burst.or(rate),
        role: role.map(str::to_owned),
    }
}
