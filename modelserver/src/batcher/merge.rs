//! A batch's tensors: the members' inputs concatenated along dimension 0 into one run, and the
//! run's outputs split back into each member's rows, for fixed-width and BYTES data alike.

use bytes::BytesMut;

use crate::error::ServerError;
use crate::tensor::{Tensor, TensorData};

/// Concatenates each input of `requests` along dimension 0 (inputs line up by position: the
/// batcher sorted them by name and checked their other dimensions).
pub(super) fn merge(requests: &[Vec<Tensor>], size: usize) -> Result<Vec<Tensor>, ServerError> {
    let Some(first) = requests.first() else {
        return Ok(Vec::new());
    };
    let mut merged = Vec::with_capacity(first.len());
    for (i, template) in first.iter().enumerate() {
        let parts = requests.iter().filter_map(|r| r.get(i));
        let data = match &template.data {
            TensorData::Raw(_) => {
                let mut out = BytesMut::new();
                for t in parts {
                    match &t.data {
                        TensorData::Raw(b) => out.extend_from_slice(b),
                        TensorData::Strings(_) => return Err(mixed(&t.name)),
                    }
                }
                TensorData::Raw(out.freeze())
            }
            TensorData::Strings(_) => {
                let mut out = Vec::new();
                for t in parts {
                    match &t.data {
                        TensorData::Strings(s) => out.extend(s.iter().cloned()),
                        TensorData::Raw(_) => return Err(mixed(&t.name)),
                    }
                }
                TensorData::Strings(out)
            }
        };
        let mut shape = template.shape.clone();
        if let Some(d) = shape.first_mut() {
            *d = i64::try_from(size).unwrap_or(i64::MAX);
        }
        merged.push(Tensor {
            name: template.name.clone(),
            datatype: template.datatype,
            shape,
            data,
        });
    }
    Ok(merged)
}

fn mixed(name: &str) -> ServerError {
    ServerError::Internal(format!("input '{name}': mixed BYTES and fixed-width data"))
}

/// Splits each output along dimension 0 into `batches` rows per member.
pub(super) fn split(
    outputs: Vec<Tensor>,
    batches: &[usize],
    size: usize,
) -> Result<Vec<Vec<Tensor>>, ServerError> {
    let mut parts: Vec<Vec<Tensor>> = batches
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for t in outputs {
        let rows = t.shape.first().and_then(|&d| usize::try_from(d).ok());
        let elements = match &t.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Strings(s) => s.len(),
        };
        if rows != Some(size) || size == 0 || elements % size != 0 {
            return Err(ServerError::Internal(format!(
                "output '{}' has shape {:?}, which cannot be split into a batch of {size}",
                t.name, t.shape
            )));
        }
        let per_row = elements / size;
        let mut start = 0;
        for (part, &b) in parts.iter_mut().zip(batches) {
            let end = start + b * per_row;
            let data = match &t.data {
                TensorData::Raw(bytes) => TensorData::Raw(bytes.slice(start..end)),
                TensorData::Strings(s) => TensorData::Strings(s[start..end].to_vec()),
            };
            let mut shape = t.shape.clone();
            shape[0] = i64::try_from(b).unwrap_or(i64::MAX);
            part.push(Tensor {
                name: t.name.clone(),
                datatype: t.datatype,
                shape,
                data,
            });
            start = end;
        }
    }
    Ok(parts)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::tensor::DataType;
    use bytes::Bytes;

    /// An FP32 tensor of `values`; the batcher's tests use it too.
    pub(in crate::batcher) fn raw(name: &str, shape: &[i64], values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: shape.to_vec(),
            data: TensorData::Raw(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }

    #[test]
    fn merge_and_split_round_trip_fixed_and_bytes() {
        let a = vec![raw("x", &[1, 2], &[1.0, 2.0])];
        let b = vec![raw("x", &[2, 2], &[3.0, 4.0, 5.0, 6.0])];
        let merged = merge(&[a, b], 3).unwrap();
        assert_eq!(merged[0].shape, vec![3, 2]);
        let parts = split(merged, &[1, 2], 3).unwrap();
        assert_eq!(parts[0][0], raw("x", &[1, 2], &[1.0, 2.0]));
        assert_eq!(parts[1][0], raw("x", &[2, 2], &[3.0, 4.0, 5.0, 6.0]));

        let s = |v: &[&'static str], n: i64| Tensor {
            name: "t".into(),
            datatype: DataType::Bytes,
            shape: vec![n, 1],
            data: TensorData::Strings(v.iter().map(|e| Bytes::from_static(e.as_bytes())).collect()),
        };
        let merged = merge(&[vec![s(&["a", "b"], 2)], vec![s(&["c"], 1)]], 3).unwrap();
        assert_eq!(merged[0], s(&["a", "b", "c"], 3));
        let parts = split(merged, &[2, 1], 3).unwrap();
        assert_eq!(parts[0][0], s(&["a", "b"], 2));
        assert_eq!(parts[1][0], s(&["c"], 1));
    }

    #[test]
    fn split_rejects_an_output_without_the_batch_dimension() {
        let e = split(vec![raw("y", &[1], &[1.0])], &[1, 1], 2).unwrap_err();
        assert!(
            e.to_string().contains("cannot be split into a batch of 2"),
            "{e}"
        );
    }
}
