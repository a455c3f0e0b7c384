//! One trace per request through real Envoy (OpenTelemetry tracer, as rendered by
//! envoy/render.py), authz (the service, or the module inside Envoy) and modelserver: the
//! services' spans share the trace id Envoy started or continued, and each is a child of an Envoy
//! span (not of the client's, and not of each other's). The services export to a loopback
//! OTLP/HTTP receiver (`e2e::otlp`) standing in for the collector, which cannot be installed
//! here; Envoy's own spans are not collected.

use std::time::Duration;

use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::stack::Stack;

const ANALYST: &[&str] = &["analyst", "mission-user"];
const REASON: &str = "triage of the overnight field reports";

fn span<'a>(spans: &'a [ReceivedSpan], name: &str, trace: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.field("name") == name && s.field("traceId") == trace)
}

/// Waits until both services' server spans of `trace` arrived; returns (authz.check, modelserver.infer).
fn server_spans(receiver: &OtlpReceiver, trace: &str, s: &Stack) -> (ReceivedSpan, ReceivedSpan) {
    let spans = receiver.wait_for(Duration::from_secs(10), |spans| {
        span(spans, "authz.check", trace).is_some()
            && span(spans, "modelserver.infer", trace).is_some()
            && span(spans, "modelserver.compute", trace).is_some()
    });
    let found = |name| {
        span(&spans, name, trace).cloned().unwrap_or_else(|| {
            panic!(
                "no {name} span in trace {trace}; received {spans:#?}\n{}",
                s.diagnostics()
            )
        })
    };
    (found("authz.check"), found("modelserver.infer"))
}

#[test]
fn authz_and_modelserver_spans_join_the_trace_envoy_continues_or_starts() {
    spans_join_the_trace_envoy_continues_or_starts(false);
}

/// The module reads Envoy's span for the request through the ABI (`get_active_span`), so its
/// `authz.check` is a child of Envoy's request span, as the service's is of Envoy's ext_authz span.
#[test]
fn authz_and_modelserver_spans_join_the_trace_envoy_continues_or_starts_embedded() {
    spans_join_the_trace_envoy_continues_or_starts(true);
}

fn spans_join_the_trace_envoy_continues_or_starts(embedded: bool) {
    let receiver = OtlpReceiver::start();
    let mut builder = Stack::builder().redis(false).otlp(receiver.base_url());
    if embedded {
        builder = builder.embedded(e2e::workspace_module());
    }
    let s = builder.start();
    let token = s.token("analyst-1", ANALYST);
    let auth = format!("Bearer {token}");
    let body = e2e::stack::demo_infer_body("mission-summarizer");
    let path = "/v2/models/mission-summarizer/infer";

    // 1. The client sends a traceparent: Envoy continues that trace.
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    let resp = s.request(
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("x-access-reason", REASON),
            ("traceparent", &traceparent),
        ],
        Some(body),
    );
    assert_eq!(resp.status, 200, "{}\n{}", resp.body, s.diagnostics());
    let (check, infer) = server_spans(&receiver, client_trace, &s);
    for (what, sp) in [("authz", &check), ("modelserver", &infer)] {
        let parent = sp.field("parentSpanId");
        assert!(!parent.is_empty(), "{what} has a parent");
        assert_ne!(
            parent, client_span,
            "{what}'s parent is an Envoy span, not the client's"
        );
    }
    assert_ne!(check.field("parentSpanId"), infer.field("parentSpanId"));
    assert_eq!(check.attribute("decision.result").as_deref(), Some("allow"));
    assert_eq!(
        infer.attribute("model.name").as_deref(),
        Some("mission-summarizer")
    );
    // The audit record names the same trace and decision.
    let decision_id = resp.header("x-authz-decision-id").map(str::to_owned);
    let decision_id = decision_id
        .or_else(|| check.attribute("decision.id"))
        .unwrap();
    let record = s.audit_record(&decision_id).expect("an audit record");
    assert_eq!(record["trace_id"], client_trace);

    // 2. No traceparent: Envoy starts the trace, and both services join it.
    let resp = s.request(
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("x-access-reason", REASON),
            ("user-agent", "trace-started-by-envoy"),
        ],
        Some(body),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let entry = s
        .access_log_entry("trace-started-by-envoy")
        .expect("an access-log entry");
    let envoy_trace = entry["trace_id"]
        .as_str()
        .filter(|t| t.len() == 32)
        .unwrap_or_else(|| panic!("Envoy logged no trace id: {entry}"))
        .to_owned();
    let (check, infer) = server_spans(&receiver, &envoy_trace, &s);
    assert!(!check.field("parentSpanId").is_empty());
    assert!(!infer.field("parentSpanId").is_empty());
    let record = s
        .audit_record(&check.attribute("decision.id").unwrap())
        .expect("an audit record");
    assert_eq!(record["trace_id"], envoy_trace.as_str());
}
