//! Step 3: may this principal do this to this model? Decided by Cedar.
//!
//! The entity model (see `config/policies/schema.cedarschema`):
//! - `Gateway::User` principals are members (`in`) of `Gateway::Role` entities, one per role their
//!   credential grants;
//! - `Gateway::Model` resources carry `sensitivity`, `requires_reason` and `allowed_roles` from the
//!   config and are members of `Gateway::ModelGroup`s;
//! - actions are `infer`, `ready`, `metadata`, `config`, `statistics`;
//! - the context carries `auth_method`, `has_access_reason`, `access_reason`, `model_version`,
//!   `request_time` (Unix seconds) and, when known, `source_ip` (an `ipaddr`).
//!
//! Every policy must carry a unique `@id`, which becomes its Cedar policy id, so decisions name the
//! policies that decided them. A `forbid` may carry `@reason("code")`; a denial by such a policy
//! has that reason code (`forbidden_by_policy` without one). A request that no `permit` allows is
//! `role_not_allowed` with no deciding policy, even when a `forbid` also matched, so the caller
//! learns the first thing to fix. A model not in the config is `unknown_model` before Cedar runs.
//! Evaluation errors deny (`policy_error`): Cedar skips an erroring policy, which for a `forbid`
//! would otherwise mean an allow.
//!
//! This module owns evaluation; `load` reads and validates the policies and builds the entities,
//! `memo` caches answers, `cases` runs policy authors' test cases, `access` answers "what may this
//! principal do?" (`authz policy diff`, `GET /v1/models`), `replay` decides the audit log's
//! decisions again with a candidate policy set (`authz policy replay`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
};

pub mod access;
pub mod cases;
mod load;
mod memo;
pub mod replay;

pub use load::valid_reason_code;

use crate::config::ModelConfig;
use crate::decision::{Principal, ReasonCode};
use crate::request::Action;

/// Everything a policy decision is about.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    /// The authenticated caller.
    pub principal: &'a Principal,
    /// The model name (from the path or gRPC message).
    pub model: &'a str,
    /// The model version, if named.
    pub version: Option<&'a str>,
    /// The action.
    pub action: Action,
    /// The trimmed access reason, if any.
    pub access_reason: Option<&'a str>,
    /// Client IP, if known.
    pub source_ip: Option<IpAddr>,
    /// Request time, Unix seconds.
    pub request_time: i64,
}

/// The policy step's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// `Allowed` or a deny code.
    pub reason: ReasonCode,
    /// `@id`s of the deciding policies.
    pub policies: Vec<String>,
    /// Explanation for the client.
    pub message: String,
}

struct PolicyMeta {
    reason: Option<ReasonCode>,
}

/// Which of the engine's policy sets to run.
#[derive(Clone, Copy)]
enum PolicySetKind {
    /// Every policy: the decision.
    All,
    /// Only the permits: "was this permitted at all?", to explain a denial.
    Permits,
}

/// A loaded, validated policy set with its entities.
pub struct PolicyEngine {
    policies: PolicySet,
    /// Only the `permit` policies: answers "was this permitted at all?" for denials.
    permits: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    /// Roles, model groups and models: everything but the per-request principal.
    base: Entities,
    models: BTreeMap<String, ModelConfig>,
    user_type: EntityTypeName,
    role_type: EntityTypeName,
    model_type: EntityTypeName,
    actions: HashMap<Action, EntityUid>,
    authorizer: Authorizer,
    /// Load-order position of each policy id.
    order: HashMap<String, usize>,
    /// Entity stores per principal (see `entities_for`); written on a miss, never held across an
    /// await.
    entity_cache: RwLock<HashMap<String, Arc<Entities>>>,
    /// The context attributes the policies read; only those are built and keyed on.
    reads: memo::ContextReads,
    /// Answers of `policies` and `permits` (see `memo`).
    memo: [memo::DecisionMemo; 2],
}

