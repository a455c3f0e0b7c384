//! The Open Inference Protocol over HTTP/REST (axum), plus the metrics endpoint.
//!
//! Paths are routed by hand from the raw request path so that every malformed path, including a
//! percent-encoded model name that is not UTF-8, gets the protocol's `{"error": "..."}` body
//! rather than a framework's plain-text rejection. Request bodies are read up to the configured
//! limit and answered 413 beyond it.
//!
//! Binary tensor extension: with `Inference-Header-Content-Length: N` the first N body bytes are
//! the JSON request and the rest are input tensors in input order, each input saying its length in
//! `parameters.binary_data_size`. Outputs asked for with `parameters.binary_data` (or the request
//! parameter `binary_data_output`) are appended after the JSON response the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use crate::access::{GatewayDecision, ModelAction, ModelCall};
use crate::error::ServerError;
use crate::server::{ModelServer, check_input, check_outputs, check_request};
use crate::tensor::{self, Tensor};

/// Header carrying the JSON part's length in binary-extension requests and responses.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Serves the REST protocol on `listener` until `shutdown` completes, then drains.
///
/// # Errors
/// IO errors from the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<ModelServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small answers must leave at once: with Nagle's algorithm a response written in two parts
    // waits for the client's delayed ACK (up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(server))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
///
/// # Errors
/// IO errors from the listener.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    server: Arc<ModelServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(s): State<Arc<ModelServer>>| async move {
                let mut text = s.metrics_text();
                if let Some(m) = s.tracer.metrics() {
                    text.push_str(&m.to_text("modelserver"));
                }
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }),
        )
        .with_state(server);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The REST router.
pub fn router(server: Arc<ModelServer>) -> Router {
    Router::new().fallback(dispatch).with_state(server)
}

/// The protocol's error body with the status from [`ServerError::http_status`].
pub fn error_response(e: &ServerError) -> Response {
    let mut response =
        (e.http_status(), axum::Json(json!({"error": e.to_string()}))).into_response();
    if matches!(e, ServerError::Overloaded(_) | ServerError::TimedOut(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn json_response(body: Json) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn not_found(path: &str) -> ServerError {
    ServerError::NoRoute(path.to_string())
}

/// Decodes one percent-encoded path segment into UTF-8.
fn decode_segment(segment: &str) -> Result<String, ServerError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                return Err(ServerError::InvalidInput(format!(
                    "bad percent-encoding in path segment '{segment}'"
                )));
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        ServerError::InvalidInput("path segment (model name or version) is not valid UTF-8".into())
    })
}

