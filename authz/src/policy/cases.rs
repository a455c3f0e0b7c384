//! `authz policy test`: run a file of cases through the configured policies.
//!
//! A cases file (TOML) is a list of `[[case]]` tables:
//!
//! ```toml
//! [[case]]
//! name = "analyst runs the summarizer with a reason"   # shown in mismatches
//! principal = "analyst-1"          # principal id
//! roles = ["analyst"]              # optional: default is the principal's roles in [[principals]]
//! auth_method = "jwt"              # optional: jwt (default) | api_key | mtls
//! model = "mission-summarizer"
//! action = "infer"                 # optional: infer (default) | ready | metadata | config | statistics
//! version = "1"                    # optional
//! reason = "case 4711"             # optional x-access-reason; blank counts as missing
//! expect = "allow"                 # allow | deny
//! code = "reason_required"         # optional: the expected reason code
//! ```
//!
//! Every case is evaluated exactly as `serve` would after authentication (unknown models included).

use std::path::Path;

use serde::Deserialize;

use super::{PolicyEngine, PolicyInput};
use crate::config::Config;
use crate::decision::{AuthMethod, Principal};
use crate::request::Action;

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The cases.
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

/// Expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Name shown in results.
    pub name: String,
    /// Principal id.
    pub principal: String,
    /// Roles; defaults to the principal's configured roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// `jwt` (default), `api_key` or `mtls`.
    #[serde(default)]
    pub auth_method: Option<String>,
    /// Model name.
    pub model: String,
    /// `infer` (default), `ready`, `metadata`, `config`, `statistics`.
    #[serde(default)]
    pub action: Option<String>,
    /// Model version.
    #[serde(default)]
    pub version: Option<String>,
    /// Access reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Expected decision.
    pub expect: Expect,
    /// Expected reason code.
    #[serde(default)]
    pub code: Option<String>,
}

/// Why a cases file could not be run.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// Unreadable file.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Not a valid cases file.
    #[error("{0}: {1}")]
    Parse(String, String),
}

/// Reads a cases file.
///
/// # Errors
/// [`CasesError`] when the file is unreadable or malformed.
pub fn read_cases(path: &Path) -> Result<CaseFile, CasesError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CasesError::Io(path.display().to_string(), e))?;
    toml::from_str(&text).map_err(|e| CasesError::Parse(path.display().to_string(), e.to_string()))
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// `None` when the case passed; otherwise what differed.
    pub mismatch: Option<String>,
}

/// Runs every case and reports each result.
pub fn run(config: &Config, engine: &PolicyEngine, cases: &CaseFile) -> Vec<CaseResult> {
    cases
        .cases
        .iter()
        .map(|c| CaseResult {
            name: c.name.clone(),
            mismatch: run_one(config, engine, c).err(),
        })
        .collect()
}

fn run_one(config: &Config, engine: &PolicyEngine, c: &Case) -> Result<(), String> {
    let roles = match &c.roles {
        Some(r) => r.clone(),
        None => config
            .principal_roles(&c.principal)
            .ok_or_else(|| {
                format!(
                    "principal '{}' is not in [[principals]]; give roles",
                    c.principal
                )
            })?
            .to_vec(),
    };
    let auth_method = match c.auth_method.as_deref() {
        None => AuthMethod::Jwt,
        Some(m) => AuthMethod::parse(m).ok_or_else(|| format!("unknown auth_method '{m}'"))?,
    };
    let action = match c.action.as_deref() {
        None => Action::Infer,
        Some(a) => Action::parse(a).ok_or_else(|| format!("unknown action '{a}'"))?,
    };
    let principal = Principal {
        id: c.principal.clone(),
        auth_method,
        roles,
    };
    let reason = c.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let out = engine.evaluate(&PolicyInput {
        principal: &principal,
        model: &c.model,
        version: c.version.as_deref(),
        action,
        access_reason: reason,
        source_ip: None,
        request_time: 0,
    });
    let got = if out.reason.is_allow() {
        Expect::Allow
    } else {
        Expect::Deny
    };
    let code_ok = c
        .code
        .as_deref()
        .is_none_or(|want| want == out.reason.as_str());
    if got == c.expect && code_ok {
        Ok(())
    } else {
        Err(format!(
            "expected {:?}{}, got {:?} ({}){}",
            c.expect,
            c.code
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            got,
            out.reason,
            if out.policies.is_empty() {
                String::new()
            } else {
                format!(" by [{}]", out.policies.join(", "))
            }
        ))
    }
}
