//! Tracing of checks: which trace a check joins, and what its spans say.
//!
//! A check is the server span `authz.check`, a child of the span Envoy's ext_authz filter sent
//! with the Check call (gRPC `traceparent` metadata) or, failing that, of the client request's
//! `traceparent` header. Its children are the pipeline steps: `authz.facts`, `authz.authn`,
//! `authz.policy`, `authz.ratelimit`, `authz.audit`. Spans per step rather than timed events on one
//! span: a trace backend shows where a slow check spent its time without extra tooling, and with
//! export on a step span costs one small allocation and a queue send (measured by
//! `cargo bench -p authz --bench decision`); with export off, nothing.
//!
//! Attributes are bounded: the decision id, decision and reason code, the model name only when it
//! is a configured one (else `unknown`), the authentication method, the rate-limit outcome. Never
//! credentials, principal ids, access reasons or paths (the decision id joins the span to the
//! audit record, which holds those).

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use telemetry::{Span, TraceContext};

use crate::decision::{Decision, ReasonCode};
use crate::runtime::Runtime;

/// The parent of a check's span: Envoy's ext_authz span from the call's own metadata, else the
/// request's `traceparent` header. `None` (a new trace) when neither is a valid version-00 value.
pub fn parent_of(metadata_traceparent: Option<&str>, req: &CheckRequest) -> Option<TraceContext> {
    metadata_traceparent
        .and_then(|v| TraceContext::parse(v).ok())
        .or_else(|| crate::request::traceparent(req))
}

/// Span export from the standard `OTEL_*` environment variables (off without an endpoint), its
/// counters registered as `authz_trace_spans_*_total`: for `authz serve` and the Envoy module
/// alike. Call inside a Tokio runtime (the exporter is a task of it).
///
/// # Errors
/// The exporter's HTTP client cannot be built.
pub fn tracer_from_env(
    metrics: &crate::metrics::Metrics,
) -> Result<telemetry::Tracer, reqwest::Error> {
    let Some(config) = telemetry::ExportConfig::from_env("authz") else {
        return Ok(telemetry::Tracer::disabled());
    };
    let export_metrics = telemetry::ExportMetrics::default();
    metrics.with_registry(|r| export_metrics.register(r, "authz"));
    telemetry::Tracer::start(config, export_metrics)
}

/// Marks a step span failed with the decision's reason code (bounded: built-in codes and the
/// `@reason` annotations of loaded policies).
pub fn fail_step(step: &mut Span, reason: &ReasonCode) {
    if step.is_recording() {
        step.set_error(reason.as_str().to_owned());
    }
}

/// Puts the outcome of a check on its server span. Server errors (5xx: no evidence, a fail-closed
/// store) mark the span failed; denials are the service working, not failing.
pub fn annotate_check(span: &mut Span, rt: &Runtime, d: &Decision) {
    if !span.is_recording() {
        return;
    }
    span.set_attribute("decision.id", d.id.to_string());
    span.set_attribute("decision.result", d.decision_str());
    span.set_attribute("decision.reason", d.reason.as_str().to_owned());
    span.set_attribute("http.response.status_code", i64::from(d.http_status()));
    span.set_attribute("model.name", rt.model_label(d.model.as_deref()));
    if let Some(p) = &d.principal {
        span.set_attribute("auth.method", p.auth_method.as_str());
    }
    if d.http_status() >= 500 {
        span.set_error(d.reason.as_str().to_owned());
    }
}
