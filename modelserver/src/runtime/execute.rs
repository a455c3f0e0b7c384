//! Running a session: inputs to ONNX Runtime values, a CUDA instance's run through an `IoBinding`
//! into pinned host memory (a CPU instance's plain `Session::run`), outputs back to tensors, with
//! the timings the statistics report.

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};

use super::{Instance, Placement};
use crate::error::ServerError;

/// Binds `values` as inputs and `outputs` to CUDA pinned host memory of `device`.
fn bind(
    session: &Session,
    device: i32,
    values: &[(&str, ort::value::DynValue)],
    outputs: &[String],
) -> Result<IoBinding, ort::Error> {
    let mut binding = session.create_binding()?;
    for (name, value) in values {
        binding.bind_input(*name, value)?;
    }
    let pinned = MemoryInfo::new(
        AllocationDevice::CUDA_PINNED,
        device,
        AllocatorType::Device,
        MemoryType::CPUOutput,
    )?;
    for name in outputs {
        binding.bind_output_to_device(name.as_str(), &pinned)?;
    }
    Ok(binding)
}

/// Time spent in each phase of one execution.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutionTimes {
    /// Building ONNX Runtime inputs.
    pub input: std::time::Duration,
    /// `Session::run`.
    pub infer: std::time::Duration,
    /// Extracting outputs.
    pub output: std::time::Duration,
}

/// Runs `instance` on validated `inputs` and returns the outputs named in `outputs`, in that order.
///
/// On CPU the inputs go to `Session::run` as values and the outputs come back in ONNX Runtime's CPU
/// memory. On a CUDA instance the run goes through an [`IoBinding`]: inputs are bound as they are
/// (ONNX Runtime copies each to the device once) and outputs are bound to CUDA pinned host memory,
/// which the device writes by DMA and this server reads in place, instead of ONNX Runtime
/// allocating them on the device and copying them to a second host buffer.
///
/// # Errors
/// [`ServerError::InvalidInput`] when a BYTES input is not UTF-8; [`ServerError::Internal`] when
/// ONNX Runtime fails.
pub fn execute(
    instance: &mut Instance,
    inputs: &[crate::tensor::Tensor],
    outputs: &[String],
) -> Result<(Vec<crate::tensor::Tensor>, ExecutionTimes), ServerError> {
    use std::time::Instant;
    let failed = |e: ort::Error| ServerError::Internal(format!("ONNX Runtime run failed: {e}"));
    let start = Instant::now();
    let values = inputs
        .iter()
        .map(|t| Ok((t.name.as_str(), crate::tensor::to_ort(t)?)))
        .collect::<Result<Vec<_>, ServerError>>()?;
    let input_done = Instant::now();
    let device = match instance.placement {
        Placement::Cpu => None,
        Placement::Gpu(device) => Some(device),
    };
    let session = &mut instance.session;
    let binding = match device {
        None => None,
        Some(device) => Some(bind(session, device, &values, outputs).map_err(failed)?),
    };
    let mut results = match &binding {
        None => session.run(values).map_err(failed)?,
        Some(binding) => session.run_binding(binding).map_err(failed)?,
    };
    let infer_done = Instant::now();
    let tensors = outputs
        .iter()
        .map(|name| {
            let value = results.remove(name.as_str()).ok_or_else(|| {
                ServerError::Internal(format!("ONNX Runtime produced no output '{name}'"))
            })?;
            crate::tensor::from_ort(name, &value)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let times = ExecutionTimes {
        input: input_done - start,
        infer: infer_done - input_done,
        output: infer_done.elapsed(),
    };
    Ok((tensors, times))
}
