//! OIP JSON tensor data: decoding `data` (flat or nested arrays) into wire-layout bytes, checked
//! against the declared shape and datatype before anything shape-sized is allocated, and encoding
//! results back.

use bytes::Bytes;
use half::{bf16, f16};
use serde_json::Value as Json;

use super::{DataType, TensorData, bad, element_count};
use crate::error::ServerError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::ALL_DATATYPES;
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
