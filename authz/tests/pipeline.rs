//! The whole decision pipeline with its stateful steps: rate limit (step 4) and audit (step 5)
//! composed with authentication and policy, as Envoy sees it over gRPC.

mod common;

use std::sync::Arc;

use arc_swap::ArcSwap;
use authz::metrics::Metrics;
use authz::runtime::Runtime;
use authz::service::AuthzService;
use common::*;

const TT: &str = "/v2/models/threat-triage/infer";
const BE: &str = "/v2/models/benchmark-echo/infer";

fn admin() -> String {
    token_for("admin-1", &["platform-admin", "security-engineer"])
}

/// Every decision record in the server's audit directory, in order.
fn audit_records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("audit"))
        .expect("the audit directory exists")
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|r| r["kind"] == "decision")
        .collect()
}

#[tokio::test]
async fn security_engineer_gets_twenty_triages_then_429_and_admin_is_unaffected() {
    let server = Server::start().await;
    for i in 0..20u64 {
        let ok = server
            .check(req(TT).bearer(&security()).reason("incident 7").build())
            .await;
        assert_eq!(ok.status, 200, "request {} of 20: {:?}", i + 1, ok.body);
        assert_eq!(ok.response_headers["ratelimit-limit"], "20");
        assert_eq!(
            ok.response_headers["ratelimit-remaining"],
            (19 - i).to_string()
        );
    }
    let limited = server
        .check(req(TT).bearer(&security()).reason("incident 7").build())
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.code, "rate_limited");
    let retry: u64 = limited.headers["retry-after"].parse().unwrap();
    // 20 per minute: the next slot opens 3 s after the burst was used.
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    assert!(limited.body["error"]["decision_id"].is_string());

    // Limits are per (principal, model): admin-1 still gets through.
    let admin_ok = server
        .check(req(TT).bearer(&admin()).reason("review").build())
        .await;
    assert_eq!(admin_ok.status, 200);

    let metrics = server.admin_get("/metrics").await.1;
    assert!(
        metrics.contains(
            r#"authz_ratelimit_outcomes_total{model="threat-triage",outcome="limited"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_decision_is_audited_with_its_id_and_the_chain_verifies() {
    let server = Server::start().await;
    let allowed = server
        .check(req(TT).bearer(&security()).reason("incident 9").build())
        .await;
    assert_eq!(allowed.status, 200);
    let denied = server
        .check(req(TT).bearer(&analyst()).reason("curious").build())
        .await;
    assert_eq!(denied.code, "role_not_allowed");

    let records = audit_records(server.dir.path());
    let allow_id = &allowed.headers["x-authz-decision-id"];
    let allow = records
        .iter()
        .find(|r| r["decision_id"] == allow_id.as_str())
        .expect("the allow has its record");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["principal"]["id"], "security-1");
    assert_eq!(allow["model"], "threat-triage");
    assert_eq!(allow["access_reason"], "incident 9");
    assert_eq!(allow["rate_limit"]["outcome"], "allowed");
    let deny_id = denied.body["error"]["decision_id"].as_str().unwrap();
    let deny = records
        .iter()
        .find(|r| r["decision_id"] == deny_id)
        .expect("the deny has its record");
    assert_eq!(deny["decision"], "deny");
    assert_eq!(deny["status"], 403);
    assert_eq!(deny["reason"], "role_not_allowed");
    // No credential ever reaches the evidence.
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&security()) && !text.contains("Bearer"));

    let files: Vec<_> = std::fs::read_dir(server.dir.path().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(
        authz::audit::verify::run_verify(&files),
        std::process::ExitCode::SUCCESS
    );
}

/// Builds the service in-process from the demo config with `edit` applied to its text.
async fn service_with(edit: impl FnOnce(String) -> String) -> (AuthzService, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    let metrics = Arc::new(Metrics::new());
    let rt = Runtime::load(&path, Arc::clone(&metrics))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let svc = AuthzService::start(Arc::new(ArcSwap::from_pointee(rt)), metrics)
        .expect("the decision pipeline starts");
    (svc, dir)
}

