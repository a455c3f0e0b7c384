//! The exporter against a loopback OTLP/HTTP receiver (`e2e::otlp`, standing in for a collector,
//! which cannot be installed on the test machines): what a collector would receive.

use std::time::{Duration, Instant};

use e2e::otlp::OtlpReceiver;
use telemetry::{ExportConfig, ExportMetrics, TraceContext, Tracer, current_span, in_span};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tracer(endpoint: String) -> Tracer {
    let mut config = ExportConfig::new(endpoint, "test-service");
    config.schedule_delay = Duration::from_millis(20);
    Tracer::start(config, ExportMetrics::default()).expect("exporter starts")
}

#[tokio::test]
async fn spans_arrive_as_otlp_json_in_the_callers_trace() {
    let receiver = OtlpReceiver::start();
    let tracer = tracer(receiver.traces_url());
    let parent = TraceContext::parse(PARENT).unwrap();
    let mut server = tracer.server_span("test.request", Some(parent));
    server.set_attribute("model.name", "resnet");
    let mut step = server.child("test.step");
    step.set_attribute("batch.size", 3usize);
    step.set_start(Instant::now() - Duration::from_millis(5));
    step.end();
    // A child started from the task's current span, as the model server's batcher does.
    in_span(server.handle(), async {
        current_span().child("test.nested").end()
    })
    .await;
    server.set_error("overloaded");
    server.end();
    tracer.flush().await;

    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "{spans:?}");
    let by_name = |n: &str| spans.iter().find(|s| s.field("name") == n).unwrap();
    let (root, step, nested) = (
        by_name("test.request"),
        by_name("test.step"),
        by_name("test.nested"),
    );
    assert!(spans.iter().all(|s| s.service == "test-service"));
    assert!(
        spans
            .iter()
            .all(|s| s.field("traceId") == "4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(root.field("parentSpanId"), "00f067aa0ba902b7");
    assert_eq!(root.span["kind"], 2);
    assert_eq!(root.span["status"]["code"], 2);
    assert_eq!(root.attribute("model.name").as_deref(), Some("resnet"));
    assert_eq!(step.field("parentSpanId"), root.field("spanId"));
    assert_eq!(nested.field("parentSpanId"), root.field("spanId"));
    assert_eq!(step.attribute("batch.size").as_deref(), Some("3"));
    let nanos = |s: &e2e::otlp::ReceivedSpan, f: &str| s.field(f).parse::<u128>().unwrap();
    assert!(nanos(step, "endTimeUnixNano") - nanos(step, "startTimeUnixNano") >= 5_000_000);
    assert_eq!(
        receiver.requests(),
        vec![("/v1/traces".to_owned(), "application/json".to_owned())]
    );
    assert_eq!(tracer.metrics().unwrap().exported.get(), 3);
}

#[tokio::test]
async fn unsampled_parents_and_disabled_tracers_export_nothing() {
    let receiver = OtlpReceiver::start();
    let tracer = tracer(receiver.traces_url());
    let unsampled = TraceContext::parse(&PARENT.replace("-01", "-00")).unwrap();
    let span = tracer.server_span("test.request", Some(unsampled));
    assert!(!span.is_recording());
    span.child("test.step").end();
    span.end();
    Tracer::disabled().server_span("test.request", None).end();
    tracer.flush().await;
    assert!(receiver.spans().is_empty());
}

#[tokio::test]
async fn a_request_without_a_parent_starts_a_new_sampled_trace() {
    let receiver = OtlpReceiver::start();
    let tracer = tracer(receiver.traces_url());
    let span = tracer.server_span("test.request", None);
    let trace_id = span.trace_id().unwrap().to_string();
    span.end();
    tracer.flush().await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].field("traceId"), trace_id);
    assert!(spans[0].span.get("parentSpanId").is_none());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    // A collector that accepts connections and never answers: the exporter's one POST hangs
    // until its timeout while spans pile up behind it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ExportConfig::new(
        format!("http://{}/v1/traces", silent.local_addr().unwrap()),
        "test-service",
    );
    config.max_queue_size = 4;
    config.max_batch_size = 1;
    config.schedule_delay = Duration::from_millis(1);
    config.timeout = Duration::from_millis(300);
    let tracer = Tracer::start(config, ExportMetrics::default()).unwrap();
    let started = Instant::now();
    for _ in 0..100 {
        tracer.server_span("test.request", None).end();
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "ending spans waited"
    );
    let m = tracer.metrics().unwrap();
    assert!(m.dropped.get() >= 90, "dropped {}", m.dropped.get());
    tracer.flush().await;
    assert!(m.failed.get() >= 1);
    assert_eq!(m.exported.get(), 0);
}
