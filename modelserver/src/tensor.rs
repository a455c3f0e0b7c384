//! Open Inference Protocol tensors and their conversion to and from ONNX Runtime values.
//!
//! A request tensor arrives in one of four encodings: JSON `data` (flat or nested arrays), Triton's
//! binary tensor extension (a slice of the HTTP body), gRPC `raw_input_contents`, or gRPC typed
//! `contents`. Each decoder checks the declared shape and the data it was given *before* it
//! allocates anything sized by the shape: the element count is computed with checked arithmetic and
//! compared with the number of elements (or bytes) actually present, so a request declaring a
//! shape of billions of elements with a few bytes of data is rejected without allocating.
//!
//! Fixed-width data is kept as little-endian bytes ([`TensorData::Raw`]), the wire layout of both
//! the binary extension and gRPC raw contents, and copied once into an ONNX Runtime tensor. BYTES
//! tensors are ONNX string tensors; ONNX Runtime requires their elements to be UTF-8.
//!
//! This file owns the datatypes, the tensor and the binary decoders (raw contents, the binary
//! extension, length-prefixed BYTES); `json` owns JSON `data`, `onnx` the conversion to and from
//! ONNX Runtime values.

use bytes::Bytes;
use ort::value::TensorElementType;

use crate::error::ServerError;

mod json;
mod onnx;

pub use json::{decode_json, encode_json};
pub use onnx::{from_ort, to_ort};

/// An Open Inference Protocol datatype that ONNX has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE half precision.
    Fp16,
    /// `BF16`: bfloat16.
    Bf16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: variable-length byte strings, ONNX `string` tensors.
    Bytes,
}

/// Every datatype, for tables and tests.
pub const ALL_DATATYPES: [DataType; 14] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Bf16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
];

impl DataType {
    /// The protocol name (`"FP32"`, `"BYTES"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name; `None` for names outside the protocol or without an ONNX type.
    pub fn parse(name: &str) -> Option<Self> {
        ALL_DATATYPES.into_iter().find(|d| d.as_str() == name)
    }

