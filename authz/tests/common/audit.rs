//! Audit test fixtures shared by the audit test files: a decision event, the files of an audit
//! directory in chain order, and line-level reads and writes for tampering.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use authz::audit::{AuditDecision, AuditEvent};

/// A denied, unauthenticated inference request; `n` makes its request id.
pub fn event(n: impl std::fmt::Display) -> AuditEvent {
    AuditEvent {
        decision_id: uuid::Uuid::now_v7(),
        request_id: Some(format!("req-{n}")),
        trace_id: None,
        principal: None,
        model: Some("resnet50".into()),
        version: None,
        action: "infer".into(),
        decision: AuditDecision::Deny,
        status: 401,
        reason: "unauthenticated".into(),
        policy_ids: vec![],
        access_reason: None,
        rate_limit: None,
        source_ip: Some("192.0.2.7".parse().unwrap()),
        latency: Duration::from_micros(80),
        request_time: None,
        shadow: None,
    }
}

/// The audit files of `dir`, oldest first: the rotated ones by number, then `audit.jsonl`.
pub fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.to_str().unwrap().parse::<u64>().is_ok())
        })
        .collect();
    rotated.sort();
    rotated.push(dir.join("audit.jsonl"));
    rotated
}

/// The lines of `path`, without their newlines.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Replaces `path` with `lines`, each ending in a newline.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}
