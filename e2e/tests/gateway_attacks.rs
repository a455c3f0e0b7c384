//! Issue 15, tried as an attacker would, through real Envoy with a raw HTTP/2 client: the model
//! that runs is the model authz authorized, on every path.
//!
//! authz decides on the first ~1 KiB of a gRPC message; the model server decodes all of it, and a
//! protobuf field given twice resolves to its last copy. Each attack below names an allowed model
//! in the inspected prefix and another model (or an empty name, another version) after it,
//! alone or with request trailers that forge the decision headers. Each is refused with
//! `PERMISSION_DENIED` before any model work: the model server's counters do not move, its
//! refusal metric and log name the decision, and a control request of the same shape that names
//! one model throughout runs, with its audit record naming the model that ran.

use bytes::Bytes;
use e2e::raw_grpc::{self, GrpcAnswer, field, frame, infer_inputs, padding};
use e2e::stack::{SharedStack, Stack};

static SERVICE: SharedStack = SharedStack::new(|| Stack::builder().redis(false));
static EMBEDDED: SharedStack = SharedStack::new(|| {
    Stack::builder()
        .redis(false)
        .embedded(e2e::workspace_module())
});

const ANALYST: &[&str] = &["analyst", "mission-user"];
const REASON: &str = "triage of the overnight field reports";
const SVC: &str = "/inference.GRPCInferenceService";

/// A `ModelInferRequest` naming `first` in its first bytes and `then` (when given) again past the
/// inspected prefix, with inputs for the model the server will decode.
fn infer_message(first: &str, then: Option<&str>) -> Vec<u8> {
    let mut m = Vec::new();
    field(&mut m, 1, first.as_bytes());
    padding(&mut m);
    if let Some(t) = then {
        field(&mut m, 1, t.as_bytes());
    }
    infer_inputs(then.unwrap_or(first), &mut m);
    m
}

/// A name-and-version request message (`ModelReady`, `ModelMetadata`, `ModelConfig`,
/// `ModelStatistics`): `first`, padding, then `then` as field `then_field` (1 name, 2 version).
fn name_message(first: &str, then: Option<(u64, &str)>) -> Vec<u8> {
    let mut m = Vec::new();
    field(&mut m, 1, first.as_bytes());
    padding(&mut m);
    if let Some((number, value)) = then {
        field(&mut m, number, value.as_bytes());
    }
    m
}

/// One gRPC call over its own h2c connection to Envoy: `path`, extra `headers`, the framed
/// `body`, and request `trailers` when given (which no gRPC library sends, and an attacker can).
fn call(
    stack: &Stack,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    trailers: &[(&str, &str)],
) -> GrpcAnswer {
    raw_grpc::call_once(stack.envoy_addr(), path, headers, body, trailers)
}

const OK: Option<u32> = Some(0);
const PERMISSION_DENIED: Option<u32> = Some(7);
const INTERNAL: Option<u32> = Some(13);

/// How a call naming a second model (or name) past 1 KiB is refused, by mode. Behind ext_authz,
/// authz decides on the first name and the model server refuses the mismatch
/// (`PERMISSION_DENIED` with `cause`); embedded, authz reads the whole message and refuses the
/// duplicate itself (`malformed_request`, which Envoy answers as gRPC `INTERNAL`), so nothing
/// goes upstream. Either way no model runs.
fn expect_second_name_refused(stack: &Stack, answer: &GrpcAnswer, what: &str, cause: &str) {
    let (status, code) = if stack.embedded() {
        (INTERNAL, "malformed_request")
    } else {
        (PERMISSION_DENIED, cause)
    };
    assert_eq!(answer.status, status, "{what}: {}", answer.message);
    assert!(answer.message.contains(code), "{what}: {}", answer.message);
}

/// The model server's refusals a mode expects for `n` second-name attacks: none embedded.
fn refused_upstream(stack: &Stack, n: f64) -> f64 {
    if stack.embedded() { 0.0 } else { n }
}

/// The forged decision an attacker sends as request trailers.
fn forged(model: &'static str, action: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-authz-model", model),
        ("x-authz-model-version", ""),
        ("x-authz-action", action),
        ("x-authz-principal", "admin-1"),
    ]
}

