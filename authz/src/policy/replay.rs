//! `authz policy replay --policy CANDIDATE AUDIT...`: every policy decision in the audit log,
//! decided again by a candidate policy set, and what would have changed.
//!
//! A decision line is a *policy decision* when it names a principal, a model and a model action
//! (authentication failures, public and unexposed paths never reached policy and are skipped).
//! Its policy verdict is its reason code, except that `rate_limited`, `rate_limit_unavailable`
//! and `audit_unavailable` come after policy allowed, so their policy verdict is `allowed`.
//! The candidate sees exactly what the active policy saw: principal id, roles and auth method,
//! model, version, action, access reason, source address, and (schema version 3 on) the request
//! time. A record that lacks a fact the candidate reads cannot be evaluated and is named by its
//! `file:line`: a record from before schema version 3 when the candidate reads
//! `context.request_time`, or one whose access reason was cut to the audit cap when the candidate
//! reads `context.access_reason`. The rest are replayed.
//!
//! Order does not matter to the result (changes are counted), so files are read in the order of
//! their headers (`replica`, `file_seq`) for stable output, and a directory stands for the audit
//! files in it and in its replica subdirectories, as with `authz audit verify`. The chain is not
//! verified here: run `authz audit verify` for that.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PolicyEngine, PolicyInput};
use crate::audit::record::{KIND_DECISION, SCHEMA_VERSION_REQUEST_TIME};
use crate::audit::verify::{Location, VerifyError};
use crate::audit::{AuditDecision, AuditPrincipal};
use crate::decision::{AuthMethod, Principal, ReasonCode};
use crate::request::Action;

/// How many unevaluable records are named individually (the rest are counted).
const LISTED_UNEVALUABLE: usize = 20;

/// The members of a decision line that replay reads (others are ignored).
#[derive(Deserialize)]
struct ReplayLine {
    #[serde(default)]
    v: u32,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    principal: Option<AuditPrincipal>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    access_reason: Option<String>,
    #[serde(default)]
    access_reason_truncated: bool,
    #[serde(default)]
    source_ip: Option<IpAddr>,
    #[serde(default)]
    request_time: Option<i64>,
}

/// One kind of change, with how many records made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Principal id.
    pub principal: String,
    /// Model name.
    pub model: String,
    /// Action.
    pub action: String,
    /// The recorded policy decision.
    pub old_decision: AuditDecision,
    /// Its reason code.
    pub old_reason: String,
    /// The candidate's decision.
    pub new_decision: AuditDecision,
    /// Its reason code.
    pub new_reason: String,
    /// Records with this change.
    pub count: u64,
}

/// A record that could not be replayed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unevaluable {
    /// `file:line`.
    pub at: String,
    /// What is missing.
    pub why: String,
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Audit files read.
    pub files: usize,
    /// Decision records read.
    pub records: u64,
    /// Records that never reached policy (no principal, model or model action).
    pub not_policy: u64,
    /// Policy decisions replayed.
    pub evaluated: u64,
    /// Of those, decided differently by the candidate.
    pub changed: u64,
    /// Records that could not be replayed.
    pub unevaluable: u64,
    /// The first `LISTED_UNEVALUABLE` of them.
    pub unevaluable_records: Vec<Unevaluable>,
    /// Changes, most frequent first.
    pub changes: Vec<Change>,
}

impl ReplayReport {
    /// 0 no change, 1 changes, 2 some record could not be evaluated.
    pub fn exit_code(&self) -> u8 {
        if self.unevaluable > 0 {
            2
        } else if self.changed > 0 {
            1
        } else {
            0
        }
    }
}

/// Why replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An audit file or directory could not be read, or a file has no header.
    #[error(transparent)]
    Files(#[from] VerifyError),
    /// A read failed midway.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// (principal, model, action, old reason code, new reason code): the decisions follow from the
/// codes.
type ChangeKey = (String, String, String, ReasonCode, ReasonCode);

fn decision_of(code: &ReasonCode) -> AuditDecision {
    if code.is_allow() {
        AuditDecision::Allow
    } else {
        AuditDecision::Deny
    }
}

/// Replays every decision record in `paths` (files, or directories of audit files) against
/// `candidate`.
///
/// # Errors
/// [`ReplayError`] when a file cannot be listed or read (a line that is not a record is an
/// unevaluable record, not an error).
pub fn replay(candidate: &PolicyEngine, paths: &[PathBuf]) -> Result<ReplayReport, ReplayError> {
    let mut files = crate::audit::verify::read_headers(&crate::audit::verify::expand(paths)?)?;
    files.sort_by(|a, b| (&a.replica, a.file_seq, &a.path).cmp(&(&b.replica, b.file_seq, &b.path)));
    let mut replay = Replay {
        candidate,
        report: ReplayReport {
            files: files.len(),
            ..ReplayReport::default()
        },
        changes: HashMap::new(),
    };
    for f in &files {
        replay.file(&f.path)?;
    }
    let Replay {
        mut report,
        changes,
        ..
    } = replay;
    report.changes = changes
        .into_iter()
        .map(|((principal, model, action, old, new), count)| Change {
            principal,
            model,
            action,
            old_decision: decision_of(&old),
            old_reason: old.as_str().to_owned(),
            new_decision: decision_of(&new),
            new_reason: new.as_str().to_owned(),
            count,
        })
        .collect();
    report.changes.sort_by(|a, b| {
        (
            b.count,
            &a.principal,
            &a.model,
            &a.action,
            &a.old_reason,
            &a.new_reason,
        )
            .cmp(&(
                a.count,
                &b.principal,
                &b.model,
                &b.action,
                &b.old_reason,
                &b.new_reason,
            ))
    });
    Ok(report)
}

struct Replay<'a> {
    candidate: &'a PolicyEngine,
    report: ReplayReport,
    changes: HashMap<ChangeKey, u64>,
}

