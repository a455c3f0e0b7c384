//! Step 1: `CheckRequest` -> [`Facts`].
//!
//! Extracts exactly what later steps need and refuses to guess. The model a decision is about must
//! be the model Envoy routes to, so the path parser accepts only the canonical OIP forms
//! (`/v2/models/{name}[/versions/{version}][/infer|/ready|/config]`) and rejects anything a proxy or
//! server might read differently: percent-encoding, `\`, `;` parameters, dot segments, empty
//! segments (`//`, trailing `/`), non-ASCII (look-alike) names, and a non-canonical case of a
//! keyword. For OIP gRPC the model is read from the first frame of the body Envoy forwards
//! (`with_request_body`, `pack_as_bytes`): fields 1 (`model_name`) and 2 (`model_version`) of the
//! request message, which must lie entirely within the received bytes.
//!
//! What this module does not do: it never decides who the caller is (see `authn`) and never decides
//! whether a well-formed request is allowed (see `policy`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use telemetry::TraceContext;

use crate::decision::ReasonCode;

/// Longest accepted model name (the OIP path segment `[A-Za-z0-9._-]{1,128}`).
pub const MAX_MODEL_NAME: usize = 128;
/// Longest accepted model version: versions are short (Triton uses integers).
pub const MAX_MODEL_VERSION: usize = 64;
/// Longest accepted path: OIP paths are short; anything longer is not one.
pub const MAX_PATH_BYTES: usize = 2048;
/// Longest `x-request-id` we carry into logs; longer ones are dropped, not truncated.
const MAX_REQUEST_ID: usize = 128;

/// The OIP gRPC service's path prefix segment.
pub const GRPC_SERVICE: &str = "inference.GRPCInferenceService";

/// What a request does to a model: the Cedar action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run inference (`/infer`, gRPC `ModelInfer`).
    Infer,
    /// Model readiness (`/ready`, gRPC `ModelReady`).
    Ready,
    /// Model metadata (`/v2/models/{m}`, gRPC `ModelMetadata`).
    Metadata,
    /// Model configuration (`/config`, gRPC `ModelConfig`).
    Config,
    /// Model statistics (`/stats`, gRPC `ModelStatistics` naming a model).
    Statistics,
}

impl Action {
    /// The Cedar action id and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Infer => "infer",
            Action::Ready => "ready",
            Action::Metadata => "metadata",
            Action::Config => "config",
            Action::Statistics => "statistics",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "infer" => Action::Infer,
            "ready" => Action::Ready,
            "metadata" => Action::Metadata,
            "config" => Action::Config,
            "statistics" => Action::Statistics,
            _ => return None,
        })
    }

    /// The REST path suffix (`None` for metadata, which is the bare model path).
    fn rest_suffix(self) -> Option<&'static str> {
        match self {
            Action::Infer => Some("infer"),
            Action::Ready => Some("ready"),
            Action::Config => Some("config"),
            Action::Statistics => Some("stats"),
            Action::Metadata => None,
        }
    }
}

/// A model named by a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Model name, `[A-Za-z0-9._-]{1,128}`.
    pub name: String,
    /// Version, when named.
    pub version: Option<String>,
    /// What the request does.
    pub action: Action,
}

impl ModelRef {
    /// The canonical OIP REST path for this reference (the parser's inverse).
    pub fn rest_path(&self) -> String {
        let mut p = format!("/v2/models/{}", self.name);
        if let Some(v) = &self.version {
            p.push_str("/versions/");
            p.push_str(v);
        }
        if let Some(s) = self.action.rest_suffix() {
            p.push('/');
            p.push_str(s);
        }
        p
    }
}

/// What the path addresses, before any gRPC body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A configured public path: no credentials needed.
    Public,
    /// An OIP REST model path.
    Model(ModelRef),
    /// An OIP gRPC method that names its model in the message.
    GrpcModel(Action),
    /// Well-formed but not exposed: denied by default.
    Other,
}

