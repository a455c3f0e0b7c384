//! telemetry: distributed tracing shared by authz and modelserver.
//!
//! Both services join the trace Envoy starts: they read the W3C `traceparent` of an incoming
//! request ([`traceparent`]), record a server span for it with child spans for its steps
//! ([`span`]), and, when an OTLP endpoint is configured through the standard OpenTelemetry
//! environment variables ([`config`]), export finished spans as OTLP/HTTP JSON
//! ([`otlp_json`]) from a bounded queue in a background task ([`export`]).
//!
//! # What it guarantees
//!
//! - With export off, spans are empty values: no allocation, no clock read, no channel send.
//! - Ending a span never blocks a request: a full queue drops the span and counts it.
//! - An invalid `traceparent` (anything but strict version 00 with non-zero ids) starts a new
//!   trace; parsing never panics.
//! - Sampling follows the caller: spans under an unsampled parent are not recorded; a request
//!   without a parent starts a sampled trace (OpenTelemetry's default, parent-based always-on).
//! - Spans carry at most [`span::MAX_ATTRIBUTES`] attributes of bounded size; callers choose
//!   which (reason codes, configured model names, batch sizes), never tokens or request data.
//!
//! # What it does not do
//!
//! - No delivery guarantee: spans dropped on a full queue or lost in a failed POST are counted,
//!   not retried. Traces are for diagnosis; the audit log is the evidence.
//! - No propagation onwards: the services call nothing downstream that would need a
//!   `traceparent` (authz's Redis and audit writes appear as its own child spans).
//! - Only OTLP/HTTP with the JSON encoding (any OpenTelemetry Collector, Jaeger or Tempo accepts
//!   it on port 4318); no OTLP/gRPC, no `tracestate`, baggage, span events or links.
//! - It is not the OpenTelemetry SDK and does not bridge `tracing` spans: the services record the
//!   spans named in their code, which keeps the build small and the hot path free.

pub mod config;
pub mod export;
pub mod otlp_json;
pub mod span;
pub mod traceparent;

pub use config::ExportConfig;
pub use export::ExportMetrics;
pub use span::{
    AttributeValue, Span, SpanData, SpanHandle, SpanKind, SpanStatus, Tracer, current_span, in_span,
};
pub use traceparent::{SpanId, TraceContext, TraceId, TraceparentError};
