//! Protocol tensors to and from ONNX Runtime values: one copy of the wire-layout bytes into an
//! ORT tensor, BYTES as ONNX string tensors (UTF-8, no NUL), and outputs back to wire layout.

use bytes::Bytes;
use half::{bf16, f16};
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};

use super::{DataType, Tensor, TensorData, bad};
use crate::error::ServerError;

/// Converts a validated tensor into an ONNX Runtime value.
///
/// # Errors
/// [`ServerError::InvalidInput`] for BYTES elements that are not UTF-8 (ONNX Runtime string
/// tensors must be), [`ServerError::Internal`] when ONNX Runtime refuses the tensor.
pub fn to_ort(tensor: &Tensor) -> Result<DynValue, ServerError> {
    let shape: Vec<i64> = tensor.shape.clone();
    let ort_err = ort_error(&tensor.name);
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
        TensorData::Strings(elements) => strings_to_ort(tensor, elements),
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

/// A BYTES tensor as an ONNX string tensor, whose elements must be UTF-8 without NUL.
fn strings_to_ort(tensor: &Tensor, elements: &[Bytes]) -> Result<DynValue, ServerError> {
    let shape: Vec<i64> = tensor.shape.clone();
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
        .map_err(ort_error(&tensor.name))
}

/// ONNX Runtime refusing input `name`: an internal error, since the input was validated.
fn ort_error(name: &str) -> impl Fn(ort::Error) -> ServerError + '_ {
    move |e| ServerError::Internal(format!("input '{name}': {e}"))
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