/// Why a path was rejected. All map to [`ReasonCode::InvalidPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or does not start with `/`.
    #[error("path must be absolute")]
    NotAbsolute,
    /// Over [`MAX_PATH_BYTES`].
    #[error("path longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// `%` anywhere: encoded `/`, `\` or anything else could be decoded differently upstream.
    #[error("percent-encoded characters are not accepted in the path")]
    PercentEncoded,
    /// A `\`, which some servers treat as `/`.
    #[error("backslash in path")]
    Backslash,
    /// A `;` path parameter.
    #[error("';' path parameters are not accepted")]
    Parameter,
    /// A `.` or `..` segment.
    #[error("dot segments are not accepted")]
    DotSegment,
    /// `//` or a trailing `/`.
    #[error("empty path segment ('//' or trailing '/')")]
    EmptySegment,
    /// A byte outside `[A-Za-z0-9._-/]` (non-ASCII look-alikes included).
    #[error("character outside [A-Za-z0-9._-/] in path")]
    InvalidCharacter,
    /// A keyword (`v2`, `models`, `versions`, an action) in a non-canonical case.
    #[error("non-canonical case of '{0}'")]
    NonCanonicalCase(&'static str),
    /// A model name or version outside the accepted length.
    #[error("model name or version too long")]
    NameTooLong,
}

/// Parses the request path (with or without its query string) into a [`Route`].
///
/// `public_paths` are exact paths (no query) served without credentials.
///
/// # Errors
/// [`PathError`] for any ambiguous or non-canonical form.
pub fn parse_path(path: &str, public_paths: &[String]) -> Result<Route, PathError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    for b in path.bytes() {
        match b {
            b'%' => return Err(PathError::PercentEncoded),
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Parameter),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => {}
            _ => return Err(PathError::InvalidCharacter),
        }
    }
    if path == "/" {
        return Ok(Route::Other);
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    for s in &segs {
        if s.is_empty() {
            return Err(PathError::EmptySegment);
        }
        if *s == "." || *s == ".." {
            return Err(PathError::DotSegment);
        }
    }
    if public_paths.iter().any(|p| p == path) {
        return Ok(Route::Public);
    }
    if keyword(segs[0], GRPC_SERVICE)? {
        return Ok(match segs.as_slice() {
            [_, "ModelInfer"] => Route::GrpcModel(Action::Infer),
            [_, "ModelReady"] => Route::GrpcModel(Action::Ready),
            [_, "ModelMetadata"] => Route::GrpcModel(Action::Metadata),
            [_, "ModelConfig"] => Route::GrpcModel(Action::Config),
            // An empty name (all models) is rejected when the message is read.
            [_, "ModelStatistics"] => Route::GrpcModel(Action::Statistics),
            _ => Route::Other,
        });
    }
    if !keyword(segs[0], "v2")? || segs.len() < 3 || !keyword(segs[1], "models")? {
        return Ok(Route::Other);
    }
    let name = segs[2];
    let rest = &segs[3..];
    let (version, rest) = match rest {
        [v, tail @ ..] if keyword(v, "versions")? => match tail {
            [version, tail @ ..] => (Some(*version), tail),
            [] => return Ok(Route::Other),
        },
        _ => (None, rest),
    };
    let action = match rest {
        [] => Action::Metadata,
        [a] => {
            let mut found = None;
            for act in [
                Action::Infer,
                Action::Ready,
                Action::Config,
                Action::Statistics,
            ] {
                let kw = act.rest_suffix().unwrap_or_default();
                if keyword(a, kw)? {
                    found = Some(act);
                }
            }
            match found {
                Some(act) => act,
                None => return Ok(Route::Other),
            }
        }
        _ => return Ok(Route::Other),
    };
    if name.len() > MAX_MODEL_NAME || version.is_some_and(|v| v.len() > MAX_MODEL_VERSION) {
        return Err(PathError::NameTooLong);
    }
    Ok(Route::Model(ModelRef {
        name: name.to_owned(),
        version: version.map(str::to_owned),
        action,
    }))
}

/// `Ok(true)` when `seg` is exactly `kw`; an error when it matches only case-insensitively (a
/// server that folds case would route it where we did not look).
fn keyword(seg: &str, kw: &'static str) -> Result<bool, PathError> {
    if seg == kw {
        Ok(true)
    } else if seg.eq_ignore_ascii_case(kw) {
        Err(PathError::NonCanonicalCase(kw))
    } else {
        Ok(false)
    }
}