#[tokio::test]
async fn an_unwritable_audit_log_denies_with_503_audit_unavailable_never_allows() {
    // Every write to /dev/full fails with ENOSPC: no evidence, no access.
    let (svc, _dir) =
        service_with(|t| t.replace("path = \"audit/\"", "path = \"/dev/full\"")).await;
    for _ in 0..3 {
        let d = svc.decide(&req(BE).bearer(&analyst()).build()).await;
        assert_eq!(d.reason.as_str(), "audit_unavailable");
        assert_eq!(d.http_status(), 503);
        assert!(!d.allowed());
        assert!(d.response_headers.is_empty());
    }
    // A denial is still a denial (with the evidence-unavailable code).
    let d = svc.decide(&req(TT).bearer(&analyst()).build()).await;
    assert_eq!(d.http_status(), 503);
    // And the replica says it is not ready, so traffic goes where evidence can be written.
    let (status, body) = readyz(&svc).await;
    assert_eq!(status, 503);
    assert!(body.contains("audit log cannot be written"), "{body}");
}

/// GET /readyz from the admin router of `svc`'s readiness.
async fn readyz(svc: &AuthzService) -> (u16, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = authz::admin::AdminState {
        metrics: Arc::new(Metrics::new()),
        readiness: svc.readiness(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(authz::admin::serve_admin(listener, state, async {
        let _ = stopped.await;
    }));
    let resp = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    let out = (resp.status().as_u16(), resp.text().await.unwrap());
    let _ = stop.send(());
    let _ = server.await;
    out
}

#[tokio::test]
async fn a_dead_rate_limit_store_follows_each_models_on_store_error() {
    // Nothing listens on port 1; threat-triage fails closed (the default), benchmark-echo is
    // configured to fail open.
    let (svc, _dir) = service_with(|t| {
        t.replace(
            "timeout_ms = 50",
            "redis_url = \"redis://127.0.0.1:1\"\ntimeout_ms = 50",
        )
        .replace(
            "rate_limit = { rate = 120,",
            "rate_limit = { on_store_error = \"allow\", rate = 120,",
        )
    })
    .await;
    let started = std::time::Instant::now();
    let tt = svc
        .decide(&req(TT).bearer(&security()).reason("incident").build())
        .await;
    assert_eq!(tt.reason.as_str(), "rate_limit_unavailable");
    assert_eq!(tt.http_status(), 503);
    let be = svc.decide(&req(BE).bearer(&analyst()).build()).await;
    assert!(be.allowed(), "{:?}", be.reason);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn the_catalog_is_answered_by_authz_and_audited_as_a_list() {
    let server = Server::start().await;
    let listed = server
        .check(
            req("/v1/models")
                .method("GET")
                .api_key("demo-report-builder-key")
                .build(),
        )
        .await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["principal"], "report-builder");
    let names: Vec<&str> = listed.body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["benchmark-echo", "mission-summarizer"]);
    let unauthenticated = server.check(req("/v1/models").method("GET").build()).await;
    assert_eq!(unauthenticated.status, 401);
    // Only a read is the catalog: a POST is a path the gateway does not expose, and audited.
    let posted = server
        .check(req("/v1/models").api_key("demo-report-builder-key").build())
        .await;
    assert_eq!(posted.status, 403, "{:?}", posted.body);
    assert_eq!(posted.body["error"]["code"], "path_not_allowed");
    assert!(posted.body.get("models").is_none(), "{:?}", posted.body);

    let records = audit_records(server.dir.path());
    let posted_id = posted.body["error"]["decision_id"].as_str().unwrap();
    assert!(records.iter().any(|r| r["decision_id"] == posted_id));
    let id = &listed.headers["x-authz-decision-id"];
    let record = records
        .iter()
        .find(|r| r["decision_id"] == id.as_str())
        .expect("the catalog read has its record");
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["action"], "list");
    assert_eq!(record["principal"]["id"], "report-builder");
    assert!(record["model"].is_null(), "{record}");
    let id = unauthenticated.body["error"]["decision_id"]
        .as_str()
        .unwrap();
    assert!(records.iter().any(|r| r["decision_id"] == id));
}