async fn dispatch(
    State(server): State<Arc<ModelServer>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match route(&server, &method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn route(
    server: &Arc<ModelServer>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServerError> {
    let path = uri.path();
    let segments = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    // The request head's headers: HTTP trailers are never read here.
    let decision = GatewayDecision::from_headers(headers);
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segs.as_slice() {
        ["v2"] | ["v2", ""] if get => Ok(json_response(server.metadata_json())),
        ["v2", "health", "live"] if get => Ok(status_only(server.live())),
        ["v2", "health", "ready"] if get => Ok(status_only(server.ready())),
        ["v2", "repository", "index"] if post => {
            server.unscoped(&decision, "the repository index")?;
            let body = read_body(server, headers, body).await?;
            let ready = if body.is_empty() {
                false
            } else {
                let j: Json = serde_json::from_slice(&body).map_err(|e| {
                    ServerError::InvalidInput(format!(
                        "malformed repository index request JSON: {e}"
                    ))
                })?;
                j.get("ready").and_then(Json::as_bool).unwrap_or(false)
            };
            let index: Vec<Json> = server
                .repository
                .index(ready)
                .iter()
                .map(|e| e.to_json())
                .collect();
            Ok(json_response(Json::Array(index)))
        }
        [
            "v2",
            "repository",
            "models",
            model,
            action @ ("load" | "unload"),
        ] if post => {
            server.unscoped(&decision, "the repository API")?;
            let body = read_body(server, headers, body).await?;
            if !body.is_empty() {
                let j: Json = serde_json::from_slice(&body).map_err(|e| {
                    ServerError::InvalidInput(format!("malformed repository request JSON: {e}"))
                })?;
                if let Some(params) = j.get("parameters").and_then(Json::as_object) {
                    check_repository_parameters(params.keys().map(String::as_str))?;
                }
            }
            if *action == "load" {
                server.repository.load(model).await?;
            } else {
                server.repository.unload(model).await?;
            }
            Ok(StatusCode::OK.into_response())
        }
        ["v2", "models", "stats"] if get => Ok(json_response(server.stats_json(&decision, None)?)),
        ["v2", "models", model, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (Some(*v), rest),
                _ => (None, rest),
            };
            let call = |action| ModelCall {
                name: model,
                version,
                action,
            };
            match (rest, get, post) {
                ([], true, _) => Ok(json_response(server.model_metadata_json(
                    &*server.model(&decision, call(ModelAction::Metadata))?,
                ))),
                (["ready"], true, _) => server
                    .model(&decision, call(ModelAction::Ready))
                    .map(|_| StatusCode::OK.into_response()),
                (["config"], true, _) => Ok(json_response(
                    server.model_config_json(&*server.model(&decision, call(ModelAction::Config))?),
                )),
                (["stats"], true, _) => Ok(json_response(
                    server.stats_json(&decision, Some(call(ModelAction::Statistics)))?,
                )),
                (["infer"], _, true) => {
                    let model = server.model(&decision, call(ModelAction::Infer));
                    infer(server, model, headers, body).await
                }
                _ => Err(not_found(path)),
            }
        }
        _ => Err(not_found(path)),
    }
}

/// Accepts the parameters clients send routinely and rejects the ones that would change what is
/// loaded (a config override or model files in the request), which are not supported.
///
/// # Errors
/// [`ServerError::Unsupported`] naming the parameter.
pub fn check_repository_parameters<'a>(
    keys: impl Iterator<Item = &'a str>,
) -> Result<(), ServerError> {
    for key in keys {
        // No ensembles here, so there are no dependents to unload or keep.
        if key != "unload_dependents" {
            return Err(ServerError::Unsupported(format!(
                "repository parameter '{key}'"
            )));
        }
    }
    Ok(())
}

fn status_only(ok: bool) -> Response {
    if ok {
        StatusCode::OK.into_response()
    } else {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}

async fn read_body(
    server: &ModelServer,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ServerError> {
    let limit = server.config.limits.max_body_bytes;
    let too_large = |size: u64| ServerError::PayloadTooLarge {
        size,
        limit: limit as u64,
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(len));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // axum reports an exceeded limit as a length-limit error in the source chain.
        let text = format!("{e:?}");
        if text.contains("LengthLimit") {
            too_large(limit as u64 + 1)
        } else {
            ServerError::InvalidInput(format!("reading request body: {e}"))
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(raw),
        Some("gzip") => inflate(flate2::read::GzDecoder::new(&raw[..]), limit),
        // HTTP's "deflate" is the zlib format (RFC 9110), which is what clients send.
        Some("deflate") => inflate(flate2::read::ZlibDecoder::new(&raw[..]), limit),
        Some(other) => Err(ServerError::InvalidInput(format!(
            "unsupported Content-Encoding '{other}' (gzip, deflate or identity)"
        ))),
    }
}

/// Decompresses a request body, refusing to produce more than `limit` bytes: the limit applies
/// to what the server would hold, so a small compressed bomb is a 413, not an allocation.
fn inflate(mut decoder: impl std::io::Read, limit: usize) -> Result<Bytes, ServerError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let read = (&mut decoder)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ServerError::InvalidInput(format!("decompressing request body: {e}")))?;
    if read > limit {
        return Err(ServerError::PayloadTooLarge {
            size: read as u64,
            limit: limit as u64,
        });
    }
    Ok(Bytes::from(out))
}

/// Compresses `body` with the first of gzip or deflate that `accept` (an `Accept-Encoding` value)
/// allows; `None` when it allows neither.
fn compress(accept: &str, body: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    use std::io::Write as _;
    let accepts = |name: &str| {
        accept.split(',').any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| p.trim().replace(' ', "") == "q=0");
            coding.eq_ignore_ascii_case(name) && !refused
        })
    };
    let level = flate2::Compression::fast();
    if accepts("gzip") {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
        e.write_all(body).ok()?;
        return e.finish().ok().map(|b| ("gzip", b));
    }
    if accepts("deflate") {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
        e.write_all(body).ok()?;
        return e.finish().ok().map(|b| ("deflate", b));
    }
    None
}

#[derive(Deserialize)]
struct InferRequestJson {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Json>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Json>,
    data: Option<Json>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Json>,
}

/// Runs one REST inference on `model`, the outcome of the gateway check and the lookup (an error
/// is answered, inside the request's span, before the body is read).
async fn infer(
    server: &Arc<ModelServer>,
    model: Result<Arc<crate::repository::LoadedModel>, ServerError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServerError> {
    let started = Instant::now();
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let mut span = crate::trace::request_span(&server.tracer, traceparent, "rest");
    let model = model?;
    let body = read_body(server, headers, body).await?;
    let header_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    ServerError::InvalidInput(
                        "Inference-Header-Content-Length is not a number".into(),
                    )
                })?;
            if n > body.len() {
                return Err(ServerError::InvalidInput(format!(
                    "Inference-Header-Content-Length {n} exceeds the body size {}",
                    body.len()
                )));
            }
            n
        }
    };
    crate::trace::set_model(&mut span, &model);
    model.scheduler.shed_if_full(&model)?;
    let request: InferRequestJson = serde_json::from_slice(&body[..header_len])
        .map_err(|e| ServerError::InvalidInput(format!("malformed inference request JSON: {e}")))?;
    let timeout = timeout_parameter(request.parameters.get("timeout"));
    let result = timeout.and_then(|timeout| {
        decode_request(&model, request, body.slice(header_len..)).map(|d| (d, timeout))
    });
    let ((inputs, outputs, binary, id, batch), timeout) = match result {
        Ok(r) => r,
        Err(e) => {
            server.record_rejected(&model, started);
            return Err(e);
        }
    };
    let inference = server.infer(&model, inputs, outputs, batch, timeout);
    let tensors = telemetry::in_span(span.handle(), inference).await;
    crate::trace::set_outcome(&mut span, &tensors);
    let tensors = tensors?;
    let mut response = encode_response(&model.name, &model.version_string(), id, tensors, &binary);
    if let Some(accept) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        response = compress_response(accept, response).await;
    }
    Ok(response)
}

