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

use bytes::Bytes;
use half::{bf16, f16};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use serde_json::Value as Json;

use crate::error::ServerError;

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

/// Flattens nested JSON arrays into `out`, refusing to hold more than `limit` elements.
fn flatten<'a>(value: &'a Json, out: &mut Vec<&'a Json>, limit: usize) -> bool {
    match value {
        Json::Array(items) => items.iter().all(|item| flatten(item, out, limit)),
        other => {
            if out.len() >= limit {
                return false;
            }
            out.push(other);
            true
        }
    }
}

/// Decodes JSON `data` (flat or nested) for a tensor of `datatype` and `shape`.
///
/// # Errors
/// [`ServerError::InvalidInput`] when the element count differs from the shape or an element is
/// not a value of the datatype (wrong kind, out of range, fractional integer).
pub fn decode_json(
    name: &str,
    datatype: DataType,
    shape: &[i64],
    data: &Json,
) -> Result<TensorData, ServerError> {
    let count = element_count(name, shape)?;
    let mut flat = Vec::new();
    // `count + 1` lets us notice "too many" without walking an arbitrarily large array.
    if !flatten(data, &mut flat, count.saturating_add(1)) || flat.len() != count {
        let given = if flat.len() > count {
            format!("more than {count}")
        } else {
            flat.len().to_string()
        };
        return Err(bad(format!(
            "input '{name}': shape {shape:?} needs {count} elements but data has {given}"
        )));
    }
    if datatype == DataType::Bytes {
        let strings = flat
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Json::String(s) => Ok(Bytes::copy_from_slice(s.as_bytes())),
                _ => Err(bad(format!(
                    "input '{name}': BYTES element {i} must be a JSON string"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(TensorData::Strings(strings));
    }
    let size = datatype.element_size().unwrap_or(1);
    let mut out = Vec::with_capacity(count * size);
    for (i, v) in flat.iter().enumerate() {
        push_json_element(&mut out, datatype, v).ok_or_else(|| {
            bad(format!(
                "input '{name}': element {i} ({v}) is not a valid {datatype}"
            ))
        })?;
    }
    Ok(TensorData::Raw(Bytes::from(out)))
}

fn push_json_element(out: &mut Vec<u8>, datatype: DataType, v: &Json) -> Option<()> {
    fn int(v: &Json) -> Option<i128> {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
    }
    macro_rules! push_int {
        ($t:ty) => {
            out.extend_from_slice(&<$t>::try_from(int(v)?).ok()?.to_le_bytes())
        };
    }
    match datatype {
        DataType::Bool => out.push(u8::from(v.as_bool()?)),
        DataType::Uint8 => push_int!(u8),
        DataType::Uint16 => push_int!(u16),
        DataType::Uint32 => push_int!(u32),
        DataType::Uint64 => push_int!(u64),
        DataType::Int8 => push_int!(i8),
        DataType::Int16 => push_int!(i16),
        DataType::Int32 => push_int!(i32),
        DataType::Int64 => push_int!(i64),
        DataType::Fp16 => out.extend_from_slice(&f16::from_f64(v.as_f64()?).to_le_bytes()),
        DataType::Bf16 => out.extend_from_slice(&bf16::from_f64(v.as_f64()?).to_le_bytes()),
        // Narrowing to f32 is the protocol's meaning of an FP32 JSON number.
        DataType::Fp32 => out.extend_from_slice(&(v.as_f64()? as f32).to_le_bytes()),
        DataType::Fp64 => out.extend_from_slice(&v.as_f64()?.to_le_bytes()),
        DataType::Bytes => return None,
    }
    Some(())
}

/// Renders tensor elements as a flat JSON array (the protocol's `data` field).
pub fn encode_json(datatype: DataType, data: &TensorData) -> Json {
    match data {
        TensorData::Strings(elements) => Json::Array(
            elements
                .iter()
                .map(|e| Json::String(String::from_utf8_lossy(e).into_owned()))
                .collect(),
        ),
        TensorData::Raw(raw) => {
            let size = datatype.element_size().unwrap_or(1);
            Json::Array(
                raw.chunks_exact(size)
                    .map(|c| json_element(datatype, c))
                    .collect(),
            )
        }
    }
}

fn json_element(datatype: DataType, c: &[u8]) -> Json {
    fn arr<const N: usize>(c: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&c[..N]);
        a
    }
    match datatype {
        DataType::Bool => Json::Bool(c[0] != 0),
        DataType::Uint8 => c[0].into(),
        DataType::Uint16 => u16::from_le_bytes(arr(c)).into(),
        DataType::Uint32 => u32::from_le_bytes(arr(c)).into(),
        DataType::Uint64 => u64::from_le_bytes(arr(c)).into(),
        DataType::Int8 => (c[0] as i8).into(),
        DataType::Int16 => i16::from_le_bytes(arr(c)).into(),
        DataType::Int32 => i32::from_le_bytes(arr(c)).into(),
        DataType::Int64 => i64::from_le_bytes(arr(c)).into(),
        DataType::Fp16 => float32(f16::from_le_bytes(arr(c)).to_f32()),
        DataType::Bf16 => float32(bf16::from_le_bytes(arr(c)).to_f32()),
        DataType::Fp32 => float32(f32::from_le_bytes(arr(c))),
        DataType::Fp64 => float(f64::from_le_bytes(arr(c))),
        DataType::Bytes => Json::Null,
    }
}

/// Renders an f32 by its shortest decimal form (3e10, not the 30000001024 its f64 widening
/// prints), which is the value a client wrote or a float32 array holds.
fn float32(x: f32) -> Json {
    float(x.to_string().parse().unwrap_or(f64::NAN))
}

/// JSON has no NaN or infinity; those render as `null` rather than failing the response.
fn float(x: f64) -> Json {
    serde_json::Number::from_f64(x)
        .map(Json::Number)
        .unwrap_or(Json::Null)
}

/// Converts a validated tensor into an ONNX Runtime value.
///
/// # Errors
/// [`ServerError::InvalidInput`] for BYTES elements that are not UTF-8 (ONNX Runtime string
/// tensors must be), [`ServerError::Internal`] when ONNX Runtime refuses the tensor.
pub fn to_ort(tensor: &Tensor) -> Result<DynValue, ServerError> {
    let shape: Vec<i64> = tensor.shape.clone();
    let ort_err = |e: ort::Error| ServerError::Internal(format!("input '{}': {e}", tensor.name));
    macro_rules! fixed {
        ($t:ty, $raw:expr) => {{
            let values: Vec<$t> = $raw
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            OrtTensor::from_array((shape, values))
                .map(|t| t.into_dyn())
                .map_err(ort_err)
        }};
    }
    match &tensor.data {
        TensorData::Strings(elements) => {
            let mut strings: Vec<String> = Vec::with_capacity(elements.len());
            for (i, e) in elements.iter().enumerate() {
                if e.contains(&0) {
                    return Err(bad(format!(
                        "input '{}': BYTES element {i} contains a NUL byte, which ONNX Runtime string tensors cannot carry",
                        tensor.name
                    )));
                }
                strings.push(String::from_utf8(e.to_vec()).map_err(|_| {
                    bad(format!(
                        "input '{}': BYTES element {i} is not UTF-8, which ONNX string tensors require",
                        tensor.name
                    ))
                })?);
            }
            OrtTensor::from_string_array((shape, std::sync::Arc::<[String]>::from(strings)))
                .map(|t| t.into_dyn())
                .map_err(ort_err)
        }
        TensorData::Raw(raw) => match tensor.datatype {
            DataType::Bool => {
                let values: Vec<bool> = raw.iter().map(|&b| b != 0).collect();
                OrtTensor::from_array((shape, values))
                    .map(|t| t.into_dyn())
                    .map_err(ort_err)
            }
            DataType::Uint8 => OrtTensor::from_array((shape, raw.to_vec()))
                .map(|t| t.into_dyn())
                .map_err(ort_err),
            DataType::Int8 => fixed!(i8, raw),
            DataType::Uint16 => fixed!(u16, raw),
            DataType::Int16 => fixed!(i16, raw),
            DataType::Uint32 => fixed!(u32, raw),
            DataType::Int32 => fixed!(i32, raw),
            DataType::Uint64 => fixed!(u64, raw),
            DataType::Int64 => fixed!(i64, raw),
            DataType::Fp16 => fixed!(f16, raw),
            DataType::Bf16 => fixed!(bf16, raw),
            DataType::Fp32 => fixed!(f32, raw),
            DataType::Fp64 => fixed!(f64, raw),
            DataType::Bytes => Err(ServerError::Internal(format!(
                "input '{}': BYTES tensor held raw data",
                tensor.name
            ))),
        },
    }
}

/// Converts an ONNX Runtime output value into a protocol tensor.
///
/// # Errors
/// [`ServerError::Internal`] when the output is not a tensor of a protocol datatype.
pub fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, ServerError> {
    let internal = |m: String| ServerError::Internal(format!("output '{name}': {m}"));
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(internal("is not a tensor".into()));
    };
    let datatype = DataType::from_ort(*ty)
        .ok_or_else(|| internal(format!("element type {ty} has no protocol datatype")))?;
    macro_rules! fixed {
        ($t:ty) => {{
            let (shape, values) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| internal(e.to_string()))?;
            let mut out = Vec::with_capacity(values.len() * std::mem::size_of::<$t>());
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
            (shape.to_vec(), TensorData::Raw(Bytes::from(out)))
        }};
    }
    let (shape, data) = match datatype {
        DataType::Bool => {
            let (shape, values) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| internal(e.to_string()))?;
            (
                shape.to_vec(),
                TensorData::Raw(
                    values
                        .iter()
                        .map(|&b| u8::from(b))
                        .collect::<Vec<u8>>()
                        .into(),
                ),
            )
        }
        DataType::Uint8 => {
            let (shape, values) = value
                .try_extract_tensor::<u8>()
                .map_err(|e| internal(e.to_string()))?;
            (
                shape.to_vec(),
                TensorData::Raw(Bytes::copy_from_slice(values)),
            )
        }
        DataType::Int8 => fixed!(i8),
        DataType::Uint16 => fixed!(u16),
        DataType::Int16 => fixed!(i16),
        DataType::Uint32 => fixed!(u32),
        DataType::Int32 => fixed!(i32),
        DataType::Uint64 => fixed!(u64),
        DataType::Int64 => fixed!(i64),
        DataType::Fp16 => fixed!(f16),
        DataType::Bf16 => fixed!(bf16),
        DataType::Fp32 => fixed!(f32),
        DataType::Fp64 => fixed!(f64),
        DataType::Bytes => {
            let (shape, strings) = value
                .try_extract_strings()
                .map_err(|e| internal(e.to_string()))?;
            (
                shape.to_vec(),
                TensorData::Strings(strings.into_iter().map(Bytes::from).collect()),
            )
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        datatype,
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_nested_and_flat_decode_to_the_same_bytes() {
        let flat = decode_json("x", DataType::Fp32, &[2, 2], &json!([1.0, 2.0, 3.0, 4.0])).unwrap();
        let nested = decode_json(
            "x",
            DataType::Fp32,
            &[2, 2],
            &json!([[1.0, 2.0], [3.0, 4.0]]),
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(
            encode_json(DataType::Fp32, &flat),
            json!([1.0, 2.0, 3.0, 4.0])
        );
    }

    #[test]
    fn json_rejects_out_of_range_and_wrong_kind() {
        let e = decode_json("x", DataType::Uint8, &[1], &json!([300])).unwrap_err();
        assert!(e.to_string().contains("not a valid UINT8"), "{e}");
        let e = decode_json("x", DataType::Int64, &[1], &json!([1.5])).unwrap_err();
        assert!(e.to_string().contains("not a valid INT64"), "{e}");
        let e = decode_json("x", DataType::Bytes, &[1], &json!([1])).unwrap_err();
        assert!(e.to_string().contains("JSON string"), "{e}");
    }

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

    #[test]
    fn every_fixed_type_round_trips_through_json() {
        for dt in ALL_DATATYPES {
            if dt == DataType::Bytes {
                continue;
            }
            let data = if dt == DataType::Bool {
                json!([true, false])
            } else {
                json!([1, 2])
            };
            let decoded = decode_json("x", dt, &[2], &data).unwrap();
            let TensorData::Raw(raw) = &decoded else {
                panic!()
            };
            assert_eq!(raw.len(), 2 * dt.element_size().unwrap(), "{dt}");
            let back = encode_json(dt, &decoded);
            let expected = if dt == DataType::Bool {
                json!([true, false])
            } else {
                json!([1, 2])
            };
            let as_f64 = |v: &Json| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(-1.0))
                    .collect::<Vec<_>>()
            };
            if dt == DataType::Bool {
                assert_eq!(back, expected);
            } else {
                assert_eq!(as_f64(&back), vec![1.0, 2.0], "{dt}");
            }
        }
    }
}
