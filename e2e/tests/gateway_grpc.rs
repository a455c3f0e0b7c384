//! OIP gRPC through Envoy with the unmodified `tritonclient` (Python, from the bootstrap venv):
//! authz decides on the model named inside the ModelInfer message (under ext_authz Envoy hands it
//! the start of the body; the module reads the whole first message), so an allowed model works
//! and a forbidden one is PERMISSION_DENIED, and nothing denied reaches the model server. In both
//! modes (`e2e::both_modes!`).

use e2e::stack::{SharedStack, Stack};
use serde_json::{Value, json};

static SERVICE: SharedStack = SharedStack::new(|| Stack::builder().redis(false).audit(false));
static EMBEDDED: SharedStack = SharedStack::new(|| {
    Stack::builder()
        .redis(false)
        .audit(false)
        .embedded(e2e::workspace_module())
});

const ANALYST: &[&str] = &["analyst", "mission-user"];
const REASON: &str = "triage of the overnight field reports";

e2e::both_modes! {
    service: SERVICE, embedded: EMBEDDED;

fn tritonclient_grpc_is_authorized_on_the_model_in_the_message(stack: &Stack) {
    let analyst = stack.token("grpc-analyst", ANALYST);
    let triage_before = stack.modelserver_metric("nv_inference_count", Some("threat-triage"));
    let summary_before = stack.modelserver_metric("nv_inference_count", Some("mission-summarizer"));
    let results = stack.tritonclient_grpc(json!([
        {"name": "live", "call": "server_live"},
        {"name": "allowed", "model": "mission-summarizer", "token": analyst, "reason": REASON},
        {"name": "allowed-large", "model": "mission-summarizer", "token": analyst,
         "reason": REASON, "repeat": 40},
        {"name": "echo", "model": "benchmark-echo", "token": analyst},
        {"name": "forbidden", "model": "threat-triage", "token": analyst, "reason": REASON},
        {"name": "no-reason", "model": "mission-summarizer", "token": analyst},
        {"name": "unknown", "model": "no-such-model", "token": analyst, "reason": REASON},
        {"name": "anonymous", "model": "benchmark-echo"},
        // Metadata naming another model or principal changes nothing: the decision is on
        // the model in the message, the identity from the token.
        {"name": "spoofed-metadata", "model": "threat-triage", "token": analyst, "reason": REASON,
         "headers": {"x-authz-model": "mission-summarizer", "x-authz-principal": "admin-1",
                     "x-envoy-auth-partial-body": "true"}},
        // ModelMetadata is decided on the model in its message too (no reason needed).
        {"name": "metadata-allowed", "call": "metadata", "model": "mission-summarizer",
         "token": analyst},
        {"name": "metadata-forbidden", "call": "metadata", "model": "threat-triage",
         "token": analyst},
        // A compressed message hides the model name from authz, so it is refused even for
        // a model the caller may use (large enough that gRPC really compresses it: a
        // message that does not shrink is sent uncompressed despite `grpc-encoding`).
        {"name": "compressed", "model": "mission-summarizer", "token": analyst, "reason": REASON,
         "compression": "gzip", "repeat": 40},
    ]));
    let get = |name: &str| {
        results
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no answer for case {name}: {results:?}"))
    };
    let ok = |name: &str| {
        let r = get(name);
        assert_eq!(r["ok"], true, "{name}: {r}\n{}", stack.diagnostics());
        r
    };
    let denied = |name: &str, status: &str, code: &str| {
        let r = get(name);
        assert_eq!(
            (r["ok"].clone(), r["status"].clone()),
            (Value::Bool(false), Value::String(status.into())),
            "{name}: {r}"
        );
        let message = r["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(code),
            "{name}: message {message:?} should name {code}"
        );
    };

    ok("live");
    let r = ok("allowed");
    assert_eq!(r["model_name"], "mission-summarizer", "{r}");
    assert_eq!(r["outputs"]["SUMMARY"], json!(["medical"]), "{r}");
    let r = ok("allowed-large");
    assert_eq!(r["outputs"]["SUMMARY"], json!(["medical"]), "{r}");
    let r = ok("echo");
    assert_eq!(r["outputs"]["ECHO"], json!(["hello, gateway"]), "{r}");
    denied(
        "forbidden",
        "StatusCode.PERMISSION_DENIED",
        "role_not_allowed",
    );
    denied(
        "no-reason",
        "StatusCode.PERMISSION_DENIED",
        "reason_required",
    );
    denied("unknown", "StatusCode.PERMISSION_DENIED", "unknown_model");
    denied("anonymous", "StatusCode.UNAUTHENTICATED", "unauthenticated");
    denied(
        "spoofed-metadata",
        "StatusCode.PERMISSION_DENIED",
        "role_not_allowed",
    );
    let r = ok("metadata-allowed");
    assert_eq!(r["model_name"], "mission-summarizer", "{r}");
    denied(
        "metadata-forbidden",
        "StatusCode.PERMISSION_DENIED",
        "role_not_allowed",
    );
    // authz answers 400 `malformed_request`, which a gRPC client sees as INTERNAL (Envoy maps
    // HTTP statuses to gRPC ones for local replies).
    denied("compressed", "StatusCode.INTERNAL", "malformed_request");

    assert_eq!(
        stack.modelserver_metric("nv_inference_count", Some("threat-triage")),
        triage_before,
        "a denied ModelInfer reached threat-triage"
    );
    assert_eq!(
        stack.modelserver_metric("nv_inference_count", Some("mission-summarizer")) - summary_before,
        2.0,
        "exactly the two allowed mission-summarizer calls ran"
    );
}
}
