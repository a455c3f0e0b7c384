//! Loading a policy engine: reading the schema and the policy files, checking every policy's
//! `@id` and `@reason`, validating against the schema, and building the entities (roles, model
//! groups, models) from the config. Every problem is reported at once, with its file and line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::RwLock;

use cedar_policy::{
    Authorizer, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use super::{PolicyEngine, PolicyMeta, memo};
use crate::config::{ConfigProblem, ModelConfig};
use crate::decision::ReasonCode;
use crate::request::Action;

/// Whether a custom reason code is well-formed: `[a-z][a-z0-9_]{0,63}`.
pub fn valid_reason_code(code: &str) -> bool {
    let mut b = code.bytes();
    matches!(b.next(), Some(b'a'..=b'z'))
        && code.len() <= 64
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn type_name(s: &str) -> Result<EntityTypeName, ConfigProblem> {
    EntityTypeName::from_str(s)
        .map_err(|e| ConfigProblem::new("policy", format!("entity type {s}: {e}")))
}

/// The policies read from the files: every policy, only the permits, and each one's annotations.
#[derive(Default)]
struct ReadPolicies {
    policies: PolicySet,
    permits: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
}

impl PolicyEngine {
    /// Loads the schema and policy files and builds the entities for `models`.
    ///
    /// # Errors
    /// Every problem found: unreadable files, syntax errors, validation errors against the schema,
    /// missing/duplicate `@id`, malformed `@reason`.
    pub fn load(
        schema_path: &Path,
        policy_paths: &[PathBuf],
        models: &BTreeMap<String, ModelConfig>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let schema = read_schema(schema_path, &mut problems);
        let mut read = ReadPolicies::default();
        for path in policy_paths {
            read.read_file(path, &mut problems);
        }
        let Some(schema) = schema else {
            return Err(problems);
        };
        if problems.is_empty() {
            let result =
                Validator::new(schema.clone()).validate(&read.policies, ValidationMode::Strict);
            for e in result.validation_errors() {
                problems.push(ConfigProblem::new(
                    "policy",
                    format!("does not match the schema: {e}"),
                ));
            }
        }
        let engine = Self::with_entities(&schema, read, models);
        match engine {
            Ok(engine) if problems.is_empty() => Ok(engine),
            Ok(_) => Err(problems),
            Err(e) => {
                problems.push(e);
                Err(problems)
            }
        }
    }

    /// Checks a parsed policy's annotations and gives it its `@id`.
    fn adopt(p: &Policy, loc: &str) -> Result<(Policy, PolicyMeta), ConfigProblem> {
        let Some(id) = p.annotation("id").filter(|s| !s.is_empty()) else {
            return Err(ConfigProblem::new(
                loc,
                format!("every policy needs an @id: {}", first_line(p)),
            ));
        };
        let reason = match p.annotation("reason") {
            None => None,
            Some(_) if p.effect() == cedar_policy::Effect::Permit => {
                return Err(ConfigProblem::new(
                    loc,
                    format!("@id(\"{id}\"): @reason is only for forbid policies"),
                ));
            }
            Some(code) if valid_reason_code(code) && !ReasonCode::from_code(code).is_allow() => {
                Some(ReasonCode::from_code(code))
            }
            Some(code) => {
                return Err(ConfigProblem::new(
                    loc,
                    format!(
                        "@id(\"{id}\"): @reason(\"{code}\") must match [a-z][a-z0-9_]{{0,63}} and not be an allow code"
                    ),
                ));
            }
        };
        Ok((p.new_id(PolicyId::new(id)), PolicyMeta { reason }))
    }

    fn with_entities(
        schema: &Schema,
        read: ReadPolicies,
        models: &BTreeMap<String, ModelConfig>,
    ) -> Result<Self, ConfigProblem> {
        let types = EntityTypes::new()?;
        let base = base_entities(schema, &types, models)?;
        let actions = [
            Action::Infer,
            Action::Ready,
            Action::Metadata,
            Action::Config,
            Action::Statistics,
        ]
        .into_iter()
        .map(|a| (a, types.uid(&types.action, a.as_str())))
        .collect();
        let ReadPolicies {
            policies,
            permits,
            meta,
        } = read;
        let order = policies
            .policies()
            .enumerate()
            .map(|(i, p)| (p.id().to_string(), i))
            .collect();
        Ok(PolicyEngine {
            order,
            entity_cache: RwLock::new(HashMap::new()),
            reads: memo::ContextReads::of(&policies),
            memo: Default::default(),
            policies,
            permits,
            meta,
            base,
            models: models.clone(),
            user_type: types.user,
            role_type: types.role,
            model_type: types.model,
            actions,
            authorizer: Authorizer::new(),
        })
    }
}

impl ReadPolicies {
    /// Reads one policy file into the sets; its problems go to `problems`.
    fn read_file(&mut self, path: &Path, problems: &mut Vec<ConfigProblem>) {
        let loc = path.display().to_string();
        let src = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                problems.push(ConfigProblem::new(&loc, format!("cannot read: {e}")));
                return;
            }
        };
        let set = match PolicySet::from_str(&src) {
            Ok(s) => s,
            Err(e) => {
                for (at, message) in syntax_errors(&src, &e) {
                    problems.push(ConfigProblem::new(
                        format!("{loc}:{at}"),
                        format!("syntax: {message}"),
                    ));
                }
                return;
            }
        };
        if set.templates().next().is_some() {
            problems.push(ConfigProblem::new(
                &loc,
                "policy templates are not supported",
            ));
        }
        for p in set.policies() {
            match PolicyEngine::adopt(p, &loc) {
                Err(e) => problems.push(e),
                Ok((policy, m)) => {
                    let id = policy.id().clone();
                    if self.meta.contains_key(&id) {
                        problems.push(ConfigProblem::new(&loc, format!("duplicate @id(\"{id}\")")));
                        continue;
                    }
                    if policy.effect() == cedar_policy::Effect::Permit {
                        // Ids are unique (checked above), so adding cannot fail.
                        let _ = self.permits.add(policy.clone());
                    }
                    let _ = self.policies.add(policy);
                    self.meta.insert(id, m);
                }
            }
        }
    }
}

