//! Rolling out a policy change: a shadow policy on live checks (audited, counted, never
//! deciding), `policy replay` of the audit log (rotated files, records from before the record
//! format carried every fact), and `policy diff` over the configured principals.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use authz::audit::{
    AuditConfig, AuditDecision, AuditEvent, AuditLog, AuditMetrics, AuditPrincipal, verify,
};
use authz::config::Config;
use authz::policy::PolicyEngine;
use authz::policy::access::{self, Access};
use authz::policy::replay::{self, ReplayReport};
use common::{Server, analyst, req, security};

fn shipped_policies() -> String {
    std::fs::read_to_string(common::config_dir().join("policies/gateway.cedar")).unwrap()
}

/// The shipped policies plus a `forbid` that takes the summarizer away from analysts.
fn with_forbid() -> String {
    format!(
        "{}\n@id(\"summarizer-moves-to-security\")\n@reason(\"model_retired_for_role\")\nforbid (principal in Gateway::Role::\"analyst\", action, resource == Gateway::Model::\"mission-summarizer\");\n",
        shipped_policies()
    )
}

/// The shipped policies with the `analyst` role removed from every model.
fn without_analysts() -> String {
    shipped_policies().replace(
        "when { principal in resource.allowed_roles };",
        "when { principal in resource.allowed_roles && !(principal in Gateway::Role::\"analyst\") };",
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the demo config with `[policy] shadow = shadow`.
async fn server_with_shadow(shadow: &Path) -> Server {
    let line = format!("shadow = \"{}\"\n", shadow.display());
    Server::start_editing("", move |text| {
        text.replacen("[policy]\n", &format!("[policy]\n{line}"), 1)
    })
    .await
}

fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// analyst-1 runs the summarizer with a reason: allowed by the shipped policies.
async fn analyst_summarizes(server: &Server) -> common::Outcome {
    server
        .check(
            req("/v2/models/mission-summarizer/infer")
                .bearer(&analyst())
                .reason("case 7")
                .build(),
        )
        .await
}

fn audit_records(server: &Server) -> Vec<authz::audit::AuditRecord> {
    verify::read_decision_records(&[server.dir.path().join("audit")]).unwrap()
}

#[tokio::test]
async fn a_shadow_forbid_is_audited_and_counted_and_never_changes_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = write(dir.path(), "candidate.cedar", &with_forbid());
    let server = server_with_shadow(&shadow).await;

    let allowed = analyst_summarizes(&server).await;
    assert_eq!(
        allowed.status, 200,
        "the active policy decides: {allowed:?}"
    );
    let agreed = server
        .check(
            req("/v2/models/threat-triage/infer")
                .bearer(&security())
                .reason("incident 9")
                .build(),
        )
        .await;
    assert_eq!(agreed.status, 200);

    let records = audit_records(&server);
    assert_eq!(records.len(), 2);
    let shadow = records[0]
        .shadow
        .as_ref()
        .expect("the disagreement is audited");
    assert_eq!(records[0].decision, AuditDecision::Allow);
    assert_eq!(shadow.decision, AuditDecision::Deny);
    assert_eq!(shadow.reason, "model_retired_for_role");
    assert_eq!(shadow.policy_ids, vec!["summarizer-moves-to-security"]);
    assert!(records[0].request_time.is_some());
    assert_eq!(records[1].shadow, None, "agreement leaves no trace");

    let (_, text) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "authz_policy_shadow_disagreements_total{active=\"allow\",shadow=\"deny\",model=\"mission-summarizer\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "authz_policy_shadow_loads_total{result=\"success\"}"),
        Some(1.0)
    );
    // The chain with version 3 members still verifies.
    verify::verify_files(&[server.dir.path().join("audit")]).unwrap();
}