/// Cached principal entity stores; when full the cache is cleared (a cheap, hard bound).
const ENTITY_CACHE_ENTRIES: usize = 10_000;

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.meta.len())
            .field("models", &self.models.keys())
            .finish()
    }
}

impl PolicyEngine {
    /// Every reason code the loaded policies can produce (bounded; for metrics and docs).
    pub fn custom_reason_codes(&self) -> Vec<String> {
        self.meta
            .values()
            .filter_map(|m| m.reason.as_ref().map(|r| r.as_str().to_owned()))
            .collect()
    }

    /// Whether `name` is a configured model.
    pub fn has_model(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    /// Decides one request.
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> PolicyOutcome {
        self.decide(input, true)
    }

    /// [`PolicyEngine::evaluate`] with Cedar run every time (benchmarks compare the two).
    pub fn evaluate_uncached(&self, input: &PolicyInput<'_>) -> PolicyOutcome {
        self.decide(input, false)
    }

    fn decide(&self, input: &PolicyInput<'_>, memo: bool) -> PolicyOutcome {
        if !self.models.contains_key(input.model) {
            return PolicyOutcome {
                reason: ReasonCode::UnknownModel,
                policies: Vec::new(),
                message: format!("model '{}' is not configured", input.model),
            };
        }
        match self.cedar(PolicySetKind::All, input, memo) {
            Err(e) => error_outcome(e),
            Ok((CedarDecision::Allow, ids)) => PolicyOutcome {
                reason: ReasonCode::Allowed,
                policies: ids,
                message: "allowed".into(),
            },
            Ok((CedarDecision::Deny, forbids)) => self.explain_deny(input, forbids, memo),
        }
    }

    fn explain_deny(
        &self,
        input: &PolicyInput<'_>,
        forbids: Vec<String>,
        memo: bool,
    ) -> PolicyOutcome {
        let role_not_allowed = || PolicyOutcome {
            reason: ReasonCode::RoleNotAllowed,
            policies: Vec::new(),
            message: format!(
                "principal '{}' is not permitted to {} model '{}'",
                input.principal.id,
                input.action.as_str(),
                input.model
            ),
        };
        if forbids.is_empty() {
            return role_not_allowed();
        }
        match self.cedar(PolicySetKind::Permits, input, memo) {
            Err(e) => error_outcome(e),
            Ok((CedarDecision::Deny, _)) => role_not_allowed(),
            Ok((CedarDecision::Allow, _)) => {
                let reason = forbids
                    .iter()
                    .find_map(|id| {
                        self.meta
                            .get(&PolicyId::new(id))
                            .and_then(|m| m.reason.clone())
                    })
                    .unwrap_or(ReasonCode::ForbiddenByPolicy);
                let message = match &reason {
                    ReasonCode::ReasonRequired => format!(
                        "model '{}' requires an access reason: send the x-access-reason header",
                        input.model
                    ),
                    other => format!("denied by policy ({other}): {}", forbids.join(", ")),
                };
                PolicyOutcome {
                    reason,
                    policies: forbids,
                    message,
                }
            }
        }
    }

    /// Cedar on one of the engine's policy sets; with `memo`, answered from the memo when these
    /// inputs were decided before. Errors are never memoized.
    fn cedar(
        &self,
        kind: PolicySetKind,
        input: &PolicyInput<'_>,
        memo: bool,
    ) -> Result<(CedarDecision, Vec<String>), String> {
        let (policies, answers) = match kind {
            PolicySetKind::All => (&self.policies, &self.memo[0]),
            PolicySetKind::Permits => (&self.permits, &self.memo[1]),
        };
        if !memo {
            return self.run(policies, input);
        }
        let key = memo::key(input, &self.reads);
        if let Some(answer) = answers.get(&key) {
            return Ok(answer);
        }
        let answer = self.run(policies, input)?;
        answers.insert(key, answer.clone());
        Ok(answer)
    }

    /// Runs Cedar; returns the decision and the deciding policy ids in policy order.
    fn run(
        &self,
        set: &PolicySet,
        input: &PolicyInput<'_>,
    ) -> Result<(CedarDecision, Vec<String>), String> {
        let p = input.principal;
        let principal_uid =
            EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(&p.id));
        let entities = self.entities_for(p, &principal_uid)?;
        let context = self.context(input)?;
        let action = self
            .actions
            .get(&input.action)
            .cloned()
            .ok_or("unknown action")?;
        let resource =
            EntityUid::from_type_name_and_id(self.model_type.clone(), EntityId::new(input.model));
        let request = Request::new(principal_uid, action, resource, context, None)
            .map_err(|e| e.to_string())?;
        let resp = self.authorizer.is_authorized(&request, set, &entities);
        if let Some(e) = resp.diagnostics().errors().next() {
            return Err(e.to_string());
        }
        let mut ids: Vec<String> = resp
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        ids.sort_by_key(|id| self.order(id));
        Ok((resp.decision(), ids))
    }

