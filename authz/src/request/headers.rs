//! Header lookup across Envoy's two encodings of a `CheckRequest`'s headers, with the strictness
//! facts need (a duplicate or non-UTF-8 header is an error) and the leniency correlation data
//! needs (it is simply absent).

use std::borrow::Cow;
use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use super::RequestError;

/// Header lookup across Envoy's two encodings: the `headers` string map, and `header_map` with
/// raw byte values (sent when Envoy's `encode_raw_headers` is on, which lets invalid UTF-8 reach us
/// as bytes instead of failing the whole message).
pub(super) struct Headers<'a> {
    map: &'a HashMap<String, String>,
    raw: &'a [envoy_types::pb::envoy::config::core::v3::HeaderValue],
}

impl<'a> Headers<'a> {
    pub(super) fn new(http: &'a HttpRequest) -> Self {
        Headers {
            map: &http.headers,
            raw: http
                .header_map
                .as_ref()
                .map_or(&[], |m| m.headers.as_slice()),
        }
    }

    pub(super) fn total_bytes(&self) -> usize {
        let a: usize = self.map.iter().map(|(k, v)| k.len() + v.len()).sum();
        let b: usize = self
            .raw
            .iter()
            .map(|h| h.key.len() + h.value.len() + h.raw_value.len())
            .sum();
        a + b
    }

    pub(super) fn get(&self, name: &'static str) -> Result<Option<Cow<'a, str>>, RequestError> {
        if let Some(v) = self.map.get(name) {
            return Ok(Some(Cow::Borrowed(v.as_str())));
        }
        let mut found: Option<Cow<'a, str>> = None;
        for h in self.raw.iter().filter(|h| h.key.eq_ignore_ascii_case(name)) {
            if found.is_some() {
                return Err(RequestError::DuplicateHeader(name));
            }
            found = Some(if h.raw_value.is_empty() {
                Cow::Borrowed(h.value.as_str())
            } else {
                Cow::Borrowed(
                    std::str::from_utf8(&h.raw_value)
                        .map_err(|_| RequestError::InvalidUtf8(name))?,
                )
            });
        }
        Ok(found)
    }

    /// Like `get`, but a non-UTF-8 or duplicated value is simply absent (for correlation data).
    pub(super) fn get_lenient(&self, name: &'static str) -> Option<Cow<'a, str>> {
        self.get(name).ok().flatten()
    }
}

/// The HTTP attributes of a check, when Envoy sent them.
pub(super) fn http_of(req: &CheckRequest) -> Option<&HttpRequest> {
    req.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}
