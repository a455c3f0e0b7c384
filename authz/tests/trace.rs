//! Checks join the trace Envoy started: spans exported over OTLP/HTTP JSON to a loopback receiver
//! (`e2e::otlp`, standing in for a collector, which cannot be installed here), as a trace backend
//! would store them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use authz::runtime::Runtime;
use authz::server::Listeners;
use authz::service::AuthzService;
use common::*;
use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use telemetry::{ExportConfig, ExportMetrics, Tracer};
use tonic::metadata::MetadataValue;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The client's span (in the request's `traceparent` header).
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// Envoy's ext_authz span (in the Check call's gRPC metadata).
const ENVOY_SPAN: &str = "b7ad6b7169203331";
const STEPS: [&str; 5] = [
    "authz.facts",
    "authz.authn",
    "authz.policy",
    "authz.ratelimit",
    "authz.audit",
];

fn traceparent(span: &str) -> String {
    format!("00-{TRACE}-{span}-01")
}

/// The demo server's runtime, served again by a service that exports to `receiver`.
async fn traced(server: &Server, receiver: &OtlpReceiver) -> (AuthzService, Tracer, String) {
    let mut config = ExportConfig::new(receiver.traces_url(), "authz");
    config.schedule_delay = Duration::from_millis(20);
    let tracer = Tracer::start(config, ExportMetrics::default()).unwrap();
    let rt = Runtime::load(&server.config, Arc::clone(&server.metrics))
        .await
        .unwrap();
    let traced = authz::server::Server::start(
        &server.config,
        rt,
        Arc::clone(&server.metrics),
        tracer.clone(),
    )
    .unwrap();
    let svc = traced.service().clone();
    let listeners = Listeners {
        grpc_unix: None,
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let url = format!("http://{}", listeners.grpc.local_addr().unwrap());
    tokio::spawn(traced.serve(listeners, std::future::pending()));
    (svc, tracer, url)
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.field("name") == name)
        .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
}

/// The audit records written under the server's directory.
fn audit_records(server: &Server) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(server.dir.path().join("audit")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
    }
    out
}

#[tokio::test]
async fn a_check_is_a_child_of_envoys_span_with_a_span_per_step() {
    let server = Server::start().await;
    let receiver = OtlpReceiver::start();
    let (_svc, tracer, url) = traced(&server, &receiver).await;
    let token = analyst();
    let mut request = tonic::Request::new(
        req("/v2/models/mission-summarizer/versions/2/infer")
            .bearer(&token)
            .reason("daily brief")
            .header("traceparent", &traceparent(CLIENT_SPAN))
            .build(),
    );
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent(ENVOY_SPAN)).unwrap(),
    );
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(url)
            .await
            .unwrap();
    let outcome = Outcome::from(client.check(request).await.unwrap().into_inner());
    assert_eq!(outcome.status, 200);
    tracer.flush().await;

    let spans = receiver.spans();
    let check = named(&spans, "authz.check");
    assert_eq!(check.service, "authz");
    assert_eq!(check.span["kind"], 2, "a server span");
    assert_eq!(check.field("traceId"), TRACE);
    assert_eq!(check.field("parentSpanId"), ENVOY_SPAN);
    assert_eq!(check.attribute("decision.result").as_deref(), Some("allow"));
    assert_eq!(
        check.attribute("decision.reason").as_deref(),
        Some("allowed")
    );
    assert_eq!(
        check.attribute("model.name").as_deref(),
        Some("mission-summarizer")
    );
    assert_eq!(check.attribute("auth.method").as_deref(), Some("jwt"));
    let decision_id = check.attribute("decision.id").unwrap();
    assert_eq!(outcome.headers["x-authz-decision-id"], decision_id);
    for step in STEPS {
        let s = named(&spans, step);
        assert_eq!(s.field("traceId"), TRACE, "{step}");
        assert_eq!(s.field("parentSpanId"), check.field("spanId"), "{step}");
        assert!(s.span.get("status").is_none(), "{step} succeeded");
    }
    assert_eq!(
        named(&spans, "authz.ratelimit")
            .attribute("ratelimit.outcome")
            .as_deref(),
        Some("allowed")
    );
    // The audit record names the same decision and trace.
    let record = audit_records(&server)
        .into_iter()
        .find(|r| r["decision_id"] == decision_id.as_str())
        .expect("an audit record for the decision");
    assert_eq!(record["trace_id"], TRACE);
    // Nothing secret or user-written on any span.
    let text = serde_json::to_string(&spans.iter().map(|s| &s.span).collect::<Vec<_>>()).unwrap();
    for secret in [token.as_str(), "daily brief", "analyst-1"] {
        assert!(!text.contains(secret), "{secret} leaked into a span");
    }
}

