//! Faults on the request path, each on a stack of its own: authz, the model server or Redis is
//! killed while Envoy keeps serving, and the gateway must fail closed (authz), fail visibly with
//! evidence (model server) or follow each model's `on_store_error` (Redis), then recover. The
//! model server and Redis cases run in both authz modes (`_embedded`: the module inside Envoy).

use std::time::{Duration, Instant};

use e2e::stack::{HttpResponse, Stack, StackBuilder};

const ANALYST: &[&str] = &["analyst", "mission-user"];
const ADMIN: &[&str] = &["platform-admin", "security-engineer"];
const REASON: &str = "triage of the overnight field reports";

fn show(resp: &HttpResponse) -> String {
    format!("{} {:?} {}", resp.status, resp.headers, resp.body)
}

#[test]
fn authz_stopped_fails_closed_with_503_and_recovers() {
    let mut stack = Stack::builder().redis(false).audit(false).start();
    let token = stack.token("fault-analyst", ANALYST);
    let resp = stack.infer(Some(&token), "benchmark-echo", None, "authz-up");
    assert_eq!(resp.status, 200, "before the fault: {}", show(&resp));

    stack.stop_authz();
    let sent = stack.envoy_requests_to_modelserver();
    let seen = stack.modelserver_requests_seen();
    // Right after the crash (connection refused) and once Envoy's health check has noticed.
    for phase in ["authz-just-killed", "authz-marked-unhealthy"] {
        if phase == "authz-marked-unhealthy" {
            stack.wait_cluster_unhealthy("authz");
        }
        for model in ["benchmark-echo", "mission-summarizer"] {
            let ua = format!("{phase}-{model}");
            let resp = stack.infer(Some(&token), model, Some(REASON), &ua);
            assert_eq!(
                resp.status,
                503,
                "{phase} {model}: {}\n{}",
                show(&resp),
                stack.diagnostics()
            );
            let entry = stack
                .access_log_entry(&ua)
                .unwrap_or_else(|| panic!("no access-log entry for {ua}"));
            assert!(
                entry["upstream_host"].is_null() || entry["upstream_host"] == "-",
                "{ua} was forwarded: {entry}"
            );
        }
    }
    assert_eq!(
        stack.envoy_requests_to_modelserver(),
        sent,
        "Envoy forwarded without a decision"
    );
    assert_eq!(
        stack.modelserver_requests_seen(),
        seen,
        "the model server saw a request"
    );
    // Health probes do not depend on authz (ext_authz is off on those routes).
    let resp = stack.request("GET", "/v2/health/ready", &[], None);
    assert_eq!(resp.status, 200, "health with authz down: {}", show(&resp));

    stack.start_authz();
    let resp = stack.infer(Some(&token), "benchmark-echo", None, "authz-back");
    assert_eq!(resp.status, 200, "after authz restarted: {}", show(&resp));
}

/// Needs the audit log (issue 7) in authz.
#[test]
fn modelserver_stopped_is_503_and_the_audit_still_shows_the_decision() {
    modelserver_stopped(Stack::builder().redis(false).audit(true));
}

/// The same with the authz module inside Envoy (issue 18).
#[test]
fn modelserver_stopped_is_503_and_the_audit_still_shows_the_decision_embedded() {
    modelserver_stopped(
        Stack::builder()
            .redis(false)
            .audit(true)
            .embedded(e2e::workspace_module()),
    );
}

fn modelserver_stopped(builder: StackBuilder) {
    let mut stack = builder.start();
    let token = stack.token("fault-analyst-ms", ANALYST);
    let resp = stack.infer(Some(&token), "mission-summarizer", Some(REASON), "ms-up");
    assert_eq!(resp.status, 200, "before the fault: {}", show(&resp));

    stack.stop_modelserver();
    for phase in ["ms-just-killed", "ms-marked-unhealthy"] {
        if phase == "ms-marked-unhealthy" {
            stack.wait_cluster_unhealthy("modelserver_http");
        }
        let resp = stack.infer(Some(&token), "mission-summarizer", Some(REASON), phase);
        assert_eq!(
            resp.status,
            503,
            "{phase}: {}\n{}",
            show(&resp),
            stack.diagnostics()
        );
        // Envoy's own answer, in the gateway's error shape.
        assert_eq!(
            resp.error_code().as_deref(),
            Some("upstream_unavailable"),
            "{phase}: {}",
            show(&resp)
        );
        // The access log carries authz's decision id (a request header Envoy forwarded); the
        // audit record with that id shows the allow that preceded the failed upstream call.
        let entry = stack
            .access_log_entry(phase)
            .unwrap_or_else(|| panic!("no access-log entry for {phase}\n{}", stack.diagnostics()));
        let decision_id = entry["decision_id"]
            .as_str()
            .filter(|d| !d.is_empty() && *d != "-")
            .unwrap_or_else(|| panic!("{phase}: no decision id in the access log: {entry}"))
            .to_string();
        let record = stack.audit_record(&decision_id).unwrap_or_else(|| {
            panic!(
                "{phase}: no audit record for decision {decision_id}; audit: {:?}\n{}",
                stack.audit_records(),
                stack.diagnostics()
            )
        });
        assert_eq!(record["decision"], "allow", "{record}");
        assert_eq!(record["model"], "mission-summarizer", "{record}");
        assert_eq!(record["principal"]["id"], "fault-analyst-ms", "{record}");
        assert_eq!(record["access_reason"], REASON, "{record}");
    }
    // Denials do not depend on the model server, and leave evidence too: the decision id in
    // the error body names the audit record.
    let resp = stack.infer(
        Some(&token),
        "threat-triage",
        Some(REASON),
        "ms-down-denied",
    );
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (403, Some("role_not_allowed")),
        "{}",
        show(&resp)
    );
    let denied_id = resp.json()["error"]["decision_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no decision_id in the error body: {}", show(&resp)))
        .to_string();
    let record = stack
        .audit_record(&denied_id)
        .unwrap_or_else(|| panic!("no audit record for the denial {denied_id}"));
    assert_eq!(
        (&record["decision"], &record["status"], &record["reason"]),
        (&"deny".into(), &403.into(), &"role_not_allowed".into()),
        "{record}"
    );

    // The evidence is intact: the hash chain verifies.
    let audit = stack.audit_path().expect("this stack has an audit log");
    let verify = std::process::Command::new(stack.authz_bin())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .expect("authz audit verify runs");
    assert!(
        verify.status.success(),
        "authz audit verify {}:\n{}{}",
        audit.display(),
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    stack.start_modelserver();
    let resp = stack.infer(Some(&token), "mission-summarizer", Some(REASON), "ms-back");
    assert_eq!(
        resp.status,
        200,
        "after the model server restarted: {}",
        show(&resp)
    );
}

