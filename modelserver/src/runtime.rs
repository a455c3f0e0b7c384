//! ONNX Runtime: the one environment per process, execution providers, and session pools.
//!
//! `Session::run` takes `&mut self`, so a model version owns one session per instance
//! (`instance_group.count`) and a request borrows a free one for the duration of its run. The
//! pool's semaphore is the wait line: time spent waiting for a permit is the request's queue time.
//!
//! GPU instances register the CUDA execution provider with `error_on_failure`: if registration
//! fails the load fails with ONNX Runtime's reason, unless the operator explicitly allowed CPU
//! fallback for the model, in which case the session runs on CPU and [`Provider::CpuFallback`]
//! carries the reason to the logs, the model configuration parameters and the metrics. A CUDA
//! instance runs through an `IoBinding` (see [`execute`]); CPU instances, including fallbacks,
//! keep the plain `Session::run` path.
//!
//! This file owns the environment, providers and building sessions; `pool` owns the session pool
//! and reservations, `execute` one run of a session.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::ValueType;

use crate::config::GraphOptimization;
use crate::repository::config::{InstanceGroup, InstanceKind};
use crate::tensor::DataType;

mod execute;
mod pool;

pub use execute::{ExecutionTimes, execute};
pub use pool::{Reservation, SessionPool};

/// Errors creating the environment or sessions.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// No library path was configured and `ORT_DYLIB_PATH` is unset.
    #[error("no ONNX Runtime library: set runtime.ort_library or ORT_DYLIB_PATH")]
    NoLibrary,
    /// Loading the library or creating the environment failed.
    #[error("ONNX Runtime environment from {path}: {reason}")]
    Environment {
        /// Library path.
        path: PathBuf,
        /// Error text.
        reason: String,
    },
    /// The CUDA execution provider could not be registered and fallback is not allowed.
    #[error(
        "CUDA execution provider on GPU {device} could not be registered: {reason} (CPU fallback is not allowed for this model)"
    )]
    CudaUnavailable {
        /// CUDA device id.
        device: i32,
        /// ONNX Runtime's message.
        reason: String,
    },
    /// ONNX Runtime rejected the model file or a session option.
    #[error("creating session from {path}: {reason}")]
    Session {
        /// Model file.
        path: PathBuf,
        /// Error text.
        reason: String,
    },
}

static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, created on first use from `library` (or
/// `ORT_DYLIB_PATH`). Later calls return the same environment whatever path they pass: ONNX
/// Runtime allows one per process.
///
/// # Errors
/// [`RuntimeError::NoLibrary`] or [`RuntimeError::Environment`]; the failure is remembered.
pub fn environment(library: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let path = match library {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .ok_or(RuntimeError::NoLibrary)?,
        };
        let fail = |reason: String| RuntimeError::Environment {
            path: path.clone(),
            reason,
        };
        let builder = ort::init_from(&path).map_err(|e| fail(e.to_string()))?;
        builder
            .with_name("modelserver")
            .build()
            .map_err(|e| fail(e.to_string()))
    });
    result.as_ref().map_err(Clone::clone)
}

/// The execution provider a model version actually runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// CPU, as configured.
    Cpu,
    /// CUDA on these devices.
    Cuda(Vec<i32>),
    /// Configured for GPU, running on CPU because CUDA registration failed and fallback is allowed.
    CpuFallback {
        /// Why CUDA could not be used.
        reason: String,
    },
}

impl Provider {
    /// Short label for metrics and metadata: `cpu`, `cuda` or `cpu-fallback`.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda(_) => "cuda",
            Provider::CpuFallback { .. } => "cpu-fallback",
        }
    }
}

/// Where one session should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// CPU.
    Cpu,
    /// CUDA device id.
    Gpu(i32),
}

/// Expands instance groups into one placement per session. No groups means one CPU instance;
/// a GPU group without `gpus` uses device 0; `KIND_AUTO` runs on the listed GPUs if any, else CPU.
pub fn placements(groups: &[InstanceGroup]) -> Vec<Placement> {
    if groups.is_empty() {
        return vec![Placement::Cpu];
    }
    let mut out = Vec::new();
    for g in groups {
        let gpu = match g.kind {
            InstanceKind::Gpu => true,
            InstanceKind::Cpu => false,
            InstanceKind::Auto => !g.gpus.is_empty(),
        };
        if gpu {
            let devices = if g.gpus.is_empty() {
                vec![0]
            } else {
                g.gpus.clone()
            };
            for d in devices {
                out.extend(std::iter::repeat_n(Placement::Gpu(d), g.count as usize));
            }
        } else {
            out.extend(std::iter::repeat_n(Placement::Cpu, g.count as usize));
        }
    }
    out
}

/// Options for building one model version's sessions.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// Whether a failed CUDA registration may fall back to CPU.
    pub allow_cpu_fallback: bool,
    /// ONNX Runtime graph optimization level.
    pub graph_optimization: GraphOptimization,
    /// Whether intra-op threads spin while waiting for work.
    pub intra_op_spinning: bool,
    /// CUDA provider parameters from the model's `gpu_execution_accelerator`.
    pub cuda_parameters: Vec<(String, String)>,
}

/// Input or output signature read from the ONNX model.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Tensor name.
    pub name: String,
    /// Datatype, `None` when the protocol cannot carry the ONNX type.
    pub datatype: Option<DataType>,
    /// Full shape, -1 for dynamic dimensions.
    pub shape: Vec<i64>,
    /// Description of the ONNX type, for error messages.
    pub onnx_type: String,
}

/// One session and where it actually runs (CPU after an allowed CUDA fallback).
pub struct Instance {
    /// The ONNX Runtime session.
    pub session: Session,
    /// CPU, or the CUDA device whose execution provider is registered.
    pub placement: Placement,
}

