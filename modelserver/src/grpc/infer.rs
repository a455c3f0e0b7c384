//! `ModelInfer` messages to and from tensors: inputs from `raw_input_contents` or typed `contents`
//! (element counts checked before anything is converted), outputs to `raw_output_contents`.

use bytes::Bytes;

use super::pb;
use crate::error::ServerError;
use crate::repository::LoadedModel;
use crate::server::{check_input, check_outputs, check_request};
use crate::tensor::{self, DataType, Tensor, TensorData};

/// Reads the request's `timeout` parameter: microseconds the request may stay queued, as Triton.
pub(super) fn timeout_parameter(
    p: Option<&pb::InferParameter>,
) -> Result<Option<std::time::Duration>, ServerError> {
    use pb::infer_parameter::ParameterChoice;
    let Some(p) = p else { return Ok(None) };
    let us = match p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => Some(v),
        _ => None,
    };
    us.map(|us| Some(std::time::Duration::from_micros(us)))
        .ok_or_else(|| {
            ServerError::InvalidInput(
                "parameter 'timeout' must be a non-negative integer (microseconds)".into(),
            )
        })
}

/// The request's inputs as checked tensors, the requested outputs and the batch size.
pub(super) fn decode_request(
    model: &LoadedModel,
    inputs: Vec<pb::model_infer_request::InferInputTensor>,
    raw: Vec<Vec<u8>>,
    outputs: Vec<pb::model_infer_request::InferRequestedOutputTensor>,
) -> Result<(Vec<Tensor>, Vec<String>, u64), ServerError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(ServerError::InvalidInput(format!(
            "raw_input_contents has {} entries but there are {} inputs",
            raw.len(),
            inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (_, datatype) = check_input(model, &input.name, &input.datatype, &input.shape)?;
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(_)) => {
                return Err(ServerError::InvalidInput(format!(
                    "input '{}' has typed contents while raw_input_contents is used",
                    input.name
                )));
            }
            (Some(bytes), None) => {
                tensor::decode_raw(&input.name, datatype, &input.shape, Bytes::from(bytes))?
            }
            (None, Some(contents)) => {
                decode_contents(&input.name, datatype, &input.shape, contents)?
            }
            (None, None) => {
                return Err(ServerError::InvalidInput(format!(
                    "input '{}' has no contents",
                    input.name
                )));
            }
        };
        tensors.push(Tensor {
            name: input.name,
            datatype,
            shape: input.shape,
            data,
        });
    }
    let batch = check_request(model, &tensors)?;
    let outputs = check_outputs(model, outputs.into_iter().map(|o| o.name).collect())?;
    Ok((tensors, outputs, batch))
}

/// Decodes typed `contents`, checking the element count before converting anything.
fn decode_contents(
    name: &str,
    dt: DataType,
    shape: &[i64],
    c: pb::InferTensorContents,
) -> Result<TensorData, ServerError> {
    let count = tensor::element_count(name, shape)?;
    let given = match dt {
        DataType::Bool => c.bool_contents.len(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => c.int_contents.len(),
        DataType::Int64 => c.int64_contents.len(),
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => c.uint_contents.len(),
        DataType::Uint64 => c.uint64_contents.len(),
        DataType::Fp32 => c.fp32_contents.len(),
        DataType::Fp64 => c.fp64_contents.len(),
        DataType::Bytes => c.bytes_contents.len(),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(ServerError::InvalidInput(format!(
                "input '{name}': {dt} has no typed contents field; send it in raw_input_contents"
            )));
        }
    };
    if given != count {
        return Err(ServerError::InvalidInput(format!(
            "input '{name}': shape {shape:?} needs {count} elements but contents has {given}"
        )));
    }
    let range = |i: usize| {
        ServerError::InvalidInput(format!(
            "input '{name}': element {i} is out of range for {dt}"
        ))
    };
    macro_rules! narrow {
        ($src:expr, $t:ty) => {{
            let mut out = Vec::with_capacity(count * std::mem::size_of::<$t>());
            for (i, v) in $src.iter().enumerate() {
                out.extend_from_slice(&<$t>::try_from(*v).map_err(|_| range(i))?.to_le_bytes());
            }
            out
        }};
    }
    let raw: Vec<u8> = match dt {
        DataType::Bool => c.bool_contents.iter().map(|&b| u8::from(b)).collect(),
        DataType::Int8 => narrow!(c.int_contents, i8),
        DataType::Int16 => narrow!(c.int_contents, i16),
        DataType::Int32 => narrow!(c.int_contents, i32),
        DataType::Int64 => narrow!(c.int64_contents, i64),
        DataType::Uint8 => narrow!(c.uint_contents, u8),
        DataType::Uint16 => narrow!(c.uint_contents, u16),
        DataType::Uint32 => narrow!(c.uint_contents, u32),
        DataType::Uint64 => narrow!(c.uint64_contents, u64),
        DataType::Fp32 => c
            .fp32_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Fp64 => c
            .fp64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Bytes => {
            return Ok(TensorData::Strings(
                c.bytes_contents.into_iter().map(Bytes::from).collect(),
            ));
        }
        DataType::Fp16 | DataType::Bf16 => Vec::new(),
    };
    Ok(TensorData::Raw(Bytes::from(raw)))
}

/// The answer to `ModelInfer`: every output in `raw_output_contents`, as Triton answers.
pub(super) fn infer_response(
    model: &LoadedModel,
    id: String,
    tensors: Vec<Tensor>,
) -> pb::ModelInferResponse {
    let mut response = pb::ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version_string(),
        id,
        ..Default::default()
    };
    for t in tensors {
        response.raw_output_contents.push(t.data.to_raw().to_vec());
        response
            .outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: t.name,
                datatype: t.datatype.as_str().into(),
                shape: t.shape,
                ..Default::default()
            });
    }
    response
}