/// An `authorization` value for a fresh analyst token with subject `sub`.
fn analyst_bearer(stack: &Stack, sub: &str) -> String {
    format!("Bearer {}", stack.token(sub, ANALYST))
}

fn refusals(stack: &Stack, action: &str, cause: &str) -> f64 {
    let series =
        format!("modelserver_gateway_refusals_total{{action=\"{action}\",cause=\"{cause}\"}} ");
    stack
        .modelserver_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series}in the model server's metrics"))
}

/// What ran on the model server, over every model: requests seen and batch elements.
fn work(stack: &Stack) -> (f64, f64) {
    (
        stack.modelserver_requests_seen(),
        stack.modelserver_metric("nv_inference_count", None),
    )
}

/// The decision id Envoy forwarded for the request sent with `user_agent`, from its access log.
fn decision_id_of(stack: &Stack, user_agent: &str) -> String {
    let entry = stack.access_log_entry(user_agent).unwrap_or_else(|| {
        panic!(
            "no access-log entry for {user_agent}\n{}",
            stack.diagnostics()
        )
    });
    entry["decision_id"]
        .as_str()
        .filter(|d| !d.is_empty() && *d != "-")
        .unwrap_or_else(|| panic!("{user_agent}: no decision id in the access log: {entry}"))
        .to_string()
}

e2e::both_modes! {
    service: SERVICE, embedded: EMBEDDED;

fn a_second_model_name_past_the_inspected_prefix_with_forged_trailers_is_refused(stack: &Stack) {
    let auth = analyst_bearer(stack, "attacker-infer");
    let before = work(stack);
    let refused_before = refusals(stack, "infer", "model_mismatch");

    // The attack of the issue: benchmark-echo (allowed) in the prefix, threat-triage (forbidden
    // to analysts) after it, and the decision forged in request trailers.
    let agent = "attack-duplicate-name-trailers";
    let answer = call(
        stack,
        &format!("{SVC}/ModelInfer"),
        &[("authorization", &auth), ("user-agent", agent)],
        frame(&infer_message("benchmark-echo", Some("threat-triage"))),
        &forged("threat-triage", "infer"),
    );
    expect_second_name_refused(stack, &answer, agent, "model_mismatch");
    // The same without trailers, and into a model authz does not configure.
    for (agent, then) in [
        ("attack-duplicate-name", "threat-triage"),
        ("attack-unconfigured-model", "simple-fp32"),
        ("attack-mission-without-reason", "mission-summarizer"),
    ] {
        let answer = call(
            stack,
            &format!("{SVC}/ModelInfer"),
            &[("authorization", &auth), ("user-agent", agent)],
            frame(&infer_message("benchmark-echo", Some(then))),
            &[],
        );
        expect_second_name_refused(stack, &answer, agent, "model_mismatch");
    }
    assert_eq!(work(stack), before, "a refused call reached a model");
    assert_eq!(
        refusals(stack, "infer", "model_mismatch") - refused_before,
        refused_upstream(stack, 4.0)
    );
    if stack.embedded() {
        // authz saw both names and denied the message; the audit says so.
        let entry = stack
            .access_log_entry("attack-duplicate-name-trailers")
            .expect("an access-log entry");
        let id = entry["denied_decision_id"].as_str().expect("a denial's id");
        let record = stack.audit_record(id).expect("an audit record");
        assert_eq!(
            (&record["decision"], &record["reason"]),
            (&"deny".into(), &"malformed_request".into()),
            "{record}"
        );
        return;
    }

    // authz allowed benchmark-echo, and nothing ran: the model server logged the refusal with
    // the decision id that the audit holds.
    let id = decision_id_of(stack, "attack-duplicate-name-trailers");
    let record = stack.audit_record(&id).expect("an audit record");
    assert_eq!(
        (&record["decision"], &record["model"]),
        (&"allow".into(), &"benchmark-echo".into()),
        "{record}"
    );
    let logs = stack.modelserver_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(&id) && l.contains("model_mismatch")),
        "the model server's log names decision {id}:\n{logs}"
    );
}

