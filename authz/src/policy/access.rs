//! The static view of a policy set: what a principal may do to each configured model, without
//! a request. `authz policy diff OLD NEW` compares two policy sets with it over the configured
//! principals (`[[principals]]`, API keys, mTLS identities), and `GET /v1/models` lists the
//! models a caller may call with it, so the catalog and the diff can never disagree.
//!
//! An access is decided as a check would be, by [`PolicyEngine::evaluate`], with an access
//! reason (to learn whether the action is possible at all) and, when that allows, without one
//! (to learn whether a reason is required). The context has no source address and the current
//! time: a policy that depends on the network or the clock is judged for a caller with no
//! known address, now.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{PolicyEngine, PolicyInput};
use crate::config::Config;
use crate::decision::{AuthMethod, Principal};
use crate::request::Action;

/// Every action a policy can be asked about, in the order reports list them.
pub const ACTIONS: [Action; 5] = [
    Action::Infer,
    Action::Ready,
    Action::Metadata,
    Action::Config,
    Action::Statistics,
];

/// The access reason used to ask "is this possible with a reason?" (policies may read the
/// text, so it is a fixed, recognisable value).
pub const PROBE_REASON: &str = "authz policy access probe";

/// What a principal may do to one model with one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "access", rename_all = "snake_case")]
pub enum Access {
    /// Allowed without an access reason.
    Allow,
    /// Allowed only with an access reason.
    AllowWithReason,
    /// Denied even with a reason, with the denial's reason code.
    Deny {
        /// The reason code of the denial (with a reason sent).
        code: String,
    },
}

impl Access {
    /// Whether the action is possible at all (with a reason if need be).
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Access::Deny { .. })
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Allow => f.write_str("allow"),
            Access::AllowWithReason => f.write_str("allow with reason"),
            Access::Deny { code } => write!(f, "deny ({code})"),
        }
    }
}

impl PolicyEngine {
    /// What `principal` may do to `model` with `action` at `now` (Unix seconds).
    pub fn access(&self, principal: &Principal, model: &str, action: Action, now: i64) -> Access {
        let input = |reason| PolicyInput {
            principal,
            model,
            version: None,
            action,
            access_reason: reason,
            source_ip: None,
            request_time: now,
        };
        let with_reason = self.evaluate(&input(Some(PROBE_REASON)));
        if !with_reason.reason.is_allow() {
            return Access::Deny {
                code: with_reason.reason.as_str().to_owned(),
            };
        }
        // Allowed with a reason and denied without one, whatever code the denial has
        // (usually `reason_required`): a reason is what it takes.
        if self.evaluate(&input(None)).reason.is_allow() {
            Access::Allow
        } else {
            Access::AllowWithReason
        }
    }

    /// The configured models, by name.
    pub fn models(&self) -> &BTreeMap<String, crate::config::ModelConfig> {
        &self.models
    }
}

/// A principal the config knows of, and how it authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownPrincipal {
    /// Principal id.
    pub id: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// `jwt` for `[[principals]]`, `api_key`, `mtls`.
    pub auth_method: String,
}

/// The principals of `config`: `[[principals]]` (as JWT callers), API keys and mTLS identities,
/// and, so that a role nobody holds yet still shows up, one `role:NAME` principal per role a
/// model allows. Duplicates (same id, roles and method) are listed once.
pub fn known_principals(config: &Config) -> Vec<KnownPrincipal> {
    let mut out: Vec<KnownPrincipal> = Vec::new();
    let mut add = |id: &str, roles: &[String], method: AuthMethod| {
        let p = KnownPrincipal {
            id: id.to_owned(),
            roles: roles.to_vec(),
            auth_method: method.as_str().to_owned(),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for p in &config.principals {
        add(&p.id, &p.roles, AuthMethod::Jwt);
    }
    for k in &config.authn.api_keys {
        add(&k.principal, &k.roles, AuthMethod::ApiKey);
    }
    for m in &config.authn.mtls {
        add(&m.principal, &m.roles, AuthMethod::Mtls);
    }
    let mut roles: Vec<&String> = config
        .models
        .values()
        .flat_map(|m| &m.allowed_roles)
        .collect();
    roles.sort();
    roles.dedup();
    for r in roles {
        add(
            &format!("role:{r}"),
            std::slice::from_ref(r),
            AuthMethod::Jwt,
        );
    }
    out
}

/// One difference between two policy sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessChange {
    /// Who.
    pub principal: KnownPrincipal,
    /// Which model.
    pub model: String,
    /// Which action.
    pub action: &'static str,
    /// Under the old policies.
    pub old: Access,
    /// Under the new policies.
    pub new: Access,
}

impl AccessChange {
    /// `gains`, `loses` or `changes` (both allow, or both deny, differently).
    pub fn direction(&self) -> &'static str {
        match (self.old.is_allowed(), self.new.is_allowed()) {
            (false, true) => "gains",
            (true, false) => "loses",
            _ => "changes",
        }
    }
}

/// Every (principal, model, action) whose access differs between `old` and `new`, in the order
/// principals, models and actions are listed.
pub fn diff(
    principals: &[KnownPrincipal],
    old: &PolicyEngine,
    new: &PolicyEngine,
    now: i64,
) -> Vec<AccessChange> {
    let mut changes = Vec::new();
    for kp in principals {
        let principal = Principal {
            id: kp.id.clone(),
            auth_method: AuthMethod::parse(&kp.auth_method).unwrap_or(AuthMethod::Jwt),
            roles: kp.roles.clone(),
        };
        for model in old.models.keys() {
            for action in ACTIONS {
                let (a, b) = (
                    old.access(&principal, model, action, now),
                    new.access(&principal, model, action, now),
                );
                if a != b {
                    changes.push(AccessChange {
                        principal: kp.clone(),
                        model: model.clone(),
                        action: action.as_str(),
                        old: a,
                        new: b,
                    });
                }
            }
        }
    }
    changes
}

/// The changes as an aligned text table, one line per change.
pub fn diff_table(changes: &[AccessChange]) -> String {
    let rows: Vec<[String; 6]> = changes
        .iter()
        .map(|c| {
            [
                c.direction().to_owned(),
                format!("{} ({})", c.principal.id, c.principal.auth_method),
                c.principal.roles.join(","),
                c.model.clone(),
                c.action.to_owned(),
                format!("{} -> {}", c.old, c.new),
            ]
        })
        .collect();
    super::table(
        &["", "PRINCIPAL", "ROLES", "MODEL", "ACTION", "OLD -> NEW"],
        &rows,
    )
}
