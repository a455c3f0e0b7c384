//! The one shape of a configuration problem, shared by every section (`[server]`, `[authn]`,
//! `[rate_limit]`, `[audit]`, models, Cedar policy files): where it is and what is wrong, so
//! `authz check-config` lists every problem of every section in one form.

use std::fmt;

/// One configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigProblem {
    /// Dotted field path (`models.x.rate_limit.period`) or file location
    /// (`policies/gateway.cedar:5:57`).
    pub path: String,
    /// What is wrong and, where useful, how to fix it.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Collects problems while a validator walks a section.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records a problem at `path`.
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(path, message));
    }

    /// Records problems found by another validator.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = ConfigProblem>) {
        self.0.extend(problems);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every problem recorded, in order.
    pub fn into_vec(self) -> Vec<ConfigProblem> {
        self.0
    }
}

/// Joins problems into one line (`a: x; b: y`) for errors that carry a list.
pub fn join(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join(&self.0))
    }
}

/// Principal and role ids: printable, no whitespace, bounded.
pub fn check_ident(p: &mut Problems, at: &str, s: &str) {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.add(
            at,
            format!("'{s}' must be 1-256 printable characters without whitespace"),
        );
    }
}

/// [`check_ident`] for each role of a list at `at`.
pub fn check_roles(p: &mut Problems, at: &str, roles: &[String]) {
    for (i, r) in roles.iter().enumerate() {
        check_ident(p, &format!("{at}[{i}]"), r);
    }
}