    /// The request context: only the attributes the policies read (see `memo::ContextReads`).
    fn context(&self, input: &PolicyInput<'_>) -> Result<Context, String> {
        let p = input.principal;
        let reads = &self.reads;
        let mut ctx = Vec::with_capacity(6);
        let mut add = |name: &str, value: &dyn Fn() -> RestrictedExpression| {
            if reads.reads(name) {
                ctx.push((name.to_owned(), value()));
            }
        };
        add("auth_method", &|| {
            RestrictedExpression::new_string(p.auth_method.as_str().to_owned())
        });
        add("has_access_reason", &|| {
            RestrictedExpression::new_bool(input.access_reason.is_some())
        });
        add("access_reason", &|| {
            RestrictedExpression::new_string(input.access_reason.unwrap_or_default().to_owned())
        });
        add("model_version", &|| {
            RestrictedExpression::new_string(input.version.unwrap_or_default().to_owned())
        });
        add("request_time", &|| {
            RestrictedExpression::new_long(input.request_time)
        });
        if let Some(ip) = input.source_ip {
            add("source_ip", &|| {
                RestrictedExpression::new_ip(ip.to_string())
            });
        }
        Context::from_pairs(ctx).map_err(|e| e.to_string())
    }

    /// Position of a policy in load order, so deciding ids are listed deterministically.
    fn order(&self, id: &str) -> usize {
        self.order.get(id).copied().unwrap_or(usize::MAX)
    }

    /// The entity store for one principal: the shared roles/groups/models plus the principal as a
    /// member of its roles. Building one (transitive closure included) costs more than evaluating
    /// the policies, so stores are cached per (principal id, roles), bounded, for the lifetime of
    /// this policy engine (a reload starts a fresh cache).
    fn entities_for(&self, p: &Principal, uid: &EntityUid) -> Result<Arc<Entities>, String> {
        // Length-prefixed parts: no id/role text can make two different principals collide.
        let mut key = String::with_capacity(p.id.len() + 16 * (p.roles.len() + 1));
        for part in std::iter::once(&p.id).chain(&p.roles) {
            key.push_str(&part.len().to_string());
            key.push(':');
            key.push_str(part);
        }
        let cache = &self.entity_cache;
        if let Some(e) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(e));
        }
        let parents = p
            .roles
            .iter()
            .map(|r| EntityUid::from_type_name_and_id(self.role_type.clone(), EntityId::new(r)))
            .collect();
        let user = Entity::new_no_attrs(uid.clone(), parents);
        let entities = Arc::new(
            self.base
                .clone()
                .add_entities([user], None)
                .map_err(|e| e.to_string())?,
        );
        let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= ENTITY_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, Arc::clone(&entities));
        Ok(entities)
    }
}

