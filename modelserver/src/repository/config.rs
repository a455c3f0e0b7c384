//! The typed model configuration: the subset of Triton's `config.pbtxt` that modelserver honours.
//!
//! Every field outside the subset is rejected with its path and line, so a configuration never
//! silently means less than its author wrote. [`ModelConfig::to_json`] renders the configuration in
//! Triton's JSON form for `GET /v2/models/{m}/config`.
//!
//! This file owns the types; `parse` reads `config.pbtxt` into them (with `fields`, the typed
//! value readers), `json` renders them back.

use std::collections::BTreeMap;

use super::pbtxt;
use crate::config::GraphOptimization;
use crate::tensor::DataType;

mod fields;
mod json;
mod parse;

pub use parse::{CUDA_PARAMETERS, CUDNN_CONV_ALGO_SEARCH, IGNORED_FIELDS, REFUSED_FIELDS};

/// Triton's platform string for ONNX models.
pub const PLATFORM: &str = "onnxruntime_onnx";
/// Triton's backend name for ONNX Runtime.
pub const BACKEND: &str = "onnxruntime";
/// File name of the model inside a version directory unless `default_model_filename` says otherwise.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// A model's configuration after parsing and defaulting.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model name (the directory name).
    pub name: String,
    /// Largest batch a request may carry along the first dimension; 0 = the model does not batch.
    pub max_batch_size: u32,
    /// Declared inputs; empty means "take them from the ONNX model".
    pub inputs: Vec<TensorConfig>,
    /// Declared outputs; empty means "take them from the ONNX model".
    pub outputs: Vec<TensorConfig>,
    /// Dynamic batching settings, when the config enables it.
    pub dynamic_batching: Option<DynamicBatching>,
    /// Instance groups; empty means one CPU instance.
    pub instance_groups: Vec<InstanceGroup>,
    /// Which versions to serve.
    pub version_policy: VersionPolicy,
    /// GPU execution accelerators in priority order.
    pub gpu_accelerators: Vec<Accelerator>,
    /// `optimization { graph { level } }` as Triton's ONNX Runtime backend reads it: -1 basic,
    /// 1 extended, 2 all; `None` (absent or 0) takes the server's `graph_optimization_level`.
    pub graph_optimization: Option<GraphOptimization>,
    /// Model file name inside each version directory.
    pub default_model_filename: String,
    /// Free-form string parameters.
    pub parameters: BTreeMap<String, String>,
    /// Triton fields this server does not implement and ignores because they cannot change a
    /// result ([`IGNORED_FIELDS`]), as `path (line N)`: logged as a warning at load.
    pub ignored: Vec<String>,
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorConfig {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions without the batch dimension; -1 is variable.
    pub dims: Vec<i64>,
}

/// `dynamic_batching { ... }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DynamicBatching {
    /// Batch sizes to dispatch immediately when reached.
    pub preferred_batch_size: Vec<u32>,
    /// Longest a request waits for others to batch with.
    pub max_queue_delay_microseconds: u64,
    /// Whether responses keep request order.
    pub preserve_ordering: bool,
    /// `default_queue_policy.max_queue_size`; `None` = the server default.
    pub max_queue_size: Option<u32>,
    /// `default_queue_policy.default_timeout_microseconds`; 0 = none.
    pub default_timeout_microseconds: u64,
    /// `default_queue_policy.allow_timeout_override`.
    pub allow_timeout_override: bool,
}

/// Where an instance group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    /// GPU if listed GPUs exist (with the CUDA provider), otherwise CPU; treated as CPU here
    /// unless `gpus` is given.
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA; failing registration is an error unless CPU fallback is configured.
    Gpu,
}

impl InstanceKind {
    /// Triton's enum name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceKind::Auto => "KIND_AUTO",
            InstanceKind::Cpu => "KIND_CPU",
            InstanceKind::Gpu => "KIND_GPU",
        }
    }
}

/// `instance_group { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceGroup {
    /// Optional group name.
    pub name: Option<String>,
    /// Instances per listed GPU (or in total on CPU).
    pub count: u32,
    /// Device kind.
    pub kind: InstanceKind,
    /// CUDA device ids.
    pub gpus: Vec<i32>,
}

/// `version_policy { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The N highest versions.
    Latest(u32),
    /// Every version present.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// Chooses which of `available` (any order) to serve, ascending.
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        let mut sorted = available.to_vec();
        sorted.sort_unstable();
        match self {
            VersionPolicy::All => sorted,
            VersionPolicy::Latest(n) => {
                let keep = (*n as usize).min(sorted.len());
                sorted.split_off(sorted.len() - keep)
            }
            VersionPolicy::Specific(wanted) => {
                sorted.into_iter().filter(|v| wanted.contains(v)).collect()
            }
        }
    }
}

/// An execution accelerator entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {
    /// Accelerator name; only `cuda` is supported.
    pub name: String,
    /// Accelerator parameters.
    pub parameters: BTreeMap<String, String>,
}

/// A configuration problem, with the field path and line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid text format.
    #[error("config.pbtxt: {0}")]
    Syntax(#[from] pbtxt::SyntaxError),
    /// A field modelserver does not support.
    #[error("config.pbtxt line {line}: unsupported field '{path}'")]
    Unsupported {
        /// Dotted field path.
        path: String,
        /// 1-based line.
        line: usize,
    },
    /// A supported field with a bad value.
    #[error("config.pbtxt line {line}: field '{path}': {message}")]
    Invalid {
        /// Dotted field path.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl ModelConfig {
    /// The configuration of a model without `config.pbtxt`: everything from the ONNX model.
    pub fn empty(name: &str) -> Self {
        ModelConfig {
            name: name.to_string(),
            max_batch_size: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
            dynamic_batching: None,
            instance_groups: Vec::new(),
            version_policy: VersionPolicy::Latest(1),
            gpu_accelerators: Vec::new(),
            graph_optimization: None,
            default_model_filename: DEFAULT_MODEL_FILENAME.to_string(),
            parameters: BTreeMap::new(),
            ignored: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