    /// The model-configuration name (`"TYPE_FP32"`, `"TYPE_STRING"`, ...).
    pub fn config_name(self) -> &'static str {
        match self {
            DataType::Bool => "TYPE_BOOL",
            DataType::Uint8 => "TYPE_UINT8",
            DataType::Uint16 => "TYPE_UINT16",
            DataType::Uint32 => "TYPE_UINT32",
            DataType::Uint64 => "TYPE_UINT64",
            DataType::Int8 => "TYPE_INT8",
            DataType::Int16 => "TYPE_INT16",
            DataType::Int32 => "TYPE_INT32",
            DataType::Int64 => "TYPE_INT64",
            DataType::Fp16 => "TYPE_FP16",
            DataType::Bf16 => "TYPE_BF16",
            DataType::Fp32 => "TYPE_FP32",
            DataType::Fp64 => "TYPE_FP64",
            DataType::Bytes => "TYPE_STRING",
        }
    }

    /// Parses a model-configuration name.
    pub fn from_config_name(name: &str) -> Option<Self> {
        ALL_DATATYPES.into_iter().find(|d| d.config_name() == name)
    }

    /// The `DataType` enum number of the model-configuration protobuf schema.
    pub fn config_number(self) -> i32 {
        match self {
            DataType::Bool => 1,
            DataType::Uint8 => 2,
            DataType::Uint16 => 3,
            DataType::Uint32 => 4,
            DataType::Uint64 => 5,
            DataType::Int8 => 6,
            DataType::Int16 => 7,
            DataType::Int32 => 8,
            DataType::Int64 => 9,
            DataType::Fp16 => 10,
            DataType::Fp32 => 11,
            DataType::Fp64 => 12,
            DataType::Bytes => 13,
            DataType::Bf16 => 14,
        }
    }

    /// Bytes per element; `None` for BYTES.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// Maps an ONNX Runtime element type; `None` for types the protocol cannot carry.
    pub fn from_ort(ty: TensorElementType) -> Option<Self> {
        Some(match ty {
            TensorElementType::Bool => DataType::Bool,
            TensorElementType::Uint8 => DataType::Uint8,
            TensorElementType::Uint16 => DataType::Uint16,
            TensorElementType::Uint32 => DataType::Uint32,
            TensorElementType::Uint64 => DataType::Uint64,
            TensorElementType::Int8 => DataType::Int8,
            TensorElementType::Int16 => DataType::Int16,
            TensorElementType::Int32 => DataType::Int32,
            TensorElementType::Int64 => DataType::Int64,
            TensorElementType::Float16 => DataType::Fp16,
            TensorElementType::Bfloat16 => DataType::Bf16,
            TensorElementType::Float32 => DataType::Fp32,
            TensorElementType::Float64 => DataType::Fp64,
            TensorElementType::String => DataType::Bytes,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elements of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Fixed-width elements, little-endian, row-major, unpadded.
    Raw(Bytes),
    /// BYTES elements, row-major.
    Strings(Vec<Bytes>),
}

/// A named tensor as the protocol carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name from the model metadata.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions, each non-negative.
    pub shape: Vec<i64>,
    /// Elements.
    pub data: TensorData,
}

fn bad(message: String) -> ServerError {
    ServerError::InvalidInput(message)
}

/// Number of elements of `shape`, rejecting negative dimensions and overflow.
///
/// # Errors
/// [`ServerError::InvalidInput`] naming the tensor when a dimension is negative or the product
/// does not fit in `usize`.
pub fn element_count(name: &str, shape: &[i64]) -> Result<usize, ServerError> {
    let mut count: usize = 1;
    for &dim in shape {
        let dim = usize::try_from(dim).map_err(|_| {
            bad(format!(
                "input '{name}': shape {shape:?} has a negative dimension"
            ))
        })?;
        count = count.checked_mul(dim).ok_or_else(|| {
            bad(format!(
                "input '{name}': shape {shape:?} has too many elements"
            ))
        })?;
    }
    Ok(count)
}

/// Byte size of `count` fixed-width elements of `datatype`.
fn byte_size(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    count: usize,
) -> Result<usize, ServerError> {
    let size = datatype.element_size().unwrap_or(1);
    count.checked_mul(size).ok_or_else(|| {
        bad(format!(
            "input '{name}': shape {shape:?} has too many elements"
        ))
    })
}

/// Decodes a tensor body in the raw layout (binary extension or gRPC raw contents).
///
/// # Errors
/// [`ServerError::InvalidInput`] when the byte length does not match the shape, a BYTES element
/// length runs past the data, or a BOOL byte is not 0 or 1.
pub fn decode_raw(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    raw: Bytes,
) -> Result<TensorData, ServerError> {
    let count = element_count(name, shape)?;
    if datatype == DataType::Bytes {
        return decode_length_prefixed(name, shape, count, raw).map(TensorData::Strings);
    }
    let expected = byte_size(name, datatype, shape, count)?;
    if raw.len() != expected {
        return Err(bad(format!(
            "input '{name}': shape {shape:?} of {datatype} needs {expected} bytes but {} were given",
            raw.len()
        )));
    }
    if datatype == DataType::Bool && raw.iter().any(|&b| b > 1) {
        return Err(bad(format!("input '{name}': BOOL elements must be 0 or 1")));
    }
    Ok(TensorData::Raw(raw))
}

/// Splits BYTES elements, each prefixed by its 4-byte little-endian length.
fn decode_length_prefixed(
    name: &str,
    shape: &[i64],
    count: usize,
    raw: Bytes,
) -> Result<Vec<Bytes>, ServerError> {
    // Each element takes at least its 4-byte prefix, so the data bounds the element count; the
    // vector below never grows past what the body itself could describe.
    if count > raw.len() / 4 {
        return Err(bad(format!(
            "input '{name}': shape {shape:?} needs {count} BYTES elements but {} bytes cannot hold them",
            raw.len()
        )));
    }
    let mut elements = Vec::with_capacity(count);
    let mut offset = 0usize;
    while offset < raw.len() {
        let Some(prefix) = raw.get(offset..offset + 4) else {
            return Err(bad(format!(
                "input '{name}': truncated BYTES length prefix at byte {offset}"
            )));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = offset + 4;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= raw.len())
            .ok_or_else(|| {
                bad(format!(
                    "input '{name}': BYTES element {} declares {len} bytes but only {} remain",
                    elements.len(),
                    raw.len() - start
                ))
            })?;
        if elements.len() == count {
            return Err(bad(format!(
                "input '{name}': more BYTES elements than shape {shape:?} holds"
            )));
        }
        elements.push(raw.slice(start..end));
        offset = end;
    }
    if elements.len() != count {
        return Err(bad(format!(
            "input '{name}': shape {shape:?} needs {count} BYTES elements but {} were given",
            elements.len()
        )));
    }
    Ok(elements)
}

/// Encodes BYTES elements in the length-prefixed raw layout.
pub fn encode_length_prefixed(elements: &[Bytes]) -> Vec<u8> {
    let total: usize = elements.iter().map(|e| e.len() + 4).sum();
    let mut out = Vec::with_capacity(total);
    for element in elements {
        // Elements come from ONNX Runtime string tensors we produced or decoded from 4-byte
        // prefixes, so their lengths fit in u32; saturate rather than panic regardless.
        let len = u32::try_from(element.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(element);
    }
    out
}

impl TensorData {
    /// The raw wire layout of these elements.
    pub fn to_raw(&self) -> Bytes {
        match self {
            TensorData::Raw(bytes) => bytes.clone(),
            TensorData::Strings(elements) => Bytes::from(encode_length_prefixed(elements)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gigabyte_shape_is_rejected_without_allocating() {
        let e = decode_json("x", DataType::Fp32, &[1 << 20, 1 << 20], &json!([1.0])).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 1099511627776 elements but data has 1"),
            "{e}"
        );
        let e = decode_raw(
            "x",
            DataType::Fp64,
            &[i64::MAX, 4],
            Bytes::from_static(&[0; 8]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("too many elements"), "{e}");
        let e = decode_raw(
            "x",
            DataType::Bytes,
            &[1 << 40],
            Bytes::from_static(&[0; 8]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot hold them"), "{e}");
    }

    #[test]
    fn length_prefixed_bytes_round_trip_and_reject_lies() {
        let raw = encode_length_prefixed(&[Bytes::from_static(b"hi"), Bytes::from_static(b"")]);
        let data = decode_raw("s", DataType::Bytes, &[2], Bytes::from(raw.clone())).unwrap();
        assert_eq!(
            data,
            TensorData::Strings(vec![Bytes::from_static(b"hi"), Bytes::new()])
        );
        let mut lying = raw;
        lying[0] = 200;
        let e = decode_raw("s", DataType::Bytes, &[2], Bytes::from(lying)).unwrap_err();
        assert!(e.to_string().contains("declares 200 bytes"), "{e}");
    }
}
