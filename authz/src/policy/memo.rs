//! Which request context the policies read, and a bounded memo of Cedar answers keyed on
//! exactly the inputs that can change them.
//!
//! A Cedar answer is a pure function of the policy set, the entity store, and the request
//! (principal, action, resource, context). Within one [`super::PolicyEngine`] the policies and
//! the model/role entities are fixed (a reload builds a new engine and a new memo), the
//! principal entity is determined by its id and roles, and the context by the attributes the
//! policies actually read. So the key is: principal id, roles, auth method, model, version,
//! action, and the value of every context attribute some policy reads — a policy that reads
//! `context.request_time` or `context.source_ip` makes those part of the key, and a policy
//! that uses `context` as a whole (not through `.attr` or `has`) makes all of it part of the key.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use cedar_policy::{Decision as CedarDecision, PolicySet};
use serde_json::Value;

use super::PolicyInput;

/// Entries kept before the memo is cleared (a cheap, hard bound, like the entity cache).
const MEMO_ENTRIES: usize = 10_000;

/// The context attributes some policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContextReads {
    /// `context` is used as a whole somewhere: every attribute matters.
    all: bool,
    attrs: BTreeSet<String>,
}

impl ContextReads {
    /// Walks the JSON form of every policy in `set`. A policy that cannot be rendered as JSON
    /// counts as reading everything.
    pub(crate) fn of(set: &PolicySet) -> Self {
        let mut reads = ContextReads {
            all: false,
            attrs: BTreeSet::new(),
        };
        for p in set.policies() {
            match p.to_json() {
                Ok(v) => reads.walk(&v),
                Err(_) => reads.all = true,
            }
        }
        reads
    }

    /// Whether the policies may read `attr` of the context.
    pub(crate) fn reads(&self, attr: &str) -> bool {
        self.all || self.attrs.contains(attr)
    }

    fn walk(&mut self, v: &Value) {
        match v {
            Value::Object(map) => {
                // `context.attr` is {".": {"left": {"Var": "context"}, "attr": "..."}},
                // `context has attr` is {"has": {...same...}}.
                for op in [".", "has"] {
                    if let Some(Value::Object(inner)) = map.get(op)
                        && is_context(inner.get("left"))
                        && let Some(Value::String(attr)) = inner.get("attr")
                    {
                        self.attrs.insert(attr.clone());
                        if map.len() == 1 {
                            return;
                        }
                    }
                }
                if map.get("Var").and_then(Value::as_str) == Some("context") {
                    self.all = true;
                    return;
                }
                map.values().for_each(|x| self.walk(x));
            }
            Value::Array(items) => items.iter().for_each(|x| self.walk(x)),
            _ => {}
        }
    }
}

fn is_context(v: Option<&Value>) -> bool {
    v.and_then(|v| v.get("Var")).and_then(Value::as_str) == Some("context")
}

/// Cedar answers for one policy set: decision and deciding policy ids.
#[derive(Default)]
pub(crate) struct DecisionMemo {
    /// Read by every check, written on a miss; never held across an await.
    entries: RwLock<HashMap<String, (CedarDecision, Vec<String>)>>,
}

impl DecisionMemo {
    pub(crate) fn get(&self, key: &str) -> Option<(CedarDecision, Vec<String>)> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: String, answer: (CedarDecision, Vec<String>)) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MEMO_ENTRIES {
            map.clear();
        }
        map.insert(key, answer);
    }
}

/// The memo key of `input` under `reads`. Every part is length-prefixed, so no id, role or
/// reason text can make two different inputs collide.
pub(crate) fn key(input: &PolicyInput<'_>, reads: &ContextReads) -> String {
    let p = input.principal;
    let mut key = String::with_capacity(96 + p.id.len() + 16 * p.roles.len());
    let mut part = |s: &str| {
        key.push_str(&s.len().to_string());
        key.push(':');
        key.push_str(s);
    };
    part(&p.id);
    part(p.auth_method.as_str());
    part(input.model);
    part(input.version.unwrap_or(""));
    part(input.action.as_str());
    part(&p.roles.len().to_string());
    for r in &p.roles {
        part(r);
    }
    if reads.reads("has_access_reason") {
        part(if input.access_reason.is_some() {
            "1"
        } else {
            "0"
        });
    }
    if reads.reads("access_reason") {
        part(input.access_reason.unwrap_or(""));
    }
    if reads.reads("request_time") {
        part(&input.request_time.to_string());
    }
    if reads.reads("source_ip") {
        part(&input.source_ip.map(|ip| ip.to_string()).unwrap_or_default());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn reads(src: &str) -> ContextReads {
        ContextReads::of(&PolicySet::from_str(src).unwrap())
    }

    #[test]
    fn attribute_reads_are_found_and_whole_context_means_everything() {
        let r = reads(
            "permit(principal, action, resource) when { context.auth_method == \"jwt\" && context has source_ip };",
        );
        assert!(r.reads("auth_method") && r.reads("source_ip"));
        assert!(!r.reads("request_time") && !r.reads("access_reason"));
        let r =
            reads("permit(principal, action, resource) when { context[\"request_time\"] > 0 };");
        assert!(r.reads("request_time") && !r.reads("source_ip"));
        let r = reads("permit(principal, action, resource) when { context == {} };");
        assert!(r.reads("request_time") && r.reads("anything"));
        let r = reads("permit(principal, action, resource);");
        assert!(!r.reads("auth_method"));
    }
}