impl Replay<'_> {
    fn file(&mut self, path: &Path) -> Result<(), ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.to_owned(),
            source,
        };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
        let mut buf = Vec::with_capacity(4096);
        let mut line = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                return Ok(());
            }
            line += 1;
            if buf.last() != Some(&b'\n') {
                // A torn final line: its record was never acknowledged (see `audit verify`).
                return Ok(());
            }
            if let Err(why) = self.line(&buf) {
                self.unevaluable(path, line, why);
            }
        }
    }

    fn unevaluable(&mut self, path: &Path, line: u64, why: String) {
        self.report.unevaluable += 1;
        if self.report.unevaluable_records.len() < LISTED_UNEVALUABLE {
            let at = Location {
                path: path.to_owned(),
                line,
            };
            self.report.unevaluable_records.push(Unevaluable {
                at: at.to_string(),
                why,
            });
        }
    }

    /// Replays one line; `Err` says why it cannot be.
    fn line(&mut self, bytes: &[u8]) -> Result<(), String> {
        let r: ReplayLine =
            serde_json::from_slice(bytes).map_err(|e| format!("not an audit record: {e}"))?;
        if r.kind != KIND_DECISION {
            return Ok(());
        }
        self.report.records += 1;
        let (Some(p), Some(model), Some(action)) = (r.principal, r.model, Action::parse(&r.action))
        else {
            self.report.not_policy += 1;
            return Ok(());
        };
        let reads = &self.candidate.reads;
        let request_time = match r.request_time {
            Some(t) => t,
            None if reads.reads("request_time") => {
                return Err(if r.v < SCHEMA_VERSION_REQUEST_TIME {
                    format!(
                        "recorded with schema version {} (no request_time, added in version {SCHEMA_VERSION_REQUEST_TIME}) and the candidate reads context.request_time",
                        r.v
                    )
                } else {
                    "no request_time and the candidate reads context.request_time".to_owned()
                });
            }
            None => 0,
        };
        if r.access_reason_truncated && reads.reads("access_reason") {
            return Err(
                "the access reason was cut to the audit cap and the candidate reads context.access_reason"
                    .to_owned(),
            );
        }
        let auth_method = AuthMethod::parse(&p.auth_method)
            .ok_or_else(|| format!("unknown auth_method '{}'", p.auth_method))?;
        let old = ReasonCode::from_code(&r.reason);
        let old = if old.is_after_policy() {
            ReasonCode::Allowed
        } else {
            old
        };
        let principal = Principal {
            id: p.id,
            auth_method,
            roles: p.roles,
        };
        let new = self
            .candidate
            .evaluate(&PolicyInput {
                principal: &principal,
                model: &model,
                version: r.version.as_deref(),
                action,
                access_reason: r.access_reason.as_deref(),
                source_ip: r.source_ip,
                request_time,
            })
            .reason;
        self.report.evaluated += 1;
        if new != old {
            self.report.changed += 1;
            let key = (principal.id, model, action.as_str().to_owned(), old, new);
            *self.changes.entry(key).or_default() += 1;
        }
        Ok(())
    }
}

/// The report as text: the changes as a table, then the counts, then the unevaluable records.
pub fn report_text(report: &ReplayReport) -> String {
    let decision = |d: AuditDecision| match d {
        AuditDecision::Allow => "allow",
        AuditDecision::Deny => "deny",
    };
    let mut out = String::new();
    if !report.changes.is_empty() {
        let rows: Vec<[String; 5]> = report
            .changes
            .iter()
            .map(|c| {
                [
                    c.principal.clone(),
                    c.model.clone(),
                    c.action.clone(),
                    format!(
                        "{} ({}) -> {} ({})",
                        decision(c.old_decision),
                        c.old_reason,
                        decision(c.new_decision),
                        c.new_reason
                    ),
                    c.count.to_string(),
                ]
            })
            .collect();
        out.push_str(&super::table(
            &["PRINCIPAL", "MODEL", "ACTION", "OLD -> NEW", "COUNT"],
            &rows,
        ));
    }
    out.push_str(&format!(
        "{} file(s), {} decision record(s): {} replayed, {} changed, {} never reached policy, {} could not be evaluated\n",
        report.files,
        report.records,
        report.evaluated,
        report.changed,
        report.not_policy,
        report.unevaluable
    ));
    for u in &report.unevaluable_records {
        out.push_str(&format!("cannot evaluate {}: {}\n", u.at, u.why));
    }
    if report.unevaluable > report.unevaluable_records.len() as u64 {
        out.push_str(&format!(
            "... and {} more record(s) that cannot be evaluated\n",
            report.unevaluable - report.unevaluable_records.len() as u64
        ));
    }
    out
}
