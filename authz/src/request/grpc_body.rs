//! The gRPC body peek: `model_name` (field 1) and `model_version` (field 2) of the first gRPC
//! frame of the body Envoy forwards (`with_request_body`, `pack_as_bytes`). Only the first frame
//! is read (1-byte compressed flag, 4-byte big-endian length); the fields must lie entirely within
//! the bytes received, and a compressed frame, a repeated field or a cut field is refused.

use super::{Action, MAX_MODEL_NAME, MAX_MODEL_VERSION, ModelRef};

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

/// The length of the first gRPC frame declared by its 5-byte header (the header included), once
/// `body` holds that header: how many bytes an adapter that reads the whole first message (the
/// embedded filter) must collect before calling [`parse_grpc_model`].
pub fn first_frame_len(body: &[u8]) -> Option<usize> {
    let header: [u8; 4] = body.get(1..5)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(header))
        .ok()?
        .checked_add(5)
}

/// Reads `model_name` (field 1) and `model_version` (field 2) from the first gRPC frame in `body`.
///
/// # Errors
/// [`GrpcBodyError`] when the frame is compressed, malformed, or the fields are not fully present.
pub fn parse_grpc_model(body: &[u8], action: Action) -> Result<ModelRef, GrpcBodyError> {
    let (msg, complete) = first_frame(body)?;
    let ModelFields { name, version } = model_fields(msg, complete)?;
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

/// The bytes of the first frame's message that `body` holds, and whether it holds all of them.
fn first_frame(body: &[u8]) -> Result<(&[u8], bool), GrpcBodyError> {
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
    Ok((&avail[..len.min(avail.len())], avail.len() >= len))
}

/// The raw bytes of fields 1 and 2 of a `ModelInferRequest` (or any model-scoped request), as
/// far as they were present.
struct ModelFields<'a> {
    name: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
}

/// Fields 1 and 2 (`model_name`, `model_version`) of `msg`, skipping every other field. In a
/// message that is not `complete`, a field cut at the end is no error unless it is one of ours.
fn model_fields(msg: &[u8], complete: bool) -> Result<ModelFields<'_>, GrpcBodyError> {
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
        let Some(skip) = value_length(msg, &mut pos, wire, ours, complete)? else {
            break;
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
    Ok(ModelFields { name, version })
}

/// How many bytes the value of a field of wire type `wire` takes after `pos` (which moves past a
/// varint value or a length prefix); `None` when a partial body ends inside a field not ours.
fn value_length(
    msg: &[u8],
    pos: &mut usize,
    wire: u64,
    ours: bool,
    complete: bool,
) -> Result<Option<usize>, GrpcBodyError> {
    Ok(Some(match wire {
        0 => match read_varint(msg, pos) {
            Some(_) => 0,
            None if complete => return Err(GrpcBodyError::Malformed),
            None => return Ok(None),
        },
        1 => 8,
        5 => 4,
        2 => match read_varint(msg, pos) {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None if ours || complete => return Err(GrpcBodyError::Truncated),
            None => return Ok(None),
        },
        _ => return Err(GrpcBodyError::Malformed),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_first_frame_length_counts_its_header() {
        let b = frame(&[(1, b"m")], false, 7);
        assert_eq!(first_frame_len(&b), Some(5 + 3 + 7));
        assert_eq!(first_frame_len(&b[..4]), None);
        // A duplicate anywhere in a whole message is refused, however far from the start.
        let pad = [b'x'; 120];
        let mut fields: Vec<(u8, &[u8])> = vec![(1, b"m")];
        fields.extend(std::iter::repeat_n((3u8, pad.as_slice()), 20));
        fields.push((1, b"n"));
        let whole = frame(&fields, false, 0);
        assert!(whole.len() > 2048);
        assert_eq!(
            parse_grpc_model(&whole, Action::Infer),
            Err(GrpcBodyError::Duplicate)
        );
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
}
