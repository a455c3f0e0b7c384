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
//!
//! This file owns routing and the non-inference routes; `infer` owns the inference route (the
//! JSON request, binary inputs and outputs), `body` reading, decompressing and compressing bodies.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value as Json, json};

use crate::access::{GatewayDecision, ModelAction, ModelCall};
use crate::error::ServerError;
use crate::server::ModelServer;

mod body;
mod infer;

use body::read_body;
use infer::infer;

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
            repository_index(server, headers, body).await
        }
        [
            "v2",
            "repository",
            "models",
            model,
            action @ ("load" | "unload"),
        ] if post => {
            server.unscoped(&decision, "the repository API")?;
            repository_load(server, headers, body, model, *action == "load").await
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

/// `POST /v2/repository/index`: every model (or only the ready ones) with its state.
async fn repository_index(
    server: &ModelServer,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServerError> {
    let body = read_body(server, headers, body).await?;
    let ready = if body.is_empty() {
        false
    } else {
        let j: Json = serde_json::from_slice(&body).map_err(|e| {
            ServerError::InvalidInput(format!("malformed repository index request JSON: {e}"))
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

/// `POST /v2/repository/models/{m}/load` (`load`) or `.../unload`.
async fn repository_load(
    server: &ModelServer,
    headers: &HeaderMap,
    body: Body,
    model: &str,
    load: bool,
) -> Result<Response, ServerError> {
    let body = read_body(server, headers, body).await?;
    if !body.is_empty() {
        let j: Json = serde_json::from_slice(&body).map_err(|e| {
            ServerError::InvalidInput(format!("malformed repository request JSON: {e}"))
        })?;
        if let Some(params) = j.get("parameters").and_then(Json::as_object) {
            check_repository_parameters(params.keys().map(String::as_str))?;
        }
    }
    if load {
        server.repository.load(model).await?;
    } else {
        server.repository.unload(model).await?;
    }
    Ok(StatusCode::OK.into_response())
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