#[tokio::test]
async fn a_malformed_shadow_is_counted_and_live_decisions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = write(
        dir.path(),
        "candidate.cedar",
        "@id(\"broken\") permit(principal, action, resource) when { context.x == };",
    );
    let server = server_with_shadow(&shadow).await;
    let out = analyst_summarizes(&server).await;
    assert_eq!(out.status, 200);
    assert_eq!(audit_records(&server)[0].shadow, None);
    let (_, text) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(&text, "authz_policy_shadow_loads_total{result=\"failure\"}"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_shadow_edited_into_a_broken_file_is_dropped_on_reload_and_comes_back_when_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = write(dir.path(), "candidate.cedar", &with_forbid());
    let server = server_with_shadow(&shadow).await;
    assert!(server.runtime.load().shadow.is_some());

    std::fs::write(
        &shadow,
        "@id(\"x\") permit(principal, action, resource) when {",
    )
    .unwrap();
    authz::runtime::reload(&server.config, &server.runtime, &server.metrics)
        .await
        .expect("a broken shadow never fails the reload of the live configuration");
    assert!(server.runtime.load().shadow.is_none());
    assert_eq!(analyst_summarizes(&server).await.status, 200);

    std::fs::write(&shadow, with_forbid()).unwrap();
    authz::runtime::reload(&server.config, &server.runtime, &server.metrics)
        .await
        .unwrap();
    assert!(server.runtime.load().shadow.is_some());
    assert_eq!(analyst_summarizes(&server).await.status, 200);
    let records = audit_records(&server);
    assert_eq!(records[0].shadow, None, "recorded while the shadow was off");
    assert_eq!(
        records[1].shadow.as_ref().map(|s| s.reason.as_str()),
        Some("model_retired_for_role")
    );
    let (_, text) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(&text, "authz_policy_shadow_loads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "authz_policy_shadow_loads_total{result=\"success\"}"),
        Some(2.0)
    );
}

/// The demo config (for its schema, models and principals) in `dir`.
fn demo_config(dir: &Path) -> Config {
    Config::load(&common::write_config(dir, "")).unwrap()
}

fn engine(config: &Config, policy: &Path) -> PolicyEngine {
    PolicyEngine::load(
        &config.policy.schema,
        std::slice::from_ref(&policy.to_path_buf()),
        &config.models,
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn event(principal: &str, roles: &[&str], model: &str, reason: &str) -> AuditEvent {
    AuditEvent {
        decision_id: uuid::Uuid::now_v7(),
        request_id: None,
        trace_id: None,
        principal: Some(AuditPrincipal {
            id: principal.into(),
            auth_method: "jwt".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }),
        model: Some(model.into()),
        version: None,
        action: "infer".into(),
        decision: if reason == "allowed" || reason == "rate_limited" {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        },
        status: 200,
        reason: reason.into(),
        policy_ids: vec![],
        access_reason: Some("case 7".into()),
        rate_limit: None,
        source_ip: None,
        latency: Duration::from_micros(100),
        request_time: Some(1_700_000_000),
        shadow: None,
    }
}

/// Writes `n` analyst decisions (and `n` security ones) through the real writer, rotating often.
async fn write_log(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let config = AuditConfig {
        path: dir.to_owned(),
        max_file_bytes: 4096,
        ..AuditConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let log = AuditLog::start(&config, AuditMetrics::new(&mut registry)).unwrap();
    for i in 0..n {
        let reason = if i % 2 == 0 {
            "allowed"
        } else {
            "rate_limited"
        };
        log.append(event(
            "report-builder",
            &["analyst"],
            "mission-summarizer",
            reason,
        ))
        .await
        .unwrap();
        log.append(event(
            "security-1",
            &["security-engineer"],
            "threat-triage",
            "allowed",
        ))
        .await
        .unwrap();
    }
    drop(log);
}

#[tokio::test]
async fn replay_over_rotated_files_counts_what_a_removed_role_would_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let audit = dir.path().join("audit");
    write_log(&audit, 20).await;
    let files = std::fs::read_dir(&audit).unwrap().count();
    assert!(files > 2, "the log rotated: {files} files");

    let same = engine(
        &config,
        &common::config_dir().join("policies/gateway.cedar"),
    );
    let report = replay::replay(&same, std::slice::from_ref(&audit)).unwrap();
    assert_eq!((report.records, report.evaluated), (40, 40), "{report:?}");
    assert_eq!(report.exit_code(), 0, "{report:?}");

    let candidate = engine(&config, &write(dir.path(), "c.cedar", &without_analysts()));
    let report = replay::replay(&candidate, std::slice::from_ref(&audit)).unwrap();
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.changed, 20, "{report:?}");
    let [change] = &report.changes[..] else {
        panic!("{report:?}")
    };
    assert_eq!(
        (
            change.principal.as_str(),
            change.model.as_str(),
            change.action.as_str()
        ),
        ("report-builder", "mission-summarizer", "infer")
    );
    assert_eq!(
        (change.old_decision, change.old_reason.as_str()),
        (AuditDecision::Allow, "allowed"),
        "rate_limited means policy allowed"
    );
    assert_eq!(
        (change.new_decision, change.new_reason.as_str()),
        (AuditDecision::Deny, "role_not_allowed")
    );
    assert_eq!(change.count, 20);
    let text = replay::report_text(&report);
    assert!(
        text.contains("allow (allowed) -> deny (role_not_allowed)  20"),
        "{text}"
    );
}

/// A file as authz wrote it before schema version 3: no `request_time` on decision lines.
fn version_2_file(path: &Path) {
    let header = r#"{"v":2,"kind":"header","seq":0,"time":"2026-01-01T00:00:00.000000000Z","file_seq":0,"writer":"authz/0.1.0","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"x"}"#;
    let record = r#"{"v":2,"kind":"decision","seq":1,"time":"2026-01-01T00:00:00.000000000Z","decision_id":"0190f5a2-0000-7000-8000-000000000001","request_id":null,"trace_id":null,"principal":{"id":"report-builder","auth_method":"jwt","roles":["analyst"]},"model":"mission-summarizer","version":null,"action":"infer","decision":"allow","status":200,"reason":"allowed","policy_ids":["permit-configured-roles"],"access_reason":"case 7","access_reason_truncated":false,"rate_limit":null,"source_ip":null,"latency_us":90,"prev_hash":"x","hash":"y"}"#;
    std::fs::write(path, format!("{header}\n{record}\n")).unwrap();
}

#[tokio::test]
async fn replay_of_records_from_before_request_time_says_which_cannot_be_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let old = dir.path().join("old.jsonl");
    version_2_file(&old);

    // A candidate that does not read the time: the old record replays.
    let candidate = engine(&config, &write(dir.path(), "c.cedar", &without_analysts()));
    let report: ReplayReport = replay::replay(&candidate, std::slice::from_ref(&old)).unwrap();
    assert_eq!((report.evaluated, report.changed), (1, 1), "{report:?}");
    assert_eq!(report.exit_code(), 1);

    // One that does: the record is named, and the exit says "cannot evaluate".
    let timed = format!(
        "{}\n@id(\"no-night-work\")\n@reason(\"outside_hours\")\nforbid (principal, action, resource) when {{ context.request_time < 0 }};\n",
        shipped_policies()
    );
    let candidate = engine(&config, &write(dir.path(), "t.cedar", &timed));
    let report = replay::replay(&candidate, std::slice::from_ref(&old)).unwrap();
    assert_eq!(report.exit_code(), 2, "{report:?}");
    assert_eq!(report.unevaluable, 1);
    assert_eq!(
        report.unevaluable_records[0].at,
        format!("{}:2", old.display())
    );
    assert!(
        report.unevaluable_records[0]
            .why
            .contains("schema version 2"),
        "{report:?}"
    );
}