fn the_same_shape_naming_one_model_runs_and_its_audit_names_what_ran(stack: &Stack) {
    let auth = analyst_bearer(stack, "control-infer");
    let echo_before = stack.modelserver_metric("nv_inference_count", Some("benchmark-echo"));
    // The same padding and a repeated name, both copies the same model; and forged trailers that
    // name another model, which change nothing: they never reach the check. Embedded, authz
    // reads the whole message and a repeated name is malformed however it repeats
    // (envoy-module/tests/envoy.rs): the control names the model once after the same padding.
    let repeated = (!stack.embedded()).then_some("benchmark-echo");
    for (agent, trailers) in [
        ("control-repeated-name", vec![]),
        ("control-forged-trailers", forged("threat-triage", "infer")),
    ] {
        let answer = call(
            stack,
            &format!("{SVC}/ModelInfer"),
            &[("authorization", &auth), ("user-agent", agent)],
            frame(&infer_message("benchmark-echo", repeated)),
            &trailers,
        );
        assert_eq!(
            answer.status,
            OK,
            "{agent}: {}\n{}",
            answer.message,
            stack.diagnostics()
        );
        let id = decision_id_of(stack, agent);
        let record = stack.audit_record(&id).expect("an audit record");
        assert_eq!(record["model"], "benchmark-echo", "{record}");
        assert_eq!(record["action"], "infer", "{record}");
    }
    assert_eq!(
        stack.modelserver_metric("nv_inference_count", Some("benchmark-echo")) - echo_before,
        2.0,
        "both control calls ran benchmark-echo"
    );
}

fn every_model_scoped_grpc_method_refuses_a_second_name_or_version(stack: &Stack) {
    let auth = analyst_bearer(stack, "attacker-metadata");
    let before = work(stack);
    // (method, action label of the refusal metric, second field, cause)
    let cases: &[(&str, &str, (u64, &str), &str)] = &[
        (
            "ModelReady",
            "ready",
            (1, "threat-triage"),
            "model_mismatch",
        ),
        (
            "ModelMetadata",
            "metadata",
            (1, "threat-triage"),
            "model_mismatch",
        ),
        (
            "ModelConfig",
            "config",
            (1, "threat-triage"),
            "model_mismatch",
        ),
        (
            "ModelStatistics",
            "statistics",
            (1, "threat-triage"),
            "model_mismatch",
        ),
        // A trailing empty name once made ModelStatistics answer for every model: now an
        // unscoped call, which no decision covers.
        ("ModelStatistics", "unscoped", (1, ""), "not_model_scoped"),
        ("ModelConfig", "config", (1, ""), "model_mismatch"),
        // A version authz never saw.
        ("ModelMetadata", "metadata", (2, "1"), "version_mismatch"),
        ("ModelConfig", "config", (2, "1"), "version_mismatch"),
    ];
    for (method, action, then, cause) in cases {
        let counted = refusals(stack, action, cause);
        let answer = call(
            stack,
            &format!("{SVC}/{method}"),
            &[("authorization", &auth)],
            frame(&name_message("benchmark-echo", Some(*then))),
            &forged("threat-triage", action),
        );
        let what = format!("{method} then {then:?}");
        if stack.embedded() && then.0 == 2 {
            // authz read the version and authorized exactly that one: it is what is served.
            assert_eq!(answer.status, OK, "{what}: {}", answer.message);
            continue;
        }
        expect_second_name_refused(stack, &answer, &what, cause);
        assert_eq!(
            refusals(stack, action, cause) - counted,
            refused_upstream(stack, 1.0),
            "{what}"
        );
    }
    // Control: each method naming one model answers.
    for method in [
        "ModelReady",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
    ] {
        let answer = call(
            stack,
            &format!("{SVC}/{method}"),
            &[("authorization", &auth)],
            frame(&name_message("benchmark-echo", None)),
            &[],
        );
        assert_eq!(answer.status, OK, "{method}: {}", answer.message);
    }
    assert_eq!(work(stack), before, "metadata calls run no model");
}

