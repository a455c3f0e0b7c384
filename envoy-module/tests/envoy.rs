//! The module inside the real bootstrapped Envoy (docs/embedded.md): the gateway's own Envoy
//! config with ext_authz swapped for the module, in front of the real model server, answers the
//! demo principals exactly as the ext_authz service does, writes one audit record per decision
//! (and `authz audit verify` accepts the file), and survives clients that disconnect while their
//! request is paused for a decision.
//!
//! The test loads the module of this build (`cargo build -p envoy-module`, which `make build`
//! runs), found next to the test binary.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::raw_grpc;
use e2e::stack::{HttpResponse, Stack};

const ANALYST: &[&str] = &["analyst", "mission-user"];
const SECURITY: &[&str] = &["security-engineer", "mission-user"];
const REASON: &str = "triage of the overnight field reports";

/// `libauthz_module.so` of this build: cargo puts it in the test binary's `deps/` folder (and a
/// copy one level up).
fn module() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's folder");
    [deps, deps.parent().unwrap_or(deps)]
        .iter()
        .map(|d| d.join("libauthz_module.so"))
        .find(|p| p.is_file())
        .expect("libauthz_module.so next to the test binary (cargo test -p envoy-module builds it)")
}

/// What a client sees of an answer, minus what differs per decision (ids, dates).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    code: Option<String>,
    message: Option<String>,
    headers: Vec<(String, String)>,
    has_decision_id: bool,
}

/// The headers the gateway's answers must agree on, in both modes.
const COMPARED_HEADERS: [&str; 7] = [
    "content-type",
    "cache-control",
    "www-authenticate",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-policy",
];

fn seen(resp: &HttpResponse) -> Seen {
    let body = serde_json::from_str::<serde_json::Value>(&resp.body).ok();
    let field = |k: &str| {
        body.as_ref()
            .and_then(|b| b["error"][k].as_str())
            .map(str::to_owned)
    };
    let code = field("code");
    // How long to wait depends on when each stack ran: compared as present, not by value.
    let timed = code.as_deref() == Some("rate_limited");
    Seen {
        status: resp.status,
        message: field("message").filter(|_| !timed),
        code,
        headers: COMPARED_HEADERS
            .iter()
            .filter_map(|h| {
                let v = resp.header(h)?;
                let v = if *h == "retry-after" { "(set)" } else { v };
                Some(((*h).to_owned(), v.to_owned()))
            })
            .collect(),
        has_decision_id: resp.header("x-authz-decision-id").is_some(),
    }
}

/// The demo scenario's requests, in order: the answers compared, and how many decisions were
/// made (every request but the public one).
fn scenario(s: &Stack) -> (Vec<(String, HttpResponse)>, usize) {
    let analyst = s.token("analyst-1", ANALYST);
    let security = s.token("security-1", SECURITY);
    let mut out = vec![
        (
            "no credentials".to_owned(),
            s.infer(None, "mission-summarizer", None, "e-none"),
        ),
        (
            "analyst with a reason".to_owned(),
            s.infer(Some(&analyst), "mission-summarizer", Some(REASON), "e-ok"),
        ),
        (
            "analyst without a reason".to_owned(),
            s.infer(Some(&analyst), "mission-summarizer", None, "e-noreason"),
        ),
        (
            "analyst on threat-triage".to_owned(),
            s.infer(Some(&analyst), "threat-triage", Some(REASON), "e-role"),
        ),
        (
            "unknown model".to_owned(),
            s.infer(Some(&analyst), "no-such-model", Some(REASON), "e-unknown"),
        ),
        (
            "bad token".to_owned(),
            s.infer(
                Some("not-a-jwt"),
                "mission-summarizer",
                Some(REASON),
                "e-bad",
            ),
        ),
        (
            "public health path".to_owned(),
            s.request("GET", "/v2/health/ready", &[], None),
        ),
    ];
    // The security engineer's triage limit: the allows carry RateLimit-*, the first denial
    // Retry-After.
    let mut decisions = out.len() - 1;
    for i in 0..21 {
        decisions += 1;
        let resp = s.infer(Some(&security), "threat-triage", Some(REASON), "e-limit");
        if resp.status != 200 || i == 0 {
            out.push((format!("triage {i}"), resp));
            if out.last().is_some_and(|(_, r)| r.status == 429) {
                break;
            }
        }
    }
    (out, decisions)
}

