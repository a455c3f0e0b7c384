//! A model's rate limit (`[models.<name>.rate_limit]`) and its per-role overrides: the config
//! types, their validation into GCRA parameters, and which override applies to a principal.
//!
//! **Which override wins.** When a principal holds several roles that have overrides on a model,
//! the *most generous* of those overrides applies: `unlimited` first, then the highest sustained
//! rate (shortest emission interval), then the largest burst. The result does not depend on the
//! order of roles in a token or in the config, and granting a principal an extra role can never
//! lower its limit below that of a role it already has. A principal with no overridden role gets
//! the model's own limit; an override may be stricter than the model's limit (e.g. a `trial` role).
//!
//! **Why `on_store_error` defaults to `deny`.** This is a security gateway in front of scarce and
//! expensive GPUs: a rate limit that silently disappears whenever Redis does is a limit an
//! attacker (or a runaway client) can switch off by overloading Redis. Failing closed answers
//! `503` (Envoy passes it on; clients retry later), and the tight timeout plus the circuit breaker
//! make that answer immediate rather than slow. Models where availability matters more than the
//! limit (cheap models, internal health probes) can opt into `allow`; those decisions are counted
//! as made under degradation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;
use crate::config::duration::parse_duration;
use crate::ratelimit::gcra::{Gcra, GcraError};

/// What to decide when the store cannot be asked (timeout, connection failure, open breaker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Fail closed: deny with 503. The default, see the module docs for why.
    #[default]
    Deny,
    /// Fail open: admit without a limit (counted as a decision under degradation).
    Allow,
}

impl OnStoreError {
    /// `deny` or `allow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Allow => "allow",
        }
    }
}

/// A model's limit (`[models.<name>.rate_limit]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRateLimit {
    /// Requests per `period`, sustained. Required unless `unlimited`.
    #[serde(default)]
    pub rate: Option<u64>,
    /// The period `rate` is counted over: `<n>ms`, `<n>s`, `<n>m`, `<n>h` or `<n>d`.
    #[serde(default)]
    pub period: Option<String>,
    /// Requests admitted at once from a fresh start. Defaults to `rate`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Explicitly no limit. A model without a limit is a config error unless this is set.
    #[serde(default)]
    pub unlimited: bool,
    /// Decision when the store fails.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Per-role overrides, by role name.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleRateLimit>,
}

/// A per-role override of a model's limit (`[models.<name>.rate_limit.roles.<role>]`): a complete
/// limit of its own, nothing is inherited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRateLimit {
    /// Requests per `period`. Required unless `unlimited`.
    #[serde(default)]
    pub rate: Option<u64>,
    /// As [`ModelRateLimit::period`].
    #[serde(default)]
    pub period: Option<String>,
    /// Defaults to `rate`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// No limit for this role.
    #[serde(default)]
    pub unlimited: bool,
}

/// A limit after validation: either none at all, or GCRA parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Explicitly unlimited.
    Unlimited,
    /// Limited by these parameters.
    Limited(Gcra),
}

impl Limit {
    /// Ordering key for "most generous": unlimited, then shortest interval, then largest burst.
    pub(crate) fn generosity(&self) -> (bool, std::cmp::Reverse<u64>, u64) {
        match self {
            Self::Unlimited => (true, std::cmp::Reverse(0), u64::MAX),
            Self::Limited(g) => (false, std::cmp::Reverse(g.interval_us()), g.burst()),
        }
    }
}

/// Validates one (rate, period, burst, unlimited) set found at `path`.
fn build_limit(
    path: &str,
    rate: Option<u64>,
    period: Option<&str>,
    burst: Option<u64>,
    unlimited: bool,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Limit> {
    if unlimited {
        if rate.is_some() || period.is_some() || burst.is_some() {
            problems.push(ConfigProblem::new(
                format!("{path}.unlimited"),
                "unlimited = true cannot be combined with rate, period or burst",
            ));
            return None;
        }
        return Some(Limit::Unlimited);
    }
    let mut ok = true;
    if rate.is_none() {
        problems.push(ConfigProblem::new(
            format!("{path}.rate"),
            "missing: set rate and period, or unlimited = true",
        ));
        ok = false;
    }
    let period = match period.map(parse_duration) {
        None => {
            problems.push(ConfigProblem::new(
                format!("{path}.period"),
                "missing: set rate and period, or unlimited = true",
            ));
            ok = false;
            None
        }
        Some(Err(message)) => {
            problems.push(ConfigProblem::new(format!("{path}.period"), message));
            ok = false;
            None
        }
        Some(Ok(p)) => Some(p),
    };
    let (Some(rate), Some(period), true) = (rate, period, ok) else {
        return None;
    };
    match Gcra::new(rate, period, burst.unwrap_or(rate)) {
        Ok(g) => Some(Limit::Limited(g)),
        Err(e) => {
            let field = match e {
                GcraError::ZeroRate | GcraError::RateTooHigh { .. } => "rate",
                GcraError::ZeroPeriod => "period",
                GcraError::ZeroBurst | GcraError::CapacityTooLarge => "burst",
            };
            problems.push(ConfigProblem::new(format!("{path}.{field}"), e.to_string()));
            None
        }
    }
}

/// A model's limits after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimits {
    /// The limit for principals with no overridden role.
    pub base: Limit,
    /// Overrides by role name.
    pub roles: BTreeMap<String, Limit>,
    /// Decision when the store fails.
    pub on_store_error: OnStoreError,
}