/// Builds the sessions for `placements` from `model`.
///
/// # Errors
/// [`RuntimeError::Session`] when ONNX Runtime rejects the model; [`RuntimeError::CudaUnavailable`]
/// when a GPU placement cannot register CUDA and fallback is not allowed.
pub fn build_sessions(
    env: &Environment,
    model: &Path,
    placements: &[Placement],
    options: &SessionOptions,
) -> Result<(Vec<Instance>, Provider), RuntimeError> {
    let session_err = |e: String| RuntimeError::Session {
        path: model.to_path_buf(),
        reason: e,
    };
    let mut sessions = Vec::with_capacity(placements.len());
    let mut devices = Vec::new();
    let mut fallback: Option<String> = None;
    for &placement in placements {
        let builder = session_builder(env, options).map_err(|e| session_err(e.to_string()))?;
        let (builder, runs_on) = match placement {
            Placement::Cpu => (builder, Placement::Cpu),
            Placement::Gpu(device) => {
                match register_cuda(builder, device, &options.cuda_parameters) {
                    CudaRegistration::Registered(b) => {
                        if !devices.contains(&device) {
                            devices.push(device);
                        }
                        (b, placement)
                    }
                    CudaRegistration::Failed(builder, reason) => {
                        if !options.allow_cpu_fallback {
                            return Err(RuntimeError::CudaUnavailable { device, reason });
                        }
                        tracing::warn!(
                            model.path = %model.display(),
                            gpu.device = device,
                            error = %reason,
                            "CUDA execution provider unavailable: THIS GPU MODEL RUNS ON CPU (fallback allowed by config)"
                        );
                        fallback = Some(format!("GPU {device}: {reason}"));
                        (*builder, Placement::Cpu)
                    }
                }
            }
        };
        let mut builder = builder;
        let session = builder
            .commit_from_file(model)
            .map_err(|e| session_err(e.to_string()))?;
        sessions.push(Instance {
            session,
            placement: runs_on,
        });
    }
    let provider = match (fallback, devices.is_empty()) {
        (Some(reason), _) => Provider::CpuFallback { reason },
        (None, true) => Provider::Cpu,
        (None, false) => Provider::Cuda(devices),
    };
    Ok((sessions, provider))
}

/// A session builder with the options every instance of a model shares.
fn session_builder(env: &Environment, options: &SessionOptions) -> ort::Result<SessionBuilder> {
    Session::builder(env).and_then(|b| {
        b.with_intra_threads(options.intra_threads)?
            .with_optimization_level(ort_level(options.graph_optimization))?
            .with_intra_op_spinning(options.intra_op_spinning)
            .map_err(Into::into)
    })
}

/// ONNX Runtime's name for `level`.
fn ort_level(level: GraphOptimization) -> GraphOptimizationLevel {
    match level {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::Layout => GraphOptimizationLevel::Level3,
        GraphOptimization::All => GraphOptimizationLevel::All,
    }
}

/// Outcome of registering CUDA on a session builder.
enum CudaRegistration {
    /// CUDA is registered.
    Registered(SessionBuilder),
    /// Registration failed: the builder (still usable for CPU) and ONNX Runtime's reason.
    Failed(Box<SessionBuilder>, String),
}

/// Registers the CUDA execution provider with `error_on_failure` on `builder`.
fn register_cuda(
    builder: SessionBuilder,
    device: i32,
    parameters: &[(String, String)],
) -> CudaRegistration {
    let mut cuda = ep::CUDA::default().with_device_id(device);
    for (key, value) in parameters {
        // The config parser admits only the keys in `CUDA_PARAMETERS`.
        if key == "gpu_mem_limit" {
            match value.parse::<usize>() {
                Ok(limit) => cuda = cuda.with_memory_limit(limit),
                Err(_) => {
                    let reason = format!("gpu_mem_limit '{value}' is not a byte count");
                    return CudaRegistration::Failed(Box::new(builder), reason);
                }
            }
        } else if key == "cudnn_conv_algo_search" {
            let search = match value.as_str() {
                "EXHAUSTIVE" => ep::cuda::ConvAlgorithmSearch::Exhaustive,
                "HEURISTIC" => ep::cuda::ConvAlgorithmSearch::Heuristic,
                "DEFAULT" => ep::cuda::ConvAlgorithmSearch::Default,
                other => {
                    let reason = format!(
                        "cudnn_conv_algo_search '{other}' is not EXHAUSTIVE, HEURISTIC or DEFAULT"
                    );
                    return CudaRegistration::Failed(Box::new(builder), reason);
                }
            };
            cuda = cuda.with_conv_algorithm_search(search);
        }
    }
    match builder.with_execution_providers([cuda.build().error_on_failure()]) {
        Ok(b) => CudaRegistration::Registered(b),
        Err(e) => {
            let reason = e.message().to_string();
            CudaRegistration::Failed(Box::new(e.recover()), reason)
        }
    }
}

/// Reads the input and output signatures of an instance's session.
pub fn signatures(instance: &Instance) -> (Vec<Signature>, Vec<Signature>) {
    let session = &instance.session;
    let read = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => Signature {
                    name: o.name().to_string(),
                    datatype: DataType::from_ort(*ty),
                    shape: shape.to_vec(),
                    onnx_type: format!("tensor({ty})"),
                },
                other => Signature {
                    name: o.name().to_string(),
                    datatype: None,
                    shape: Vec::new(),
                    onnx_type: format!("{other:?}"),
                },
            })
            .collect()
    };
    (read(session.inputs()), read(session.outputs()))
}
