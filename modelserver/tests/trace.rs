//! Inference requests join the caller's trace: spans exported over OTLP/HTTP JSON to a loopback
//! receiver (`e2e::otlp`, standing in for a collector, which cannot be installed here), with the
//! queue, batch and compute steps of real ONNX Runtime runs.

mod common;

use std::time::Duration;

use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use modelserver::grpc::pb;
use modelserver::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelserver::grpc::pb::model_infer_request::InferInputTensor;
use serde_json::json;
use telemetry::{ExportConfig, ExportMetrics, Tracer};

/// The caller's (Envoy's upstream) span in every request below.
const PARENT_SPAN: &str = "b7ad6b7169203331";

fn trace_id(i: usize) -> String {
    format!("4bf92f3577b34da6a3ce929d0e0e{i:04x}")
}

fn traceparent(i: usize) -> String {
    format!("00-{}-{PARENT_SPAN}-01", trace_id(i))
}

async fn traced_server(receiver: &OtlpReceiver) -> (common::Running, Tracer) {
    let mut config = ExportConfig::new(receiver.traces_url(), "modelserver");
    config.schedule_delay = Duration::from_millis(20);
    let tracer = Tracer::start(config, ExportMetrics::default()).unwrap();
    let s = common::start_traced(common::repository(), common::direct(), tracer.clone()).await;
    (s, tracer)
}

/// The spans of one trace, by name (each name once).
fn trace_spans<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.field("traceId") == trace)
        .collect()
}

fn named<'a>(spans: &[&'a ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.field("name") == name).collect();
    assert_eq!(found.len(), 1, "one {name} span expected in {spans:#?}");
    found[0]
}

/// Checks the shape every inference trace has; returns the batch span.
fn assert_infer_trace<'a>(
    spans: &[&'a ReceivedSpan],
    model: &str,
    protocol: &str,
) -> &'a ReceivedSpan {
    let infer = named(spans, "modelserver.infer");
    assert_eq!(infer.service, "modelserver");
    assert_eq!(infer.span["kind"], 2, "a server span");
    assert_eq!(infer.field("parentSpanId"), PARENT_SPAN);
    assert_eq!(infer.attribute("model.name").as_deref(), Some(model));
    assert_eq!(infer.attribute("oip.protocol").as_deref(), Some(protocol));
    let (queue, batch) = (
        named(spans, "modelserver.queue"),
        named(spans, "modelserver.batch"),
    );
    let compute = named(spans, "modelserver.compute");
    assert_eq!(queue.field("parentSpanId"), infer.field("spanId"));
    assert_eq!(batch.field("parentSpanId"), infer.field("spanId"));
    assert_eq!(compute.field("parentSpanId"), batch.field("spanId"));
    let t = |s: &ReceivedSpan, f: &str| s.field(f).parse::<u128>().unwrap();
    // Queue, then batch; compute inside batch; all inside the request.
    assert!(t(queue, "endTimeUnixNano") <= t(batch, "startTimeUnixNano") + 1_000_000);
    assert!(t(batch, "startTimeUnixNano") <= t(compute, "startTimeUnixNano"));
    assert!(t(compute, "endTimeUnixNano") <= t(batch, "endTimeUnixNano"));
    assert!(t(infer, "startTimeUnixNano") <= t(queue, "startTimeUnixNano"));
    assert!(t(batch, "endTimeUnixNano") <= t(infer, "endTimeUnixNano"));
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_rest_requests_each_record_queue_batch_and_compute_in_their_own_trace() {
    let receiver = OtlpReceiver::start();
    let (s, tracer) = traced_server(&receiver).await;
    let url = format!("{}/v2/models/batched_add/infer", s.http);
    let client = reqwest::Client::new();
    let requests = (0..3).map(|i| {
        let body = json!({"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]},
            {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 1.0, 1.0, 1.0]}]});
        let request = client
            .post(&url)
            .header("traceparent", traceparent(i))
            .json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    });
    assert_eq!(futures::future::join_all(requests).await, vec![200; 3]);
    tracer.flush().await;

    let spans = receiver.spans();
    let mut merged = 0;
    for i in 0..3 {
        let mine = trace_spans(&spans, &trace_id(i));
        assert_eq!(mine.len(), 4, "{mine:#?}");
        let batch = assert_infer_trace(&mine, "batched_add", "rest");
        let requests: usize = batch.attribute("batch.requests").unwrap().parse().unwrap();
        let size: usize = batch.attribute("batch.size").unwrap().parse().unwrap();
        assert_eq!(size, requests, "one row per request");
        merged = merged.max(requests);
    }
    assert!(merged > 1, "the 50 ms delay window merged no requests");
    // The exporter's counters are on the metrics endpoint.
    let text = common::metrics(&s.metrics).await;
    assert!(
        text.contains("modelserver_trace_spans_exported_total 12"),
        "{text}"
    );
}

#[tokio::test]
async fn a_grpc_request_joins_the_trace_in_its_metadata() {
    let receiver = OtlpReceiver::start();
    let (s, tracer) = traced_server(&receiver).await;
    let mut client = GrpcInferenceServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![1, 4],
        ..Default::default()
    };
    let raw: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut request = tonic::Request::new(pb::ModelInferRequest {
        model_name: "add_fp32".into(),
        inputs: vec![input("a"), input("b")],
        raw_input_contents: vec![raw.clone(), raw],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent(7).parse().unwrap());
    client.model_infer(request).await.unwrap();
    tracer.flush().await;

    let spans = receiver.spans();
    let mine = trace_spans(&spans, &trace_id(7));
    let batch = assert_infer_trace(&mine, "add_fp32", "grpc");
    assert_eq!(batch.attribute("batch.size").as_deref(), Some("1"));
    assert_eq!(batch.attribute("batch.requests").as_deref(), Some("1"));
}

#[tokio::test]
async fn an_unknown_model_is_not_named_and_not_a_server_error() {
    let receiver = OtlpReceiver::start();
    let (s, tracer) = traced_server(&receiver).await;
    let status = reqwest::Client::new()
        .post(format!("{}/v2/models/no-such-model/infer", s.http))
        .header("traceparent", traceparent(9))
        .json(&json!({"inputs": []}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    tracer.flush().await;
    let spans = receiver.spans();
    let mine = trace_spans(&spans, &trace_id(9));
    let infer = named(&mine, "modelserver.infer");
    assert_eq!(infer.attribute("model.name"), None);
    assert!(infer.span.get("status").is_none());
    assert_eq!(mine.len(), 1, "nothing was queued");
}