impl ModelLimits {
    /// Validates a model's `rate_limit` table found at `path` (e.g. `models.resnet50.rate_limit`);
    /// `None` (no table) is an error, since every model must say its limit or `unlimited = true`.
    ///
    /// # Errors
    /// Every problem found, each with its field path.
    pub fn from_config(
        path: &str,
        config: Option<&ModelRateLimit>,
    ) -> Result<Self, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let Some(config) = config else {
            return Err(vec![ConfigProblem::new(
                path,
                "missing: every model needs a rate limit (rate and period) or unlimited = true",
            )]);
        };
        let base = build_limit(
            path,
            config.rate,
            config.period.as_deref(),
            config.burst,
            config.unlimited,
            &mut problems,
        );
        let mut roles = BTreeMap::new();
        for (role, o) in &config.roles {
            let role_path = format!("{path}.roles.{role}");
            if role.is_empty() {
                problems.push(ConfigProblem::new(
                    role_path.clone(),
                    "role name must not be empty",
                ));
            }
            if let Some(limit) = build_limit(
                &role_path,
                o.rate,
                o.period.as_deref(),
                o.burst,
                o.unlimited,
                &mut problems,
            ) {
                roles.insert(role.clone(), limit);
            }
        }
        match base {
            Some(base) if problems.is_empty() => Ok(Self {
                base,
                roles,
                on_store_error: config.on_store_error,
            }),
            _ => Err(problems),
        }
    }

    /// The limit for a principal holding `roles`: the most generous override among its roles, or
    /// the model's own limit when none of its roles has one (see the module docs).
    pub fn for_roles(&self, roles: &[String]) -> Limit {
        self.winning_role(roles)
            .and_then(|r| self.roles.get(r))
            .copied()
            .unwrap_or(self.base)
    }

    /// The role among `roles` whose override [`ModelLimits::for_roles`] applies, or `None` when
    /// the model's own limit does (what `GET /v1/models` reports as configured).
    pub fn winning_role<'a>(&self, roles: &'a [String]) -> Option<&'a str> {
        roles
            .iter()
            .filter_map(|r| self.roles.get(r).map(|l| (r.as_str(), l)))
            .max_by_key(|(_, l)| l.generosity())
            .map(|(r, _)| r)
    }
}

/// Validates a model's `rate_limit` table; see [`ModelLimits::from_config`].
pub fn validate_model_limit(path: &str, config: Option<&ModelRateLimit>) -> Vec<ConfigProblem> {
    ModelLimits::from_config(path, config)
        .err()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_generous_override_among_the_principals_roles_wins() {
        let config: ModelRateLimit = toml::from_str(
            r#"
            rate = 10
            period = "1m"
            [roles.trial]
            rate = 1
            period = "1m"
            [roles.premium]
            rate = 100
            period = "1m"
            burst = 5
            [roles.premium_burst]
            rate = 100
            period = "1m"
            burst = 50
            [roles.ops]
            unlimited = true
            "#,
        )
        .unwrap();
        let limits = ModelLimits::from_config("m", Some(&config)).unwrap();
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let burst = |l: Limit| match l {
            Limit::Limited(g) => g.burst(),
            Limit::Unlimited => u64::MAX,
        };
        assert_eq!(burst(limits.for_roles(&roles(&[]))), 10);
        assert_eq!(burst(limits.for_roles(&roles(&["unrelated"]))), 10);
        assert_eq!(
            burst(limits.for_roles(&roles(&["trial"]))),
            1,
            "an override may be stricter"
        );
        assert_eq!(burst(limits.for_roles(&roles(&["trial", "premium"]))), 5);
        assert_eq!(
            burst(limits.for_roles(&roles(&["premium_burst", "trial", "premium"]))),
            50
        );
        assert_eq!(
            limits.for_roles(&roles(&["premium", "ops"])),
            Limit::Unlimited
        );
    }
}