/// Reads the request's `timeout` parameter: microseconds the request may stay queued, as Triton.
fn timeout_parameter(value: Option<&Json>) -> Result<Option<std::time::Duration>, ServerError> {
    value
        .map(|v| {
            v.as_u64()
                .map(std::time::Duration::from_micros)
                .ok_or_else(|| {
                    ServerError::InvalidInput(
                        "parameter 'timeout' must be a non-negative integer (microseconds)".into(),
                    )
                })
        })
        .transpose()
}

/// Compresses an inference response for a client that asked for it; the binary extension's
/// header length keeps describing the uncompressed body, as clients expect.
async fn compress_response(accept: &str, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // The body is an in-memory buffer built by `encode_response`; reading it cannot fail.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match compress(accept, &bytes) {
        Some((coding, compressed)) => {
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(compressed))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

type Decoded = (Vec<Tensor>, Vec<String>, Vec<bool>, Option<String>, u64);

fn decode_request(
    model: &crate::repository::LoadedModel,
    request: InferRequestJson,
    binary: Bytes,
) -> Result<Decoded, ServerError> {
    let mut offset = 0usize;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let (_, datatype) = check_input(model, &input.name, &input.datatype, &input.shape)?;
        let data = match (input.parameters.get("binary_data_size"), &input.data) {
            (Some(size), _) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        ServerError::InvalidInput(format!(
                            "input '{}': binary_data_size must be a non-negative integer",
                            input.name
                        ))
                    })?;
                let end = offset.checked_add(size).filter(|&e| e <= binary.len()).ok_or_else(|| {
                    ServerError::InvalidInput(format!(
                        "input '{}': binary_data_size {size} exceeds the {} bytes of binary data left",
                        input.name,
                        binary.len() - offset
                    ))
                })?;
                let slice = binary.slice(offset..end);
                offset = end;
                tensor::decode_raw(&input.name, datatype, &input.shape, slice)?
            }
            (None, Some(data)) => tensor::decode_json(&input.name, datatype, &input.shape, data)?,
            (None, None) => {
                return Err(ServerError::InvalidInput(format!(
                    "input '{}' has neither data nor binary_data_size",
                    input.name
                )));
            }
        };
        inputs.push(Tensor {
            name: input.name,
            datatype,
            shape: input.shape,
            data,
        });
    }
    if offset != binary.len() {
        return Err(ServerError::InvalidInput(format!(
            "{} bytes of binary data follow the JSON header but inputs declare {offset}",
            binary.len()
        )));
    }
    let batch = check_request(model, &inputs)?;
    let default_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut names = Vec::with_capacity(request.outputs.len());
    let mut binary_flags = Vec::with_capacity(request.outputs.len());
    for o in request.outputs {
        binary_flags.push(
            o.parameters
                .get("binary_data")
                .and_then(Json::as_bool)
                .unwrap_or(default_binary),
        );
        names.push(o.name);
    }
    let outputs = check_outputs(model, names)?;
    if binary_flags.is_empty() {
        binary_flags = vec![default_binary; outputs.len()];
    }
    Ok((inputs, outputs, binary_flags, request.id, batch))
}

fn encode_response(
    model: &str,
    version: &str,
    id: Option<String>,
    tensors: Vec<Tensor>,
    binary: &[bool],
) -> Response {
    let mut blobs: Vec<Bytes> = Vec::new();
    let outputs: Vec<Json> = tensors
        .into_iter()
        .zip(binary.iter().copied().chain(std::iter::repeat(false)))
        .map(|(t, as_binary)| {
            let mut o = json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape});
            if as_binary {
                let raw = t.data.to_raw();
                o["parameters"] = json!({"binary_data_size": raw.len()});
                blobs.push(raw);
            } else {
                o["data"] = tensor::encode_json(t.datatype, &t.data);
            }
            o
        })
        .collect();
    let mut j = json!({"model_name": model, "model_version": version, "outputs": outputs});
    if let Some(id) = id {
        j["id"] = json!(id);
    }
    // Serializing a serde_json::Value to a Vec cannot fail.
    let header_json = serde_json::to_vec(&j).unwrap_or_default();
    if blobs.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], header_json).into_response();
    }
    let header_len = header_json.len();
    let mut out = header_json;
    for b in blobs {
        out.extend_from_slice(&b);
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                http::HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(header_len),
            ),
        ],
        out,
    )
        .into_response()
}
