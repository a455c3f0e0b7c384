//! Tracing of inference requests: each is a server span `modelserver.infer` in the caller's trace
//! (the `traceparent` Envoy forwards, REST header or gRPC metadata), with children for the time
//! queued (`modelserver.queue`), the batch it ran in (`modelserver.batch`, with `batch.size`, the
//! sum of the members' batch dimensions, and `batch.requests`) and the ONNX Runtime run inside it
//! (`modelserver.compute`).
//!
//! The front ends start the server span and run the request inside it ([`telemetry::in_span`]);
//! the batcher takes the current span when a request is admitted and records the children, also
//! from its batching thread. A merged batch appears once in each member's trace. Attributes are
//! bounded: the model name and version only when they name a loaded model, the protocol, the
//! status. Nothing is propagated further: ONNX Runtime is in-process.

use std::time::Instant;

use telemetry::{Span, SpanHandle, TraceContext, Tracer};

use crate::error::ServerError;
use crate::repository::LoadedModel;

/// The server span of one inference request; empty when export is off or the caller's trace is
/// not sampled. `protocol` is `rest` or `grpc`.
pub fn request_span(tracer: &Tracer, traceparent: Option<&str>, protocol: &'static str) -> Span {
    if !tracer.is_enabled() {
        return Span::none();
    }
    let parent = traceparent.and_then(|v| TraceContext::parse(v).ok());
    let mut span = tracer.server_span("modelserver.infer", parent);
    span.set_attribute("oip.protocol", protocol);
    span
}

/// Names the request's model on its span (a loaded model: never an arbitrary client string).
pub fn set_model(span: &mut Span, model: &LoadedModel) {
    if span.is_recording() {
        span.set_attribute("model.name", model.name.clone());
        span.set_attribute("model.version", model.version_string());
    }
}

/// Marks the span failed when inference failed on the server's side (5xx: overloaded, timed out
/// in the queue, an ONNX Runtime error). Client errors leave the status unset, as OpenTelemetry's
/// conventions for server spans say.
pub fn set_outcome<T>(span: &mut Span, result: &Result<T, ServerError>) {
    if let Err(e) = result
        && span.is_recording()
        && e.http_status().is_server_error()
    {
        span.set_error(e.http_status().canonical_reason().unwrap_or("server error"));
    }
}

/// Records the time a request spent queued: from admission until it started.
pub fn record_queue(trace: &SpanHandle, enqueued: Instant) {
    if trace.is_recording() {
        let mut span = trace.child("modelserver.queue");
        span.set_start(enqueued);
        span.end();
    }
}

/// Records one execution in a member's trace: the batch (from `started` until now) and, inside
/// it, the ONNX Runtime run between `compute.0` and `compute.1`.
pub fn record_batch(
    trace: &SpanHandle,
    started: Instant,
    compute: (Instant, Instant),
    size: usize,
    requests: usize,
) {
    if !trace.is_recording() {
        return;
    }
    let mut batch = trace.child("modelserver.batch");
    batch.set_start(started);
    batch.set_attribute("batch.size", size);
    batch.set_attribute("batch.requests", requests);
    let mut run = batch.child("modelserver.compute");
    run.set_start(compute.0);
    run.end_at(compute.1);
    batch.end();
}