/// Why the model could not be read from a gRPC body. All map to `malformed_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrpcBodyError {
    /// No body bytes: Envoy must be configured with `with_request_body` for gRPC.
    #[error("gRPC request body not forwarded to authz (configure with_request_body)")]
    Missing,
    /// Fewer than the 5 bytes of the gRPC frame header.
    #[error("gRPC frame header truncated")]
    TruncatedFrame,
    /// The frame is compressed: the model name cannot be read.
    #[error("compressed gRPC messages are not accepted")]
    Compressed,
    /// Malformed protobuf (bad varint, group wire type, field 0, wrong wire type).
    #[error("malformed gRPC message")]
    Malformed,
    /// Field 1 or 2 is not entirely within the bytes received.
    #[error("model name or version not within the received bytes")]
    Truncated,
    /// Field 1 or 2 appears twice: which one the server uses is not ours to guess.
    #[error("model name or version given more than once")]
    Duplicate,
    /// No `model_name`.
    #[error("gRPC message names no model")]
    MissingModelName,
    /// The name or version is not valid UTF-8 or contains characters outside `[A-Za-z0-9._-]`.
    #[error("model name or version is not [A-Za-z0-9._-]")]
    InvalidName,
}

/// Whether an access reason says anything: at least one letter or digit. A reason made only of
/// separators, punctuation, whitespace or invisible characters (`","` is what Envoy makes of two
/// blank copies of the header, joined) is no reason.
fn meaningful_reason(reason: &str) -> bool {
    reason.chars().any(char::is_alphanumeric)
}

/// Reads `model_name` (field 1) and `model_version` (field 2) from the first gRPC frame in `body`.
///
/// # Errors
/// [`GrpcBodyError`] when the frame is compressed, malformed, or the fields are not fully present.
pub fn parse_grpc_model(body: &[u8], action: Action) -> Result<ModelRef, GrpcBodyError> {
    if body.is_empty() {
        return Err(GrpcBodyError::Missing);
    }
    if body.len() < 5 {
        return Err(GrpcBodyError::TruncatedFrame);
    }
    if body[0] != 0 {
        return Err(GrpcBodyError::Compressed);
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let avail = &body[5..];
    let msg = &avail[..len.min(avail.len())];
    let complete = avail.len() >= len;
    let mut pos = 0;
    let mut name: Option<&[u8]> = None;
    let mut version: Option<&[u8]> = None;
    while pos < msg.len() {
        let Some(tag) = read_varint(msg, &mut pos) else {
            // A cut tag can only happen at the end of a partial body.
            if complete {
                return Err(GrpcBodyError::Malformed);
            }
            break;
        };
        let field = tag >> 3;
        let wire = tag & 7;
        if field == 0 {
            return Err(GrpcBodyError::Malformed);
        }
        let ours = field == 1 || field == 2;
        if ours && wire != 2 {
            return Err(GrpcBodyError::Malformed);
        }
        let skip = match wire {
            0 => match read_varint(msg, &mut pos) {
                Some(_) => 0,
                None if complete => return Err(GrpcBodyError::Malformed),
                None => break,
            },
            1 => 8,
            5 => 4,
            2 => match read_varint(msg, &mut pos) {
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None if ours || complete => return Err(GrpcBodyError::Truncated),
                None => break,
            },
            _ => return Err(GrpcBodyError::Malformed),
        };
        let end = pos.checked_add(skip).filter(|e| *e <= msg.len());
        let Some(end) = end else {
            if ours {
                return Err(GrpcBodyError::Truncated);
            }
            if complete {
                return Err(GrpcBodyError::Malformed);
            }
            break;
        };
        let slot = match field {
            1 => Some(&mut name),
            2 => Some(&mut version),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                return Err(GrpcBodyError::Duplicate);
            }
            *slot = Some(&msg[pos..end]);
        }
        pos = end;
    }
    let name = name.ok_or(GrpcBodyError::MissingModelName)?;
    let name = valid_name(name, MAX_MODEL_NAME)?;
    let version = match version {
        Some(v) if !v.is_empty() => Some(valid_name(v, MAX_MODEL_VERSION)?),
        _ => None,
    };
    Ok(ModelRef {
        name,
        version,
        action,
    })
}