/// Reads and parses the Cedar schema; `None` (with the problem recorded) when it cannot.
fn read_schema(path: &Path, problems: &mut Vec<ConfigProblem>) -> Option<Schema> {
    let loc = path.display().to_string();
    match std::fs::read_to_string(path) {
        Err(e) => {
            problems.push(ConfigProblem::new(&loc, format!("cannot read: {e}")));
            None
        }
        Ok(src) => match Schema::from_cedarschema_str(&src) {
            Ok((schema, _warnings)) => Some(schema),
            Err(e) => {
                problems.push(ConfigProblem::new(&loc, format!("invalid schema: {e}")));
                None
            }
        },
    }
}

/// The schema's entity types.
struct EntityTypes {
    user: EntityTypeName,
    role: EntityTypeName,
    model: EntityTypeName,
    group: EntityTypeName,
    action: EntityTypeName,
}

impl EntityTypes {
    fn new() -> Result<Self, ConfigProblem> {
        Ok(Self {
            user: type_name("Gateway::User")?,
            role: type_name("Gateway::Role")?,
            model: type_name("Gateway::Model")?,
            group: type_name("Gateway::ModelGroup")?,
            action: type_name("Gateway::Action")?,
        })
    }

    fn uid(&self, t: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
    }
}

/// Roles, model groups and models: every entity but the per-request principal.
fn base_entities(
    schema: &Schema,
    types: &EntityTypes,
    models: &BTreeMap<String, ModelConfig>,
) -> Result<Entities, ConfigProblem> {
    let mut roles = HashSet::new();
    let mut groups = HashSet::new();
    let mut entities = Vec::new();
    for (name, m) in models {
        roles.extend(m.allowed_roles.iter().cloned());
        groups.extend(m.groups.iter().cloned());
        let attrs = HashMap::from([
            (
                "sensitivity".to_owned(),
                RestrictedExpression::new_string(m.sensitivity.as_str().to_owned()),
            ),
            (
                "requires_reason".to_owned(),
                RestrictedExpression::new_bool(m.requires_reason),
            ),
            (
                "allowed_roles".to_owned(),
                RestrictedExpression::new_set(
                    m.allowed_roles
                        .iter()
                        .map(|r| RestrictedExpression::new_entity_uid(types.uid(&types.role, r))),
                ),
            ),
        ]);
        let parents = m
            .groups
            .iter()
            .map(|g| types.uid(&types.group, g))
            .collect();
        let e = Entity::new(types.uid(&types.model, name), attrs, parents)
            .map_err(|e| ConfigProblem::new(format!("models.{name}"), e.to_string()))?;
        entities.push(e);
    }
    entities.extend(
        roles
            .iter()
            .map(|r| Entity::with_uid(types.uid(&types.role, r))),
    );
    entities.extend(
        groups
            .iter()
            .map(|g| Entity::with_uid(types.uid(&types.group, g))),
    );
    Entities::from_entities(entities, Some(schema))
        .map_err(|e| ConfigProblem::new("models", format!("entities do not match the schema: {e}")))
}

fn first_line(p: &Policy) -> String {
    let s = p.to_string();
    s.lines()
        .find(|l| !l.trim_start().starts_with('@'))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Each error of a Cedar parse as (`line:column`, message), from the diagnostics' source spans
/// (1-based, columns in characters). An error without a span is placed at `1:1`.
fn syntax_errors(src: &str, errors: &cedar_policy::ParseErrors) -> Vec<(String, String)> {
    use miette::Diagnostic as _;
    errors
        .iter()
        .map(|e| {
            let offset = e
                .labels()
                .and_then(|mut labels| labels.next())
                .map_or(0, |l| l.offset());
            let (line, column) = line_column(src, offset);
            let mut message = e.to_string();
            if let Some(help) = e.help() {
                message.push_str(&format!(" ({help})"));
            }
            (format!("{line}:{column}"), message)
        })
        .collect()
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset.min(src.len())).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        assert_eq!(line_column("ab\ncé\nx", 6), (2, 3));
    }
}