#[tokio::test]
async fn diff_names_who_loses_what_and_a_malformed_candidate_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    let old = engine(
        &config,
        &common::config_dir().join("policies/gateway.cedar"),
    );
    let new = engine(&config, &write(dir.path(), "f.cedar", &with_forbid()));
    let principals = access::known_principals(&config);
    let changes = access::diff(&principals, &old, &new, common::now() as i64);
    assert!(!changes.is_empty());
    for c in &changes {
        assert_eq!(c.model, "mission-summarizer", "{c:?}");
        assert!(c.principal.roles.iter().any(|r| r == "analyst"), "{c:?}");
        assert_eq!(c.direction(), "loses");
        assert_eq!(
            c.new,
            Access::Deny {
                code: "model_retired_for_role".into()
            }
        );
    }
    let infer = changes
        .iter()
        .find(|c| c.principal.id == "analyst-1" && c.action == "infer")
        .expect("analyst-1 loses inference on the summarizer");
    assert_eq!(infer.old, Access::AllowWithReason);
    let table = access::diff_table(&changes);
    assert!(table.contains("analyst-1 (jwt)"), "{table}");

    let malformed = write(
        dir.path(),
        "m.cedar",
        "permit(principal, action, resource);",
    );
    let problems = PolicyEngine::load(
        &config.policy.schema,
        std::slice::from_ref(&malformed),
        &config.models,
    )
    .unwrap_err();
    assert!(problems[0].message.contains("@id"), "{problems:?}");
}