#[test]
fn the_module_decides_like_the_service_audits_and_survives_cancelled_requests() {
    let module = module();
    // Both modes from one builder: in-process limits, audit on, the model server in its default
    // `gateway` mode (the module's allows leave out the empty `x-authz-model-version`, which the
    // model server reads as "no version").
    let builder = || Stack::builder().redis(false);
    let mut embedded = builder().embedded(&module).start();
    let logs = embedded.envoy_logs();
    assert!(
        logs.contains("Dynamic module ABI version v0.2.0 matched"),
        "the bootstrapped Envoy expects another ABI version than the module's v0.2.0:\n{logs}"
    );
    let (in_module, decisions) = scenario(&embedded);
    let service = builder().start();
    let (in_service, _) = scenario(&service);
    drop(service);

    let names: Vec<&str> = in_module.iter().map(|(n, _)| n.as_str()).collect();
    let service_names: Vec<&str> = in_service.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, service_names, "the same requests were answered");
    for ((what, m), (_, s)) in in_module.iter().zip(&in_service) {
        assert_eq!(
            seen(m),
            seen(s),
            "{what}: the module answered {m:?}, the service {s:?}\n{}",
            embedded.diagnostics()
        );
    }
    let statuses: Vec<u16> = in_module.iter().map(|(_, r)| r.status).collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&401) && statuses.contains(&429),
        "the scenario covers allow, 401 and 429: {statuses:?}"
    );

    // One audit record per decision (not for the public path), each denial's under its id.
    let records: Vec<serde_json::Value> = embedded
        .audit_records()
        .into_iter()
        .filter(|r| r.get("decision_id").is_some())
        .collect();
    assert_eq!(records.len(), decisions, "audit records: {records:#?}");
    for (what, resp) in &in_module {
        if let Some(id) = resp.header("x-authz-decision-id") {
            let record = embedded
                .audit_record(id)
                .unwrap_or_else(|| panic!("{what}: no audit record {id}"));
            assert_eq!(record["status"], resp.status, "{what}: {record}");
        }
    }

    // Clients that send a request and vanish while it is paused for its decision.
    let token = embedded.token("analyst-1", ANALYST);
    for _ in 0..50 {
        let mut c = TcpStream::connect(embedded.envoy_addr()).expect("connect to Envoy");
        let req = format!(
            "POST /v2/models/mission-summarizer/infer HTTP/1.1\r\nHost: gw\r\n\
             authorization: Bearer {token}\r\nx-access-reason: {REASON}\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        c.write_all(req.as_bytes()).expect("send the request");
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        embedded.envoy_running(),
        "Envoy died after cancelled requests:\n{}",
        embedded.diagnostics()
    );
    let after = embedded.infer(None, "mission-summarizer", None, "e-after");
    assert_eq!(after.status, 401, "Envoy still decides after cancellations");

    // The module's audit file verifies with the same tool as the service's.
    let audit = embedded.audit_path().expect("the stack has an audit file");
    let out = Command::new(e2e::workspace_binary("authz"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .expect("authz audit verify runs");
    assert!(
        out.status.success(),
        "authz audit verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One gRPC call over its own h2c connection to the stack's Envoy.
fn grpc_call(stack: &Stack, method: &str, auth: &str, body: bytes::Bytes) -> raw_grpc::GrpcAnswer {
    let path = format!("/inference.GRPCInferenceService/{method}");
    raw_grpc::call_once(
        stack.envoy_addr(),
        &path,
        &[("authorization", auth)],
        body,
        &[],
    )
}

/// A `ModelInferRequest` naming `first`, then padding past the 1 KiB ext_authz would see, then
/// `then` as a second `model_name` when given, then benchmark-echo's inputs.
fn infer_message(first: &str, then: Option<&str>) -> Vec<u8> {
    let mut m = Vec::new();
    raw_grpc::field(&mut m, 1, first.as_bytes());
    raw_grpc::padding(&mut m);
    if let Some(t) = then {
        raw_grpc::field(&mut m, 1, t.as_bytes());
    }
    raw_grpc::infer_inputs(first, &mut m);
    m
}

#[test]
fn grpc_is_decided_on_the_whole_first_message() {
    let stack = Stack::builder().redis(false).embedded(module()).start();
    let auth = format!("Bearer {}", stack.token("analyst-grpc", ANALYST));
    let malformed = |s: &Stack| {
        s.audit_records()
            .iter()
            .filter(|r| r["reason"] == "malformed_request")
            .count()
    };

    // One name, padded past the 1 KiB prefix: read whole, allowed, run.
    let ok = grpc_call(
        &stack,
        "ModelInfer",
        &auth,
        raw_grpc::frame(&infer_message("benchmark-echo", None)),
    );
    assert_eq!(
        ok.status,
        Some(0),
        "{}\n{}",
        ok.message,
        stack.diagnostics()
    );
    let seen = stack.envoy_requests_to_modelserver();

    // The duplicate-field attack: an allowed name first, another past 1 KiB (protobuf decoders
    // keep the last). ext_authz sees only the first and the model server refuses the mismatch;
    // the module sees both and refuses the message itself, before anything goes upstream. A
    // second copy of the same name, or of a version, is as malformed.
    let mut version_twice = Vec::new();
    raw_grpc::field(&mut version_twice, 1, b"benchmark-echo");
    raw_grpc::field(&mut version_twice, 2, b"1");
    raw_grpc::padding(&mut version_twice);
    raw_grpc::field(&mut version_twice, 2, b"2");
    for (what, message) in [
        (
            "another name past 1 KiB",
            infer_message("benchmark-echo", Some("threat-triage")),
        ),
        (
            "the same name twice",
            infer_message("benchmark-echo", Some("benchmark-echo")),
        ),
        ("a version twice", version_twice),
    ] {
        let answer = grpc_call(&stack, "ModelInfer", &auth, raw_grpc::frame(&message));
        assert_ne!(answer.status, Some(0), "{what}");
        assert!(
            answer.message.contains("malformed_request"),
            "{what}: {}",
            answer.message
        );
    }
    assert_eq!(malformed(&stack), 3, "each refusal is audited");

    // A message declared larger than the module reads (4 MiB) is refused unread, and audited.
    let mut huge = vec![0u8];
    huge.extend_from_slice(&(4 * 1024 * 1024 + 1u32).to_be_bytes());
    let mut head = Vec::new();
    raw_grpc::field(&mut head, 1, b"benchmark-echo");
    huge.extend_from_slice(&head);
    let answer = grpc_call(&stack, "ModelInfer", &auth, bytes::Bytes::from(huge));
    assert_ne!(answer.status, Some(0));
    assert!(
        answer.message.contains("malformed_request"),
        "{}",
        answer.message
    );
    assert_eq!(malformed(&stack), 4);
    assert_eq!(
        stack.envoy_requests_to_modelserver(),
        seen,
        "no refused message went upstream"
    );

    // A whole message over 1 MiB (the ext_authz configuration's buffer limit and HTTP/2 stream
    // window, which render_embedded.py raises) and within 4 MiB is read and run.
    let mut big = Vec::new();
    raw_grpc::field(&mut big, 1, b"benchmark-echo");
    raw_grpc::field(&mut big, 1000, &vec![b'p'; 2 * 1024 * 1024]);
    raw_grpc::infer_inputs("benchmark-echo", &mut big);
    let answer = grpc_call(&stack, "ModelInfer", &auth, raw_grpc::frame(&big));
    assert_eq!(answer.status, Some(0), "{}", answer.message);
}

/// Polls `what` every 100 ms for up to 15 s (the config is polled every 2 s).
fn eventually(what: &str, stack: &Stack, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 15 s\n{}",
            stack.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_module_reloads_its_config_keeps_it_on_an_invalid_change_and_serves_metrics() {
    let stack = Stack::builder().redis(false).embedded(module()).start();
    let admin = stack.authz_admin();
    assert_eq!(e2e::http_get(admin, "/readyz").map(|r| r.0).ok(), Some(200));
    let analyst = stack.token("analyst-reload", ANALYST);
    let no_reason = || {
        stack
            .infer(Some(&analyst), "mission-summarizer", None, "e-reload")
            .status
    };
    assert_eq!(no_reason(), 403, "mission-summarizer requires a reason");
    let metrics = stack.authz_metrics();
    assert!(
        metrics.contains(
            "authz_decisions_total{decision=\"deny\",reason=\"reason_required\",model=\"mission-summarizer\"} 1"
        ),
        "the module's decisions are counted on its admin port:\n{metrics}"
    );

    // An invalid change is rejected, counted, and the running configuration keeps deciding.
    let path = stack.authz_config_path().to_owned();
    let valid = std::fs::read_to_string(&path).expect("the authz config");
    std::fs::write(&path, format!("{valid}\n[models.broken]\nrate_limit = 7\n"))
        .expect("write the config");
    eventually("a rejected reload", &stack, || {
        stack
            .authz_metrics()
            .contains("authz_config_reloads_total{result=\"failure\"} 1")
    });
    assert_eq!(no_reason(), 403, "the running configuration is kept");

    // A valid change applies: the reason requirement is lifted.
    let mut config: toml::Table = toml::from_str(&valid).expect("the config is TOML");
    config["models"]["mission-summarizer"]["requires_reason"] = false.into();
    std::fs::write(&path, toml::to_string(&config).expect("TOML")).expect("write the config");
    eventually("a successful reload", &stack, || {
        stack
            .authz_metrics()
            .contains("authz_config_reloads_total{result=\"success\"} 1")
    });
    assert_eq!(no_reason(), 200, "the reloaded configuration decides");
}
