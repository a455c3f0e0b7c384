//! Request and response bodies: reading a body within the size limit, decompressing it (gzip,
//! deflate) without exceeding the limit, and compressing a response the client accepts compressed.

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::ServerError;
use crate::server::ModelServer;

/// The request body, up to `[limits] max_body_bytes` (413 beyond, also after decompression),
/// decoded from its `Content-Encoding`.
pub(super) async fn read_body(
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

/// Compresses an inference response for a client that asked for it; the binary extension's
/// header length keeps describing the uncompressed body, as clients expect.
pub(super) async fn compress_response(accept: &str, response: Response) -> Response {
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