fn valid_name(bytes: &[u8], max: usize) -> Result<String, GrpcBodyError> {
    let ok = !bytes.is_empty()
        && bytes.len() <= max
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && bytes != b"."
        && bytes != b"..";
    if !ok {
        return Err(GrpcBodyError::InvalidName);
    }
    // All bytes are ASCII, checked above.
    Ok(bytes.iter().map(|b| *b as char).collect())
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Limits and rules for extracting facts (from `[request]` in the config).
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Exact paths served without credentials.
    pub public_paths: Vec<String>,
    /// Longest accepted `x-access-reason`, in bytes.
    pub max_reason_bytes: usize,
    /// Largest accepted total size of all request headers, in bytes.
    pub max_header_bytes: usize,
}

/// Why facts could not be extracted. Maps to `malformed_request` or `invalid_path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `attributes.request.http` is missing.
    #[error("check request carries no HTTP attributes")]
    MissingAttributes,
    /// Neither `path` nor `:path` is set.
    #[error("request has no :path")]
    MissingPath,
    /// A header we read is not valid UTF-8.
    #[error("header '{0}' is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A header we read appears more than once.
    #[error("header '{0}' appears more than once")]
    DuplicateHeader(&'static str),
    /// The request headers are larger than the configured limit.
    #[error("request headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// `x-access-reason` is over the configured limit.
    #[error("x-access-reason longer than {0} bytes")]
    ReasonTooLong(usize),
    /// `x-access-reason` contains control characters.
    #[error("x-access-reason contains control characters")]
    ReasonControlChars,
    /// The path is ambiguous or not canonical.
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    /// The gRPC body does not name a model we can trust.
    #[error("{0}")]
    GrpcBody(#[from] GrpcBodyError),
}

impl RequestError {
    /// The stable reason code for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            RequestError::Path(_) => ReasonCode::InvalidPath,
            _ => ReasonCode::MalformedRequest,
        }
    }
}

/// What the request is about, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A configured public path.
    Public,
    /// A model (from the REST path or the gRPC message).
    Model(ModelRef),
    /// Anything else: denied by default.
    Other,
}

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

/// The credentials a request presents. Values are raw; `authn` validates them.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The `authorization` header value.
    pub authorization: Option<String>,
    /// The `x-api-key` header value.
    pub api_key: Option<String>,
    /// Envoy's `source.principal`: the verified client certificate's URI SAN (SPIFFE id).
    pub peer_principal: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credential values.
        f.debug_struct("Credentials")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("peer_principal", &self.peer_principal)
            .finish()
    }
}

/// Everything later steps need from one `CheckRequest`.
#[derive(Debug, Clone)]
pub struct Facts {
    /// HTTP method (`:method`).
    pub method: String,
    /// What the request is about.
    pub target: Target,
    /// Presented credentials.
    pub credentials: Credentials,
    /// `x-access-reason`, trimmed; `None` when absent or blank.
    pub access_reason: Option<String>,
    /// Correlation data.
    pub meta: RequestMeta,
}

/// Header lookup across Envoy's two encodings: the `headers` string map, and `header_map` with
/// raw byte values (sent when Envoy's `encode_raw_headers` is on, which lets invalid UTF-8 reach us
/// as bytes instead of failing the whole message).
struct Headers<'a> {
    map: &'a HashMap<String, String>,
    raw: &'a [envoy_types::pb::envoy::config::core::v3::HeaderValue],
}

impl<'a> Headers<'a> {
    fn new(http: &'a HttpRequest) -> Self {
        Headers {
            map: &http.headers,
            raw: http
                .header_map
                .as_ref()
                .map_or(&[], |m| m.headers.as_slice()),
        }
    }

    fn total_bytes(&self) -> usize {
        let a: usize = self.map.iter().map(|(k, v)| k.len() + v.len()).sum();
        let b: usize = self
            .raw
            .iter()
            .map(|h| h.key.len() + h.value.len() + h.raw_value.len())
            .sum();
        a + b
    }

