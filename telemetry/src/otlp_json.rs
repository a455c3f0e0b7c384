//! Spans as an OTLP `ExportTraceServiceRequest` in the protocol's JSON encoding (OTLP/HTTP with
//! `Content-Type: application/json`): lowerCamelCase field names, trace and span ids as lowercase
//! hex, 64-bit integers (times in Unix nanoseconds, integer attributes) as decimal strings, enums as
//! their numbers.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::span::{AttributeValue, SpanData, SpanStatus};

/// OTLP status codes.
const STATUS_CODE_ERROR: u8 = 2;

/// One request body for `spans`, all from one service (`service.name`) and one instrumentation
/// scope.
pub fn export_request(service_name: &str, scope_name: &str, spans: &[SpanData]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [attribute("service.name", &AttributeValue::Str(service_name.to_owned().into()))],
            },
            "scopeSpans": [{
                "scope": {"name": scope_name, "version": env!("CARGO_PKG_VERSION")},
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    })
}

fn span(s: &SpanData) -> Value {
    let mut v = json!({
        "traceId": s.trace_id.to_string(),
        "spanId": s.span_id.to_string(),
        "name": s.name,
        "kind": s.kind as u8,
        "startTimeUnixNano": unix_nanos(s.start),
        "endTimeUnixNano": unix_nanos(s.end.max(s.start)),
        "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
    });
    if let Some(parent) = s.parent_span_id {
        v["parentSpanId"] = Value::String(parent.to_string());
    }
    if let SpanStatus::Error(message) = &s.status {
        v["status"] = json!({"code": STATUS_CODE_ERROR, "message": message});
    }
    v
}

fn attribute(key: &str, value: &AttributeValue) -> Value {
    let value = match value {
        AttributeValue::Str(s) => json!({"stringValue": s}),
        AttributeValue::Int(i) => json!({"intValue": i.to_string()}),
        AttributeValue::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": value})
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanKind;
    use crate::traceparent::TraceContext;
    use std::time::Duration;

    #[test]
    fn encodes_the_fields_collectors_read() {
        let ctx =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let data = SpanData {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
            parent_span_id: Some(ctx.span_id),
            name: "authz.check",
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_micros(5),
            status: SpanStatus::Error("rate_limited".into()),
            attributes: vec![
                ("decision.reason", "rate_limited".into()),
                ("batch.size", AttributeValue::Int(4)),
                ("cache.hit", AttributeValue::Bool(true)),
            ],
        };
        let v = export_request("authz", "authz", &[data]);
        let rs = &v["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "authz"}})
        );
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["endTimeUnixNano"], "1700000000123461789");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["attributes"][1]["value"]["intValue"], "4");
        assert_eq!(s["attributes"][2]["value"]["boolValue"], true);
    }
}
