//! `GET /v1/models`: "what may I call?" for the authenticated caller.
//!
//! The catalog lists the configured models the **active** policy lets the caller run inference
//! on — never the others — each with its sensitivity, whether `infer` needs an
//! `x-access-reason`, the other actions it may use, and the rate limit configured for the
//! caller's roles. Access is decided by [`PolicyEngine::access`], the code `authz policy diff`
//! uses, so the catalog and the diff cannot disagree (and neither can the catalog and a check,
//! short of a policy reading the source address or the access reason's text).
//!
//! **What it does not say.** `remaining` is always `null`: the limiter's stores
//! ([`crate::ratelimit::Store`]) only have an atomic check-and-consume, and a read that consumed a
//! token would make listing the catalog cost a call. A read-only peek needs a new store
//! operation (a `GET` of the GCRA key in Redis, a map read in memory); the `RateLimit-Remaining`
//! header of every inference response carries the exact figure meanwhile.
//!
//! authz answers the catalog itself, inside the ext_authz check (`service.rs`, `response.rs`):
//! why, and what Envoy then counts, is in docs/policy-rollout.md ("What may I call?").

use serde::Serialize;

use crate::config::ModelConfig;
use crate::decision::Principal;
use crate::policy::PolicyEngine;
use crate::policy::access::{ACTIONS, Access};
use crate::ratelimit::LimitTable;
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
    /// Requests left right now: always `null` (see the module docs).
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
/// `limits` as configured in `models`.
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
