//! OIP gRPC as an attacker writes it: protobuf bytes by hand (fields repeated, padded past the
//! prefix authz inspects, names left empty) sent over a raw HTTP/2 connection that can also send
//! request trailers, which no gRPC library does. Used by the attack tests through real Envoy.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderName, HeaderValue, Request};

/// Longer than the 1 KiB of body Envoy hands authz (`max_request_bytes`).
pub const PAST_THE_PREFIX: usize = 1500;

/// Appends `v` as a protobuf varint.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field (strings, bytes, messages, packed repeated numbers).
pub fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(number << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A field number no OIP message defines: decoders skip it, and it pushes what follows past the
/// bytes authz sees.
pub fn padding(out: &mut Vec<u8>) {
    field(out, 1000, &vec![b'p'; PAST_THE_PREFIX]);
}

/// The gRPC length-prefixed frame of an uncompressed message.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// `ModelInferRequest` fields 5 (inputs) and 7 (raw_input_contents) for the demo input of
/// `model`: threat-triage's eight FP32 features, else one BYTES text (mission-summarizer,
/// benchmark-echo).
pub fn infer_inputs(model: &str, out: &mut Vec<u8>) {
    let mut input = Vec::new();
    let raw: Vec<u8> = if model == "threat-triage" {
        field(&mut input, 1, b"FEATURES");
        field(&mut input, 2, b"FP32");
        field(&mut input, 3, &[1, 8]); // packed int64 shape [1, 8]
        [0.0f32, 0.0, 0.0, 1.0, 1.0, 0.5, 1.0, 0.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect()
    } else {
        field(&mut input, 1, b"TEXT");
        field(&mut input, 2, b"BYTES");
        field(&mut input, 3, &[1, 1]);
        let text = b"hello, gateway";
        let mut raw = (text.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(text);
        raw
    };
    field(out, 5, &input);
    field(out, 7, &raw);
}

/// Every length-delimited field of a protobuf message, as (number, bytes); other wire types are
/// skipped.
pub fn fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn read_varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while let Some(tag) = read_varint(&mut b) {
        let skip = match tag & 7 {
            0 => {
                read_varint(&mut b);
                continue;
            }
            1 => 8,
            5 => 4,
            2 => match read_varint(&mut b) {
                Some(n) => n as usize,
                None => break,
            },
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        if tag & 7 == 2 {
            out.push((tag >> 3, &b[..skip]));
        }
        b = &b[skip..];
    }
    out
}

/// The string values of field `number`.
pub fn string_field(b: &[u8], number: u64) -> Vec<String> {
    fields(b)
        .into_iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// What came back from one call.
pub struct GrpcAnswer {
    /// `grpc-status` from the trailers (or the headers of a trailers-only answer).
    pub status: Option<u32>,
    /// `grpc-message`, as sent (percent-encoded).
    pub message: String,
    /// The message of a one-frame answer, without its 5-byte frame header (empty when none).
    pub body: Bytes,
}

/// An h2c connection to `addr`, driven on the current runtime.
///
/// # Panics
/// When the connection or the HTTP/2 handshake fails.
pub async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("Envoy accepts");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One gRPC call on `client` to `addr`: `path`, extra `headers`, the framed `body`, then request
/// `trailers` when any are given.
///
/// # Panics
/// When the call cannot be sent, or no answer comes within 20 s.
pub async fn call(
    client: &mut SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    trailers: &[(&str, &str)],
) -> GrpcAnswer {
    let mut request = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    *client = client.clone().ready().await.expect("h2 connection ready");
    let (response, mut stream) = client
        .send_request(request.body(()).expect("a request"), false)
        .expect("the request is sent");
    let end_with_data = trailers.is_empty();
    stream
        .send_data(body, end_with_data)
        .expect("the body is sent");
    if !end_with_data {
        let mut map = HeaderMap::new();
        for (name, value) in trailers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a trailer name"),
                HeaderValue::from_str(value).expect("a trailer value"),
            );
        }
        stream.send_trailers(map).expect("the trailers are sent");
    }
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("an answer within 20 s")
        .expect("an HTTP/2 response");
    let head = response.headers().clone();
    let mut recv = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("body data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let tail = recv.trailers().await.ok().flatten().unwrap_or_default();
    let get = |name: &str| {
        tail.get(name)
            .or_else(|| head.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    GrpcAnswer {
        status: get("grpc-status").and_then(|s| s.parse().ok()),
        message: get("grpc-message").unwrap_or_default(),
        body: if data.len() >= 5 {
            data.freeze().slice(5..)
        } else {
            Bytes::new()
        },
    }
}

/// [`call`] over its own h2c connection to `addr`, from synchronous code (a test body).
///
/// # Panics
/// As [`call`]; and when no Tokio runtime can be built.
pub fn call_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    trailers: &[(&str, &str)],
) -> GrpcAnswer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let mut client = connect(addr).await;
        call(&mut client, addr, path, headers, body, trailers).await
    })
}