#[tokio::test]
async fn a_denial_names_its_reason_and_the_failing_step() {
    let server = Server::start().await;
    let receiver = OtlpReceiver::start();
    let (svc, tracer, _) = traced(&server, &receiver).await;
    // No Envoy metadata (a direct call): the request's header is the parent.
    let d = svc
        .decide(
            &req("/v2/models/threat-triage/infer")
                .bearer(&security())
                .header("traceparent", &traceparent(CLIENT_SPAN))
                .build(),
        )
        .await;
    assert_eq!(d.reason.as_str(), "reason_required");
    tracer.flush().await;
    let spans = receiver.spans();
    let check = named(&spans, "authz.check");
    assert_eq!(check.field("parentSpanId"), CLIENT_SPAN);
    assert_eq!(check.attribute("decision.result").as_deref(), Some("deny"));
    assert_eq!(
        check.attribute("decision.reason").as_deref(),
        Some("reason_required")
    );
    assert_eq!(
        check.attribute("http.response.status_code").as_deref(),
        Some("403")
    );
    assert!(
        check.span.get("status").is_none(),
        "a denial is not an error"
    );
    let policy = named(&spans, "authz.policy");
    assert_eq!(policy.span["status"]["message"], "reason_required");
    assert!(spans.iter().all(|s| s.field("name") != "authz.ratelimit"));
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace_that_the_audit_names() {
    let server = Server::start().await;
    let receiver = OtlpReceiver::start();
    let (svc, tracer, _) = traced(&server, &receiver).await;
    let d = svc
        .decide(
            &req("/v2/models/nope/infer")
                .bearer(&analyst())
                .header("traceparent", &traceparent(CLIENT_SPAN).to_uppercase())
                .build(),
        )
        .await;
    tracer.flush().await;
    let spans = receiver.spans();
    let check = named(&spans, "authz.check");
    assert!(check.span.get("parentSpanId").is_none());
    assert_ne!(check.field("traceId"), TRACE);
    assert_eq!(d.trace_id.as_deref(), Some(check.field("traceId")));
    // A model name from the request that is not configured is never echoed.
    assert_eq!(check.attribute("model.name").as_deref(), Some("unknown"));
}

#[tokio::test]
async fn an_unsampled_parent_records_nothing_and_keeps_its_trace_id_in_the_audit() {
    let server = Server::start().await;
    let receiver = OtlpReceiver::start();
    let (svc, tracer, _) = traced(&server, &receiver).await;
    let d = svc
        .decide(
            &req("/v2/models/mission-summarizer/infer")
                .bearer(&analyst())
                .header("traceparent", &format!("00-{TRACE}-{CLIENT_SPAN}-00"))
                .build(),
        )
        .await;
    tracer.flush().await;
    assert!(receiver.spans().is_empty());
    assert_eq!(d.trace_id.as_deref(), Some(TRACE));
}

#[tokio::test]
async fn with_export_off_the_audit_still_names_the_trace_envoy_started() {
    // Envoy started the trace (the client sent no traceparent): only the Check call carries it.
    let server = Server::start().await;
    let svc =
        AuthzService::start(Arc::clone(&server.runtime), Arc::clone(&server.metrics)).unwrap();
    let d = svc
        .decide_in_trace(
            &req("/v2/models/mission-summarizer/infer")
                .bearer(&analyst())
                .build(),
            Some(&traceparent(ENVOY_SPAN)),
        )
        .await;
    assert_eq!(d.trace_id.as_deref(), Some(TRACE));
}
