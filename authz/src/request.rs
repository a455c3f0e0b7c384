//! Step 1: `CheckRequest` -> [`Facts`] (and [`RequestMeta`], the correlation data every decision
//! carries, even one about a request that is otherwise rejected).
//!
//! Extracts exactly what later steps need and refuses to guess. The model a decision is about must
//! be the model Envoy routes to, so [`path`] accepts only the canonical OIP forms and rejects
//! anything a proxy or server might read differently. For OIP gRPC the model is read from the
//! first frame of the body Envoy forwards ([`grpc_body`]). Header lookup across Envoy's two
//! encodings is `headers`; correlation data ([`RequestMeta`], the trace context) is `meta`. This
//! file owns the vocabulary they share ([`Action`], [`ModelRef`]) and the facts.
//!
//! What this module does not do: it never decides who the caller is (see `authn`) and never decides
//! whether a well-formed request is allowed (see `policy`).

pub mod grpc_body;
mod headers;
mod meta;
pub mod path;

pub use grpc_body::{GrpcBodyError, first_frame_len, parse_grpc_model};
pub use meta::{RequestMeta, request_meta, traceparent};
pub use path::{MAX_PATH_BYTES, PathError, Route, parse_path};

use std::borrow::Cow;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use crate::decision::ReasonCode;
use headers::{Headers, http_of};

/// Longest accepted model name (the OIP path segment `[A-Za-z0-9._-]{1,128}`).
pub const MAX_MODEL_NAME: usize = 128;
/// Longest accepted model version: versions are short (Triton uses integers).
pub const MAX_MODEL_VERSION: usize = 64;

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

/// Whether an access reason says anything: at least one letter or digit. A reason made only of
/// separators, punctuation, whitespace or invisible characters (`","` is what Envoy makes of two
/// blank copies of the header, joined) is no reason.
fn meaningful_reason(reason: &str) -> bool {
    reason.chars().any(char::is_alphanumeric)
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
    /// `GET /v1/models`: the caller's catalog, answered by authz itself ([`crate::catalog`]).
    Catalog,
    /// Anything else: denied by default.
    Other,
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

/// Everything later steps need from one `CheckRequest` (correlation data is separate:
/// [`request_meta`], extracted once per check even when facts cannot be).
#[derive(Debug, Clone)]
pub struct Facts {
    /// What the request is about.
    pub target: Target,
    /// Presented credentials.
    pub credentials: Credentials,
    /// `x-access-reason`, trimmed; `None` when absent or blank.
    pub access_reason: Option<String>,
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
        let http = http_of(req).ok_or(RequestError::MissingAttributes)?;
        let headers = Headers::new(http);
        if headers.total_bytes() > rules.max_header_bytes {
            return Err(RequestError::HeadersTooLarge(rules.max_header_bytes));
        }
        let target = target(http, &headers, rules)?;
        let access_reason = access_reason(&headers, rules)?;
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
        Ok(Facts {
            target,
            credentials,
            access_reason,
        })
    }
}

/// Envoy's request `attribute` (`method`, `path`), else the pseudo-header `name` (`:method`,
/// `:path`; read once, a repeat is an error) when Envoy left the attribute empty.
fn attribute_or_header<'a>(
    attribute: &'a str,
    headers: &Headers<'a>,
    name: &'static str,
) -> Result<Option<Cow<'a, str>>, RequestError> {
    if attribute.is_empty() {
        headers.get(name)
    } else {
        Ok(Some(Cow::Borrowed(attribute)))
    }
}

/// Whether the request's method is `GET` or `HEAD` (Envoy's `method` attribute, else `:method`).
fn is_read(http: &HttpRequest, headers: &Headers<'_>) -> Result<bool, RequestError> {
    let method = attribute_or_header(&http.method, headers, ":method")?;
    Ok(matches!(method.as_deref(), Some("GET" | "HEAD")))
}

/// What the request is about: a public path, a model (from the REST path or the gRPC message) or
/// anything else.
fn target(
    http: &HttpRequest,
    headers: &Headers<'_>,
    rules: &RequestRules,
) -> Result<Target, RequestError> {
    let path =
        attribute_or_header(&http.path, headers, ":path")?.ok_or(RequestError::MissingPath)?;
    if path.is_empty() {
        return Err(RequestError::MissingPath);
    }
    let route = parse_path(&path, &rules.public_paths)?;
    Ok(match route {
        Route::Public => Target::Public,
        Route::Other => Target::Other,
        // Only a read: any other method on the catalog's path is a path the gateway does not
        // expose (denied `path_not_allowed`, never answered with the catalog).
        Route::Catalog if is_read(http, headers)? => Target::Catalog,
        Route::Catalog => Target::Other,
        Route::Model(m) => Target::Model(m),
        Route::GrpcModel(action) => {
            let body = if http.raw_body.is_empty() {
                http.body.as_bytes()
            } else {
                http.raw_body.as_slice()
            };
            Target::Model(parse_grpc_model(body, action)?)
        }
    })
}

/// `x-access-reason`, trimmed; `None` when absent or no reason at all (see `meaningful_reason`).
fn access_reason(
    headers: &Headers<'_>,
    rules: &RequestRules,
) -> Result<Option<String>, RequestError> {
    Ok(match headers.get("x-access-reason")? {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn only_a_read_of_the_catalog_path_is_the_catalog() {
        let rules = RequestRules {
            public_paths: vec![],
            max_reason_bytes: 512,
            max_header_bytes: 64 * 1024,
        };
        for (method, catalog) in [
            ("GET", true),
            ("HEAD", true),
            ("POST", false),
            ("DELETE", false),
            ("get", false),
            ("", false),
        ] {
            let check = check_of(HttpRequest {
                method: method.into(),
                path: "/v1/models".into(),
                ..Default::default()
            });
            let facts = Facts::from_check_request(&check, &rules).unwrap();
            assert_eq!(
                matches!(facts.target, Target::Catalog),
                catalog,
                "{method:?}: {:?}",
                facts.target
            );
        }
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