/// An aligned text table: a header row, then `rows`, columns separated by two spaces.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(widths) {
            text.push_str(cell);
            text.push_str(&" ".repeat(w.saturating_sub(cell.chars().count()) + 2));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn error_outcome(e: String) -> PolicyOutcome {
    tracing::error!(error = %e, "policy evaluation failed; denying");
    PolicyOutcome {
        reason: ReasonCode::PolicyError,
        policies: Vec::new(),
        message: "policy evaluation failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigProblem, Sensitivity};
    use crate::decision::AuthMethod;

    const SCHEMA: &str = include_str!("../../config/policies/schema.cedarschema");
    const POLICIES: &str = include_str!("../../config/policies/gateway.cedar");

    fn engine(policies: &str) -> Result<PolicyEngine, Vec<ConfigProblem>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.cedarschema"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("p.cedar"), policies).unwrap();
        let models = BTreeMap::from([(
            "m".to_owned(),
            ModelConfig {
                allowed_roles: vec!["analyst".into()],
                requires_reason: true,
                sensitivity: Sensitivity::Restricted,
                groups: vec!["g".into()],
                rate_limit: None,
            },
        )]);
        PolicyEngine::load(
            &dir.path().join("s.cedarschema"),
            &[dir.path().join("p.cedar")],
            &models,
        )
    }

    fn input<'a>(p: &'a Principal, model: &'a str, reason: Option<&'a str>) -> PolicyInput<'a> {
        PolicyInput {
            principal: p,
            model,
            version: None,
            action: Action::Infer,
            access_reason: reason,
            source_ip: Some("10.0.0.1".parse().unwrap()),
            request_time: 1_700_000_000,
        }
    }

    fn user(roles: &[&str], m: AuthMethod) -> Principal {
        Principal {
            id: "u".into(),
            auth_method: m,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let policies = "@id(\"ok\")\npermit(principal, action, resource);\n\n@id(\"broken\")\npermit(principal, action, resource) when { context.x == };\n";
        let Err(problems) = engine(policies) else {
            panic!("a syntax error was accepted")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].path.ends_with("p.cedar:5:57"),
            "{:?}",
            problems[0]
        );
        assert!(
            problems[0]
                .message
                .starts_with("syntax: unexpected token `}`"),
            "{:?}",
            problems[0]
        );
    }

    #[test]
    fn shipped_policies_decide_with_ids_and_codes() {
        let e = engine(POLICIES).unwrap();
        let analyst = user(&["analyst"], AuthMethod::Jwt);
        let out = e.evaluate(&input(&analyst, "m", Some("case 7")));
        assert_eq!(out.reason, ReasonCode::Allowed);
        assert_eq!(out.policies, vec!["permit-configured-roles"]);
        let out = e.evaluate(&input(&analyst, "m", None));
        assert_eq!(out.reason, ReasonCode::ReasonRequired);
        assert_eq!(out.policies, vec!["reason-required-for-inference"]);
        let other = user(&["guest"], AuthMethod::Jwt);
        let out = e.evaluate(&input(&other, "m", None));
        assert_eq!(out.reason, ReasonCode::RoleNotAllowed);
        assert!(out.policies.is_empty());
        assert_eq!(
            e.evaluate(&input(&analyst, "nope", None)).reason,
            ReasonCode::UnknownModel
        );
        let key = user(&["analyst"], AuthMethod::ApiKey);
        let out = e.evaluate(&input(&key, "m", Some("r")));
        assert_eq!(
            out.reason.as_str(),
            "restricted_model_requires_user_identity"
        );
    }

    #[test]
    fn policies_without_id_or_with_bad_reason_are_rejected() {
        let errs = engine("permit(principal, action, resource);").unwrap_err();
        assert!(errs[0].message.contains("@id"), "{errs:?}");
        let errs = engine("@id(\"a\") @reason(\"Bad Code\") forbid(principal, action, resource);")
            .unwrap_err();
        assert!(errs[0].message.contains("@reason"), "{errs:?}");
        let errs = engine("@id(\"a\") permit(principal, action, resource);\n@id(\"a\") permit(principal, action, resource);").unwrap_err();
        assert!(errs[0].message.contains("duplicate"), "{errs:?}");
        let errs = engine("@id(\"a\") permit(principal, action, resource) when { resource.nope };")
            .unwrap_err();
        assert!(errs[0].message.contains("schema"), "{errs:?}");
    }

    #[test]
    fn cached_entities_never_mix_up_principals() {
        let e = engine(POLICIES).unwrap();
        let mk = |id: &str, roles: &[&str]| Principal {
            id: id.into(),
            auth_method: AuthMethod::Jwt,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let allowed = mk("x", &["analyst"]);
        assert_eq!(
            e.evaluate(&input(&allowed, "m", Some("r"))).reason,
            ReasonCode::Allowed
        );
        // Same id, different roles; and ids/roles that a naive concatenation would confuse.
        for p in [
            mk("x", &[]),
            mk("x", &["analys", "t"]),
            mk("xanalyst", &[]),
            mk("1:x8:analyst", &[]),
        ] {
            assert_eq!(
                e.evaluate(&input(&p, "m", Some("r"))).reason,
                ReasonCode::RoleNotAllowed,
                "{p:?}"
            );
        }
        assert_eq!(
            e.evaluate(&input(&allowed, "m", Some("r"))).reason,
            ReasonCode::Allowed
        );
    }

    #[test]
    fn forbid_without_reason_is_forbidden_by_policy() {
        let e = engine(
            "@id(\"p\") permit(principal, action, resource);\n@id(\"f\") forbid(principal, action, resource) when { context.auth_method == \"jwt\" };",
        )
        .unwrap();
        let out = e.evaluate(&input(&user(&[], AuthMethod::Jwt), "m", None));
        assert_eq!(out.reason, ReasonCode::ForbiddenByPolicy);
        assert_eq!(out.policies, vec!["f"]);
    }

    #[test]
    fn memoized_answers_follow_every_context_attribute_a_policy_reads() {
        let e = engine(
            "@id(\"p\") permit(principal, action, resource);\n@id(\"bad-reason\") forbid(principal, action, resource) when { context.access_reason == \"bad\" };\n@id(\"late\") forbid(principal, action, resource) when { context.request_time > 1700000000 };\n@id(\"net\") forbid(principal, action, resource) when { context has source_ip && context.source_ip.isInRange(ip(\"192.168.0.0/16\")) };",
        )
        .unwrap();
        let u = user(&[], AuthMethod::Jwt);
        let decide = |reason: &str, time: i64, ip: &str| {
            let mut i = input(&u, "m", Some(reason));
            i.request_time = time;
            i.source_ip = Some(ip.parse().unwrap());
            let memo = e.evaluate(&i);
            let fresh = e.evaluate_uncached(&i);
            assert_eq!(
                (&memo.reason, &memo.policies),
                (&fresh.reason, &fresh.policies)
            );
            memo.policies
        };
        let t = 1_700_000_000;
        for _ in 0..2 {
            assert_eq!(decide("good", t, "10.0.0.1"), vec!["p"]);
            assert_eq!(decide("bad", t, "10.0.0.1"), vec!["bad-reason"]);
            assert_eq!(decide("good", t + 1, "10.0.0.1"), vec!["late"]);
            assert_eq!(decide("good", t, "192.168.1.1"), vec!["net"]);
        }
    }

    #[test]
    fn memoized_and_fresh_evaluation_agree_on_the_shipped_policies() {
        let e = engine(POLICIES).unwrap();
        for roles in [&["analyst"][..], &[], &["guest", "analyst"]] {
            for m in [AuthMethod::Jwt, AuthMethod::ApiKey, AuthMethod::Mtls] {
                for reason in [None, Some("r")] {
                    let p = user(roles, m);
                    let i = input(&p, "m", reason);
                    for _ in 0..2 {
                        let (a, b) = (e.evaluate(&i), e.evaluate_uncached(&i));
                        assert_eq!((a.reason, a.policies), (b.reason, b.policies));
                    }
                }
            }
        }
    }
}
