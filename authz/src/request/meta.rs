//! Correlation data of a check ([`RequestMeta`]: source address, request id, trace id) and the
//! caller's trace context, extracted best-effort so that even a rejected request can be correlated.

use std::borrow::Cow;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use telemetry::TraceContext;

use super::headers::{Headers, http_of};

/// Longest `x-request-id` we carry into logs; longer ones are dropped, not truncated.
const MAX_REQUEST_ID: usize = 128;

/// Best-effort request metadata, extracted even from requests that are otherwise rejected, so that
/// every decision can be correlated.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Client address as Envoy saw it.
    pub source_ip: Option<IpAddr>,
    /// A well-formed `x-request-id`.
    pub request_id: Option<String>,
    /// The trace id of a well-formed `traceparent`.
    pub trace_id: Option<String>,
}

/// Extracts correlation metadata without failing.
pub fn request_meta(req: &CheckRequest) -> RequestMeta {
    let source_ip = req
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            address::Address::SocketAddress(sa) => sa.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    let Some(http) = http_of(req) else {
        return RequestMeta {
            source_ip,
            ..RequestMeta::default()
        };
    };
    let headers = Headers::new(http);
    let request_id = headers
        .get_lenient("x-request-id")
        .map(Cow::into_owned)
        .or_else(|| (!http.id.is_empty()).then(|| http.id.clone()))
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    let trace_id = traceparent_in(&headers).map(|t| t.trace_id.to_string());
    RequestMeta {
        source_ip,
        request_id,
        trace_id,
    }
}

/// The caller's W3C trace context from the request's `traceparent` header, when it is a strictly
/// valid version-00 value (anything else: `None`, and the check starts a new trace).
pub fn traceparent(req: &CheckRequest) -> Option<TraceContext> {
    http_of(req).and_then(|http| traceparent_in(&Headers::new(http)))
}

fn traceparent_in(headers: &Headers<'_>) -> Option<TraceContext> {
    TraceContext::parse(&headers.get_lenient("traceparent")?).ok()
}
