//! `POST /v2/models/{m}[/versions/{v}]/infer`: the JSON request with its inputs as JSON data or
//! binary tensor extension slices, the inference, and the response with JSON or binary outputs.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::HEADER_LENGTH;
use super::body::{compress_response, read_body};
use crate::error::ServerError;
use crate::repository::LoadedModel;
use crate::server::{ModelServer, check_input, check_outputs, check_request};
use crate::tensor::{self, Tensor};

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
pub(super) async fn infer(
    server: &Arc<ModelServer>,
    model: Result<Arc<LoadedModel>, ServerError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServerError> {
    let started = Instant::now();
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let mut span = crate::trace::request_span(&server.tracer, traceparent, "rest");
    let model = model?;
    let body = read_body(server, headers, body).await?;
    let header_len = json_header_length(headers, body.len())?;
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

/// Where the JSON request ends: `Inference-Header-Content-Length` (the binary tensor extension)
/// or the whole body.
fn json_header_length(headers: &HeaderMap, body_len: usize) -> Result<usize, ServerError> {
    Ok(match headers.get(HEADER_LENGTH) {
        None => body_len,
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
            if n > body_len {
                return Err(ServerError::InvalidInput(format!(
                    "Inference-Header-Content-Length {n} exceeds the body size {body_len}"
                )));
            }
            n
        }
    })
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

type Decoded = (Vec<Tensor>, Vec<String>, Vec<bool>, Option<String>, u64);

fn decode_request(
    model: &LoadedModel,
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
    let (outputs, binary_flags) = requested_outputs(model, &request.parameters, request.outputs)?;
    Ok((inputs, outputs, binary_flags, request.id, batch))
}

/// The outputs asked for (all when none are named) and whether each is answered as binary data
/// (`binary_data`, defaulting to the request's `binary_data_output`).
fn requested_outputs(
    model: &LoadedModel,
    parameters: &Map<String, Json>,
    requested: Vec<OutputJson>,
) -> Result<(Vec<String>, Vec<bool>), ServerError> {
    let default_binary = parameters
        .get("binary_data_output")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let mut names = Vec::with_capacity(requested.len());
    let mut binary_flags = Vec::with_capacity(requested.len());
    for o in requested {
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
    Ok((outputs, binary_flags))
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