    fn get(&self, name: &'static str) -> Result<Option<Cow<'a, str>>, RequestError> {
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
    fn get_lenient(&self, name: &'static str) -> Option<Cow<'a, str>> {
        self.get(name).ok().flatten()
    }
}

fn http_of(req: &CheckRequest) -> Option<&HttpRequest> {
    req.attributes.as_ref()?.request.as_ref()?.http.as_ref()
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

impl Facts {
    /// Extracts the facts of one check.
    ///
    /// # Errors
    /// [`RequestError`] for anything missing, malformed, oversized or ambiguous.
    pub fn from_check_request(
        req: &CheckRequest,
        rules: &RequestRules,
    ) -> Result<Self, RequestError> {
        let meta = request_meta(req);
        let http = http_of(req).ok_or(RequestError::MissingAttributes)?;
        let headers = Headers::new(http);
        if headers.total_bytes() > rules.max_header_bytes {
            return Err(RequestError::HeadersTooLarge(rules.max_header_bytes));
        }
        let path: Cow<'_, str> = if http.path.is_empty() {
            headers.get(":path")?.ok_or(RequestError::MissingPath)?
        } else {
            Cow::Borrowed(http.path.as_str())
        };
        if path.is_empty() {
            return Err(RequestError::MissingPath);
        }
        let route = parse_path(&path, &rules.public_paths)?;
        let target = match route {
            Route::Public => Target::Public,
            Route::Other => Target::Other,
            Route::Model(m) => Target::Model(m),
            Route::GrpcModel(action) => {
                let body = if http.raw_body.is_empty() {
                    http.body.as_bytes()
                } else {
                    http.raw_body.as_slice()
                };
                Target::Model(parse_grpc_model(body, action)?)
            }
        };
        let access_reason = match headers.get("x-access-reason")? {
            None => None,
            Some(r) => {
                if r.len() > rules.max_reason_bytes {
                    return Err(RequestError::ReasonTooLong(rules.max_reason_bytes));
                }
                if r.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(RequestError::ReasonControlChars);
                }
                let t = r.trim();
                meaningful_reason(t).then(|| t.to_owned())
            }
        };
        let credentials = Credentials {
            authorization: headers.get("authorization")?.map(Cow::into_owned),
            api_key: headers.get("x-api-key")?.map(Cow::into_owned),
            peer_principal: req
                .attributes
                .as_ref()
                .and_then(|a| a.source.as_ref())
                .map(|s| s.principal.clone())
                .filter(|p| !p.is_empty()),
        };
        let method = if http.method.is_empty() {
            headers
                .get_lenient(":method")
                .map(Cow::into_owned)
                .unwrap_or_default()
        } else {
            http.method.clone()
        };
        Ok(Facts {
            method,
            target,
            credentials,
            access_reason,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Vec<String> {
        vec![
            "/v2".into(),
            "/v2/health/live".into(),
            "/v2/health/ready".into(),
        ]
    }

    fn model(name: &str, version: Option<&str>, action: Action) -> Route {
        Route::Model(ModelRef {
            name: name.into(),
            version: version.map(Into::into),
            action,
        })
    }

    #[test]
    fn canonical_paths_parse() {
        let p = public();
        assert_eq!(
            parse_path("/v2/models/m/infer", &p),
            Ok(model("m", None, Action::Infer))
        );
        assert_eq!(
            parse_path("/v2/models/m.x_y-1/versions/3/ready?x=1", &p),
            Ok(model("m.x_y-1", Some("3"), Action::Ready))
        );
        assert_eq!(
            parse_path("/v2/models/m", &p),
            Ok(model("m", None, Action::Metadata))
        );
        assert_eq!(
            parse_path("/v2/models/m/versions/2", &p),
            Ok(model("m", Some("2"), Action::Metadata))
        );
        assert_eq!(
            parse_path("/v2/models/m/config", &p),
            Ok(model("m", None, Action::Config))
        );
        assert_eq!(parse_path("/v2/health/live", &p), Ok(Route::Public));
        assert_eq!(parse_path("/v2", &p), Ok(Route::Public));
        assert_eq!(parse_path("/v2/repository/index", &p), Ok(Route::Other));
        assert_eq!(
            parse_path("/v2/models/m/stats", &p),
            Ok(model("m", None, Action::Statistics))
        );
        assert_eq!(
            parse_path("/v2/models/m/trace/setting", &p),
            Ok(Route::Other)
        );
        assert_eq!(parse_path("/", &p), Ok(Route::Other));
        assert_eq!(
            parse_path("/inference.GRPCInferenceService/ModelInfer", &p),
            Ok(Route::GrpcModel(Action::Infer))
        );
        assert_eq!(
            parse_path("/inference.GRPCInferenceService/RepositoryModelLoad", &p),
            Ok(Route::Other)
        );
    }

    #[test]
    fn ambiguous_paths_are_rejected() {
        let p = public();
        let cases: &[(&str, PathError)] = &[
            ("/v2/models/a%2Fb/infer", PathError::PercentEncoded),
            ("/v2/models/a%2fb/infer", PathError::PercentEncoded),
            ("/v2/models/a%5Cb/infer", PathError::PercentEncoded),
            ("/v2/models/a\\b/infer", PathError::Backslash),
            ("/v2/models/../models/m/infer", PathError::DotSegment),
            ("/v2/models/./m/infer", PathError::DotSegment),
            ("/v2//models/m/infer", PathError::EmptySegment),
            ("/v2/models/m/infer/", PathError::EmptySegment),
            ("/v2/models/m;v=1/infer", PathError::Parameter),
            ("/V2/models/m/infer", PathError::NonCanonicalCase("v2")),
            ("/v2/Models/m/infer", PathError::NonCanonicalCase("models")),
            ("/v2/models/m/INFER", PathError::NonCanonicalCase("infer")),
            (
                "/v2/models/m/Versions/1/infer",
                PathError::NonCanonicalCase("versions"),
            ),
            ("/v2/models/mіssion/infer", PathError::InvalidCharacter),
            ("/v2/models/m n/infer", PathError::InvalidCharacter),
            ("v2/models/m/infer", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (path, err) in cases {
            assert_eq!(parse_path(path, &p).as_ref(), Err(err), "{path}");
        }
        let long = format!("/v2/models/{}/infer", "a".repeat(129));
        assert_eq!(parse_path(&long, &p), Err(PathError::NameTooLong));
    }

    fn frame(fields: &[(u8, &[u8])], compressed: bool, declared_extra: u32) -> Vec<u8> {
        let mut msg = Vec::new();
        for (f, v) in fields {
            msg.push((f << 3) | 2);
            msg.push(v.len() as u8);
            msg.extend_from_slice(v);
        }
        let mut out = vec![u8::from(compressed)];
        out.extend_from_slice(&(msg.len() as u32 + declared_extra).to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    #[test]
    fn grpc_frame_yields_model_and_version() {
        let b = frame(
            &[(1, b"benchmark-echo"), (2, b"1"), (3, b"req-1")],
            false,
            0,
        );
        let m = parse_grpc_model(&b, Action::Infer).unwrap();
        assert_eq!(m.name, "benchmark-echo");
        assert_eq!(m.version.as_deref(), Some("1"));
        // A partial body (declared longer than received) is fine when both fields are inside.
        let b = frame(&[(1, b"m"), (3, b"x")], false, 5000);
        assert_eq!(parse_grpc_model(&b, Action::Infer).unwrap().name, "m");
    }

    #[test]
    fn grpc_frame_problems_are_rejected() {
        use GrpcBodyError as E;
        let ok = frame(&[(1, b"m")], false, 0);
        assert_eq!(parse_grpc_model(&[], Action::Infer), Err(E::Missing));
        assert_eq!(
            parse_grpc_model(&ok[..3], Action::Infer),
            Err(E::TruncatedFrame)
        );
        let c = frame(&[(1, b"m")], true, 0);
        assert_eq!(parse_grpc_model(&c, Action::Infer), Err(E::Compressed));
        // Name cut by the end of the received bytes.
        let mut cut = frame(&[(1, b"mission-summarizer")], false, 100);
        cut.truncate(10);
        assert_eq!(parse_grpc_model(&cut, Action::Infer), Err(E::Truncated));
        let dup = frame(&[(1, b"a"), (1, b"b")], false, 0);
        assert_eq!(parse_grpc_model(&dup, Action::Infer), Err(E::Duplicate));
        let none = frame(&[(3, b"x")], false, 0);
        assert_eq!(
            parse_grpc_model(&none, Action::Infer),
            Err(E::MissingModelName)
        );
        let bad = frame(&[(1, b"a/b")], false, 0);
        assert_eq!(parse_grpc_model(&bad, Action::Infer), Err(E::InvalidName));
        let wrong_wire = vec![0, 0, 0, 0, 2, 0x08, 0x01];
        assert_eq!(
            parse_grpc_model(&wrong_wire, Action::Infer),
            Err(E::Malformed)
        );
    }

    /// A check request carrying `http` as its HTTP attributes.
    fn check_of(http: HttpRequest) -> CheckRequest {
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn with_traceparent(value: &str) -> CheckRequest {
        let mut http = HttpRequest::default();
        http.headers.insert("traceparent".into(), value.into());
        check_of(http)
    }

    /// A REST infer check whose headers come as Envoy sends them with `encode_raw_headers`: one
    /// entry per header line, repeats included.
    fn raw_headers_check(headers: &[(&str, &str)]) -> CheckRequest {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        check_of(HttpRequest {
            method: "POST".into(),
            path: "/v2/models/m/infer".into(),
            header_map: Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).into(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        })
    }

    fn reason_of(headers: &[(&str, &str)]) -> Result<Option<String>, RequestError> {
        let rules = RequestRules {
            public_paths: vec![],
            max_reason_bytes: 512,
            max_header_bytes: 64 * 1024,
        };
        Facts::from_check_request(&raw_headers_check(headers), &rules).map(|f| f.access_reason)
    }

    #[test]
    fn a_repeated_access_reason_is_malformed_even_when_blank() {
        for pair in [["", ""], ["why", "why"], ["why", ""]] {
            let headers: Vec<_> = pair.iter().map(|v| ("x-access-reason", *v)).collect();
            assert_eq!(
                reason_of(&headers),
                Err(RequestError::DuplicateHeader("x-access-reason")),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn a_reason_of_separators_or_invisible_characters_is_no_reason() {
        for blank in [",", " , ", ";-.", "\u{200b}", "\u{2063}\u{2063}", "   "] {
            assert_eq!(
                reason_of(&[("x-access-reason", blank)]),
                Ok(None),
                "{blank:?}"
            );
        }
        assert_eq!(
            reason_of(&[("x-access-reason", " incident 42 ")]),
            Ok(Some("incident 42".into()))
        );
        assert_eq!(
            reason_of(&[("x-access-reason", "évaluation")]),
            Ok(Some("évaluation".into()))
        );
    }

    #[test]
    fn traceparent_parses_strictly() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            request_meta(&with_traceparent(valid)).trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let parent = traceparent(&with_traceparent(valid)).unwrap();
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        for invalid in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(request_meta(&with_traceparent(invalid)).trace_id, None);
            assert_eq!(traceparent(&with_traceparent(invalid)), None);
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parser_never_panics(s in "\\PC{0,200}") {
                let _ = parse_path(&s, &["/v2".to_string()]);
            }

            #[test]
            fn parser_never_panics_on_path_like(s in "/[vV2/.%;a-zA-Z0-9\\\\_-]{0,80}") {
                let _ = parse_path(&s, &[]);
            }

            #[test]
            fn accepted_model_paths_round_trip(
                name in "[A-Za-z0-9._-]{1,128}",
                version in proptest::option::of("[A-Za-z0-9._-]{1,64}"),
                action in prop_oneof![
                    Just(Action::Infer), Just(Action::Ready), Just(Action::Config), Just(Action::Metadata),
                    Just(Action::Statistics)
                ],
                query in proptest::option::of("[a-z=&%/]{0,20}"),
            ) {
                let m = ModelRef { name: name.clone(), version: version.clone(), action };
                let path = m.rest_path();
                let full = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
                match parse_path(&full, &[]) {
                    Ok(Route::Model(parsed)) => {
                        prop_assert_eq!(parsed.rest_path(), path);
                        prop_assert_eq!(parsed, m);
                    }
                    Ok(other) => {
                        // Only names/versions that collide with keywords may route elsewhere.
                        prop_assert!(
                            ["versions", "infer", "ready", "config", "stats"].iter().any(|k| name.eq_ignore_ascii_case(k)
                                || version.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(k)))
                                || other == Route::Other,
                            "unexpected {:?}", other
                        );
                    }
                    Err(PathError::DotSegment) => prop_assert!(name == "." || name == ".." || version.as_deref() == Some(".") || version.as_deref() == Some("..")),
                    Err(PathError::NonCanonicalCase(_)) => {}
                    Err(e) => prop_assert!(false, "rejected {}: {}", full, e),
                }
            }

            #[test]
            fn any_accepted_path_round_trips(s in "/[a-zA-Z0-9._/-]{0,60}") {
                if let Ok(Route::Model(m)) = parse_path(&s, &[]) {
                    prop_assert_eq!(m.rest_path(), s);
                }
            }

            #[test]
            fn grpc_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_grpc_model(&b, Action::Infer);
            }
        }
    }
}