fn empty_names_are_refused_by_authz_before_the_model_server(stack: &Stack) {
    let auth = analyst_bearer(stack, "attacker-empty");
    let seen = stack.envoy_requests_to_modelserver();
    for method in ["ModelInfer", "ModelStatistics", "ModelConfig"] {
        let mut m = Vec::new();
        field(&mut m, 1, b"");
        let answer = call(
            stack,
            &format!("{SVC}/{method}"),
            &[("authorization", &auth)],
            frame(&m),
            &[],
        );
        assert_ne!(answer.status, OK, "{method}");
        assert!(
            answer.message.contains("malformed_request"),
            "{method}: {}",
            answer.message
        );
    }
    assert_eq!(stack.envoy_requests_to_modelserver(), seen);
}

fn repeated_or_empty_access_reasons_do_not_satisfy_the_reason_requirement(stack: &Stack) {
    let token = stack.token("reasonless-analyst", ANALYST);
    let auth = format!("Bearer {token}");
    let before = stack.modelserver_metric("nv_inference_count", Some("mission-summarizer"));
    let body = e2e::stack::demo_infer_body("mission-summarizer");
    let path = "/v2/models/mission-summarizer/infer";
    // Two copies of the header: Envoy once joined two blank ones into ",".
    for reasons in [
        vec!["", ""],
        vec![" ", " "],
        vec![REASON, REASON],
        vec![REASON, ""],
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(reasons.iter().map(|r| ("x-access-reason", *r)));
        let r = stack.request("POST", path, &headers, Some(body));
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (400, Some("malformed_request")),
            "{reasons:?}: {}",
            r.body
        );
    }
    // One copy that says nothing: separators, whitespace, invisible characters.
    for reason in [",", " , ; - ", "\u{200b}\u{200b}", "...", "\u{2063}"] {
        let r = stack.request(
            "POST",
            path,
            &[("authorization", &auth), ("x-access-reason", reason)],
            Some(body),
        );
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (403, Some("reason_required")),
            "{reason:?}: {}",
            r.body
        );
    }
    assert_eq!(
        stack.modelserver_metric("nv_inference_count", Some("mission-summarizer")),
        before
    );
    // Control: a real reason still works.
    let r = stack.infer(
        Some(&token),
        "mission-summarizer",
        Some(REASON),
        "reason-control",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The answer names the decision the audit holds.
    let id = r
        .header("x-authz-decision-id")
        .expect("the decision id in the answer");
    let record = stack.audit_record(id).expect("its audit record");
    assert_eq!(
        (&record["model"], &record["access_reason"]),
        (&"mission-summarizer".into(), &REASON.into()),
        "{record}"
    );
}
}

#[test]
fn the_model_server_refuses_model_calls_without_the_gateways_decision() {
    // Reaching the model server around Envoy (or through an Envoy whose ext_authz failed open)
    // gives no decision headers: every model-scoped call is refused, health still answers.
    let stack = SERVICE.lock();
    let ms = std::net::SocketAddr::from(([127, 0, 0, 1], stack.ports().modelserver_http));
    let before = work(&stack);
    let body = e2e::stack::demo_infer_body("benchmark-echo");
    // (method, path, headers, cause)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "POST",
            "/v2/models/benchmark-echo/infer",
            &[],
            "missing_decision",
        ),
        ("GET", "/v2/models/benchmark-echo", &[], "missing_decision"),
        ("GET", "/v2/models/stats", &[], "not_model_scoped"),
        ("POST", "/v2/repository/index", &[], "not_model_scoped"),
        // A decision for another action does not cover this one.
        (
            "POST",
            "/v2/models/benchmark-echo/infer",
            &[
                ("x-authz-model", "benchmark-echo"),
                ("x-authz-model-version", ""),
                ("x-authz-action", "metadata"),
            ],
            "action_mismatch",
        ),
    ];
    for (method, path, headers, cause) in cases {
        let r = e2e::stack::http_request(ms, method, path, headers, Some(body))
            .expect("the model server answers");
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.body.contains(cause), "{method} {path}: {}", r.body);
    }
    let (status, _) = e2e::http_get(ms, "/v2/health/ready").expect("health answers");
    assert_eq!(status, 200);
    assert_eq!(work(&stack), before);
}