/// What a model's `on_store_error` is in the generated config: `models.M.rate_limit.on_store_error`
/// or `models.M.on_store_error`, else the documented default `deny`.
fn on_store_error(config: &toml::Table, model: &str) -> String {
    let m = &config["models"][model];
    m.get("rate_limit")
        .and_then(|r| r.get("on_store_error"))
        .or_else(|| m.get("on_store_error"))
        .and_then(toml::Value::as_str)
        .unwrap_or("deny")
        .to_string()
}

/// Needs the rate limiter (issue 6) in authz. benchmark-echo is set to `on_store_error =
/// "allow"` (when the demo config gives models a `rate_limit` table); every other demo model keeps
/// its configured policy.
#[test]
fn redis_stopped_follows_each_models_on_store_error_and_recovers() {
    redis_stopped(Stack::builder().redis(true).audit(false));
}

/// The same with the authz module inside Envoy (issue 18).
#[test]
fn redis_stopped_follows_each_models_on_store_error_and_recovers_embedded() {
    redis_stopped(
        Stack::builder()
            .redis(true)
            .audit(false)
            .embedded(e2e::workspace_module()),
    );
}

fn redis_stopped(mut builder: StackBuilder) {
    let template: toml::Table = toml::from_str(
        &std::fs::read_to_string(e2e::repo_root().join("config/authz.toml"))
            .expect("config/authz.toml exists"),
    )
    .expect("config/authz.toml is TOML");
    if template["models"]["benchmark-echo"]
        .get("rate_limit")
        .is_some()
    {
        builder = builder.authz_setting("models.benchmark-echo.rate_limit.on_store_error", "allow");
    }
    let mut stack = builder.start();
    let config = stack.authz_config();
    let token = stack.token("fault-admin-redis", ADMIN);
    let models = ["benchmark-echo", "mission-summarizer", "threat-triage"];
    for model in models {
        let resp = stack.infer(
            Some(&token),
            model,
            Some(REASON),
            &format!("redis-up-{model}"),
        );
        assert_eq!(
            resp.status,
            200,
            "{model} before the fault: {}",
            show(&resp)
        );
    }

    stack.stop_redis();
    let mut deny_models = Vec::new();
    for model in models {
        let policy = on_store_error(&config, model);
        let ua = format!("redis-down-{model}");
        let started = Instant::now();
        let resp = stack.infer(Some(&token), model, Some(REASON), &ua);
        let took = started.elapsed();
        match policy.as_str() {
            "allow" => assert_eq!(resp.status, 200, "{model} (allow): {}", show(&resp)),
            "deny" => {
                assert_eq!(
                    resp.status,
                    503,
                    "{model} (deny): {}\n{}",
                    show(&resp),
                    stack.diagnostics()
                );
                assert!(
                    resp.error_code().is_some(),
                    "{model}: no error code: {}",
                    show(&resp)
                );
                let entry = stack.access_log_entry(&ua).expect("access-log entry");
                assert!(
                    entry["upstream_host"].is_null() || entry["upstream_host"] == "-",
                    "{model} was forwarded: {entry}"
                );
                deny_models.push(model);
            }
            other => panic!("{model}: unexpected on_store_error {other:?}"),
        }
        // The store timeout is tens of milliseconds; a dead Redis must not stall checks.
        assert!(
            took < Duration::from_secs(2),
            "{model}: took {took:?} with Redis down"
        );
    }

    stack.start_redis();
    // Limiting (and so allowing) resumes by itself once Redis is back.
    for model in deny_models {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = stack.infer(
                Some(&token),
                model,
                Some(REASON),
                &format!("redis-back-{model}"),
            );
            if resp.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{model} still {} 5 s after Redis came back\n{}",
                show(&resp),
                stack.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
