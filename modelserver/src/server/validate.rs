//! Validating a request against the model's metadata before anything runs: each declared input
//! (name, datatype, shape) before its data is decoded, the inputs together (all present, one batch
//! size within `max_batch_size`), and the requested outputs.

use super::{DataType, LoadedModel, ServerError, Tensor, TensorSpec};

/// Checks one declared input (name, datatype, shape) against the model's metadata, before any
/// data is decoded.
///
/// # Errors
/// [`ServerError::InvalidInput`] naming the input and what does not match.
pub fn check_input<'m>(
    model: &'m LoadedModel,
    name: &str,
    datatype: &str,
    shape: &[i64],
) -> Result<(&'m TensorSpec, DataType), ServerError> {
    let bad = |m: String| ServerError::InvalidInput(m);
    let spec = model
        .inputs
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = model.inputs.iter().map(|s| s.name.as_str()).collect();
            bad(format!(
                "unexpected input '{name}' for model '{}' (inputs: {})",
                model.name,
                names.join(", ")
            ))
        })?;
    let dt = DataType::parse(datatype)
        .ok_or_else(|| bad(format!("input '{name}': unknown datatype '{datatype}'")))?;
    if dt != spec.datatype {
        return Err(bad(format!(
            "input '{name}': datatype {dt} does not match the model's {}",
            spec.datatype
        )));
    }
    if shape.len() != spec.shape.len() {
        return Err(bad(format!(
            "input '{name}': shape {shape:?} has rank {} but the model expects {:?}",
            shape.len(),
            spec.shape
        )));
    }
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(bad(format!(
            "input '{name}': shape {shape:?} has a negative dimension {d}"
        )));
    }
    if shape
        .iter()
        .zip(&spec.shape)
        .any(|(&got, &want)| want != -1 && got != want)
    {
        return Err(bad(format!(
            "input '{name}': shape {shape:?} does not match the model's {:?}",
            spec.shape
        )));
    }
    if model.config.max_batch_size > 0
        && let Some(&batch) = shape.first()
        && batch > i64::from(model.config.max_batch_size)
    {
        return Err(bad(format!(
            "input '{name}': batch size {batch} exceeds max_batch_size {}",
            model.config.max_batch_size
        )));
    }
    Ok((spec, dt))
}

/// Checks the request as a whole: every input exactly once, one batch size. Returns the batch size
/// (1 for models without batching).
///
/// # Errors
/// [`ServerError::InvalidInput`].
pub fn check_request(model: &LoadedModel, inputs: &[Tensor]) -> Result<u64, ServerError> {
    for (i, t) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|u| u.name == t.name) {
            return Err(ServerError::InvalidInput(format!(
                "input '{}' given more than once",
                t.name
            )));
        }
    }
    if let Some(missing) = model
        .inputs
        .iter()
        .find(|s| !inputs.iter().any(|t| t.name == s.name))
    {
        return Err(ServerError::InvalidInput(format!(
            "missing input '{}' for model '{}'",
            missing.name, model.name
        )));
    }
    if model.config.max_batch_size == 0 {
        return Ok(1);
    }
    let batch = inputs
        .first()
        .and_then(|t| t.shape.first())
        .copied()
        .unwrap_or(1);
    if let Some(t) = inputs.iter().find(|t| t.shape.first() != Some(&batch)) {
        return Err(ServerError::InvalidInput(format!(
            "input '{}' has batch size {:?} but other inputs have {batch}",
            t.name,
            t.shape.first()
        )));
    }
    Ok(u64::try_from(batch).unwrap_or(0))
}

/// Resolves requested output names (all outputs when none are named).
///
/// # Errors
/// [`ServerError::InvalidInput`] for a name the model does not have.
pub fn check_outputs(
    model: &LoadedModel,
    requested: Vec<String>,
) -> Result<Vec<String>, ServerError> {
    if requested.is_empty() {
        return Ok(model.outputs.iter().map(|s| s.name.clone()).collect());
    }
    for name in &requested {
        if !model.outputs.iter().any(|s| &s.name == name) {
            let names: Vec<&str> = model.outputs.iter().map(|s| s.name.as_str()).collect();
            return Err(ServerError::InvalidInput(format!(
                "unknown output '{name}' for model '{}' (outputs: {})",
                model.name,
                names.join(", ")
            )));
        }
    }
    Ok(requested)
}
