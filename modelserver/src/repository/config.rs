//! The typed model configuration: the subset of Triton's `config.pbtxt` that modelserver honours.
//!
//! Every field outside the subset is rejected with its path and line, so a configuration never
//! silently means less than its author wrote. [`ModelConfig::to_json`] renders the configuration in
//! Triton's JSON form for `GET /v2/models/{m}/config`.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::pbtxt::{self, Field, Value};
use crate::config::GraphOptimization;
use crate::tensor::DataType;

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

/// Triton `config.pbtxt` fields accepted and ignored, with why ignoring them is safe: each only
/// tunes speed, warm-up or reporting, never what a request computes. Anything else this server
/// does not implement is refused ([`REFUSED_FIELDS`], or "unsupported field").
pub const IGNORED_FIELDS: [(&str, &str); 10] = [
    (
        "model_warmup",
        "warm-up requests only change the first request's latency",
    ),
    (
        "response_cache",
        "Triton's response cache only skips recomputing the same answer",
    ),
    ("model_metrics", "metric customisation"),
    ("metric_tags", "metric labels"),
    ("optimization.priority", "a scheduling priority hint"),
    (
        "optimization.cuda",
        "CUDA graph and stream hints for Triton's own backends",
    ),
    (
        "optimization.input_pinned_memory",
        "a host memory placement hint",
    ),
    (
        "optimization.output_pinned_memory",
        "a host memory placement hint",
    ),
    (
        "optimization.gather_kernel_buffer_threshold",
        "a copy strategy hint",
    ),
    ("optimization.eager_batching", "a batching latency hint"),
];

/// Triton `config.pbtxt` fields refused with the reason: ignoring them would change which model
/// runs, what it sees or what the protocol answers.
pub const REFUSED_FIELDS: [(&str, &str); 8] = [
    (
        "sequence_batching",
        "stateful sequence batching is not implemented",
    ),
    ("ensemble_scheduling", "ensembles are not implemented"),
    (
        "batch_input",
        "batch inputs would change the tensors the model receives",
    ),
    (
        "batch_output",
        "batch outputs would change the tensors the model returns",
    ),
    (
        "model_repository_agents",
        "repository agents transform the model files (e.g. decrypt them)",
    ),
    (
        "cc_model_filenames",
        "per-compute-capability model files would select another model file",
    ),
    (
        "model_operations",
        "custom operator libraries are not loaded",
    ),
    ("runtime", "only the ONNX Runtime backend is available"),
];

/// `Ok(true)` when `path` (with `f` its field) is ignored, an error naming the reason when it is
/// refused, `Ok(false)` when it is neither (the caller then reports it unsupported).
fn ignorable(path: &str, f: &Field, ignored: &mut Vec<String>) -> Result<bool, ConfigError> {
    let full = join(path, &f.name);
    if let Some((_, reason)) = REFUSED_FIELDS.iter().find(|(name, _)| *name == full) {
        return Err(invalid(path, f, format!("not supported: {reason}")));
    }
    if IGNORED_FIELDS.iter().any(|(name, _)| *name == full) {
        ignored.push(format!("{full} (line {})", f.line));
        return Ok(true);
    }
    Ok(false)
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

fn invalid(path: &str, f: &Field, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: join(path, &f.name),
        line: f.line,
        message: message.into(),
    }
}

fn unsupported(path: &str, f: &Field) -> ConfigError {
    ConfigError::Unsupported {
        path: join(path, &f.name),
        line: f.line,
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn string(path: &str, f: &Field) -> Result<String, ConfigError> {
    match &f.value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(invalid(path, f, "expected a quoted string")),
    }
}

fn word<'a>(path: &str, f: &'a Field) -> Result<&'a str, ConfigError> {
    match &f.value {
        Value::Word(w) => Ok(w),
        _ => Err(invalid(path, f, "expected a number or identifier")),
    }
}

fn number<T: std::str::FromStr>(path: &str, f: &Field) -> Result<T, ConfigError> {
    let w = word(path, f)?;
    w.parse().map_err(|_| {
        invalid(
            path,
            f,
            format!("'{w}' is not a valid {}", std::any::type_name::<T>()),
        )
    })
}

fn boolean(path: &str, f: &Field) -> Result<bool, ConfigError> {
    match word(path, f)? {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        other => Err(invalid(path, f, format!("'{other}' is not a boolean"))),
    }
}

fn message<'a>(path: &str, f: &'a Field) -> Result<&'a [Field], ConfigError> {
    match &f.value {
        Value::Message(m) => Ok(m),
        _ => Err(invalid(path, f, "expected a message { ... }")),
    }
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

    /// Parses `config.pbtxt` text for the model in directory `name`.
    ///
    /// # Errors
    /// [`ConfigError`] for syntax errors, unsupported fields and invalid values.
    pub fn parse(name: &str, text: &str) -> Result<Self, ConfigError> {
        let fields = pbtxt::parse(text)?;
        let mut config = ModelConfig::empty(name);
        for f in &fields {
            match f.name.as_str() {
                "name" => {
                    let n = string("", f)?;
                    if n != name {
                        return Err(invalid(
                            "",
                            f,
                            format!("'{n}' differs from the model directory '{name}'"),
                        ));
                    }
                }
                "platform" => {
                    let p = string("", f)?;
                    if p != PLATFORM {
                        return Err(invalid(
                            "",
                            f,
                            format!("'{p}' is not supported; only '{PLATFORM}'"),
                        ));
                    }
                }
                "backend" => {
                    let b = string("", f)?;
                    if b != BACKEND {
                        return Err(invalid(
                            "",
                            f,
                            format!("'{b}' is not supported; only '{BACKEND}'"),
                        ));
                    }
                }
                "max_batch_size" => config.max_batch_size = number("", f)?,
                "default_model_filename" => config.default_model_filename = file_name("", f)?,
                "input" => config.inputs.push(tensor_config("input", f)?),
                "output" => config.outputs.push(tensor_config("output", f)?),
                "dynamic_batching" => config.dynamic_batching = Some(dynamic_batching(f)?),
                "instance_group" => config.instance_groups.push(instance_group(f)?),
                "version_policy" => config.version_policy = version_policy(f)?,
                "optimization" => {
                    let (accelerators, graph) = optimization(f, &mut config.ignored)?;
                    config.gpu_accelerators = accelerators;
                    config.graph_optimization = graph;
                }
                "parameters" => {
                    let (k, v) = parameter(f)?;
                    if k == crate::batcher::BATCH_WAIT_PARAMETER
                        && crate::batcher::BatchWait::parse(&v).is_none()
                    {
                        return Err(invalid(
                            "",
                            f,
                            format!("batch_wait '{v}' is not 'busy' or 'always'"),
                        ));
                    }
                    config.parameters.insert(k, v);
                }
                // What Triton's auto-completed configs say by default; `true` (streamed
                // answers) is not implemented.
                "model_transaction_policy" => {
                    for g in message("", f)? {
                        match g.name.as_str() {
                            "decoupled" if !boolean("model_transaction_policy", g)? => {}
                            "decoupled" => {
                                return Err(invalid(
                                    "model_transaction_policy",
                                    g,
                                    "decoupled models are not supported",
                                ));
                            }
                            _ => return Err(unsupported("model_transaction_policy", g)),
                        }
                    }
                }
                _ if ignorable("", f, &mut config.ignored)? => {}
                _ => return Err(unsupported("", f)),
            }
        }
        Ok(config)
    }

    /// Triton's JSON form of this configuration.
    pub fn to_json(&self, extra_parameters: &BTreeMap<String, String>) -> Json {
        let tensor = |t: &TensorConfig| json!({"name": t.name, "data_type": t.datatype.config_name(), "dims": t.dims});
        let policy = match &self.version_policy {
            VersionPolicy::Latest(n) => json!({"latest": {"num_versions": n}}),
            VersionPolicy::All => json!({"all": {}}),
            VersionPolicy::Specific(v) => json!({"specific": {"versions": v}}),
        };
        let groups: Vec<Json> = self
            .instance_groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                json!({
                    "name": g.name.clone().unwrap_or_else(|| format!("{}_{i}", self.name)),
                    "kind": g.kind.as_str(),
                    "count": g.count,
                    "gpus": g.gpus,
                })
            })
            .collect();
        let mut parameters = serde_json::Map::new();
        for (k, v) in self.parameters.iter().chain(extra_parameters) {
            parameters.insert(k.clone(), json!({"string_value": v}));
        }
        let mut out = json!({
            "name": self.name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "version_policy": policy,
            "max_batch_size": self.max_batch_size,
            "input": self.inputs.iter().map(tensor).collect::<Vec<_>>(),
            "output": self.outputs.iter().map(tensor).collect::<Vec<_>>(),
            "instance_group": groups,
            "default_model_filename": self.default_model_filename,
            "parameters": parameters,
        });
        if let Some(d) = &self.dynamic_batching {
            out["dynamic_batching"] = json!({
                "preferred_batch_size": d.preferred_batch_size,
                "max_queue_delay_microseconds": d.max_queue_delay_microseconds,
                "preserve_ordering": d.preserve_ordering,
                "default_queue_policy": {
                    "max_queue_size": d.max_queue_size.unwrap_or(0),
                    "default_timeout_microseconds": d.default_timeout_microseconds,
                    "allow_timeout_override": d.allow_timeout_override,
                },
            });
        }
        if !self.gpu_accelerators.is_empty() {
            let accs: Vec<Json> = self
                .gpu_accelerators
                .iter()
                .map(|a| json!({"name": a.name, "parameters": a.parameters}))
                .collect();
            out["optimization"] =
                json!({"execution_accelerators": {"gpu_execution_accelerator": accs}});
        }
        if let Some(level) = self.graph_optimization.and_then(graph_level_number) {
            out["optimization"]["graph"] = json!({ "level": level });
        }
        out
    }
}

fn file_name(path: &str, f: &Field) -> Result<String, ConfigError> {
    let s = string(path, f)?;
    if s.is_empty() || s.contains('/') || s.contains('\\') || s == "." || s == ".." {
        return Err(invalid(path, f, format!("'{s}' must be a plain file name")));
    }
    Ok(s)
}

fn tensor_config(path: &str, f: &Field) -> Result<TensorConfig, ConfigError> {
    let mut name = None;
    let mut datatype = None;
    let mut dims = Vec::new();
    for g in message("", f)? {
        match g.name.as_str() {
            "name" => name = Some(string(path, g)?),
            "data_type" => {
                let w = word(path, g)?;
                datatype = Some(DataType::from_config_name(w).ok_or_else(|| {
                    invalid(path, g, format!("'{w}' is not a supported data type"))
                })?);
            }
            "dims" => {
                let d: i64 = number(path, g)?;
                if d < -1 || d == 0 {
                    return Err(invalid(
                        path,
                        g,
                        format!("dimension {d} must be positive or -1"),
                    ));
                }
                dims.push(d);
            }
            "format" if matches!(word(path, g)?, "FORMAT_NONE") => {}
            _ => return Err(unsupported(path, g)),
        }
    }
    let name = name.ok_or_else(|| invalid("", f, "missing 'name'"))?;
    let datatype =
        datatype.ok_or_else(|| invalid("", f, format!("'{name}' is missing 'data_type'")))?;
    Ok(TensorConfig {
        name,
        datatype,
        dims,
    })
}

fn dynamic_batching(f: &Field) -> Result<DynamicBatching, ConfigError> {
    let path = "dynamic_batching";
    let mut d = DynamicBatching::default();
    for g in message("", f)? {
        match g.name.as_str() {
            "preferred_batch_size" => d.preferred_batch_size.push(number(path, g)?),
            "max_queue_delay_microseconds" => d.max_queue_delay_microseconds = number(path, g)?,
            "preserve_ordering" => d.preserve_ordering = boolean(path, g)?,
            "default_queue_policy" => {
                let qpath = "dynamic_batching.default_queue_policy";
                for h in message(path, g)? {
                    match h.name.as_str() {
                        "max_queue_size" => d.max_queue_size = Some(number(qpath, h)?),
                        "default_timeout_microseconds" => {
                            d.default_timeout_microseconds = number(qpath, h)?
                        }
                        "allow_timeout_override" => d.allow_timeout_override = boolean(qpath, h)?,
                        "timeout_action" if word(qpath, h)? == "REJECT" => {}
                        _ => return Err(unsupported(qpath, h)),
                    }
                }
            }
            _ => return Err(unsupported(path, g)),
        }
    }
    Ok(d)
}

fn instance_group(f: &Field) -> Result<InstanceGroup, ConfigError> {
    let path = "instance_group";
    let mut group = InstanceGroup {
        name: None,
        count: 1,
        kind: InstanceKind::Auto,
        gpus: Vec::new(),
    };
    for g in message("", f)? {
        match g.name.as_str() {
            "name" => group.name = Some(string(path, g)?),
            "count" => {
                group.count = number(path, g)?;
                if group.count == 0 {
                    return Err(invalid(path, g, "count must be at least 1"));
                }
            }
            "kind" => {
                group.kind = match word(path, g)? {
                    "KIND_AUTO" => InstanceKind::Auto,
                    "KIND_CPU" => InstanceKind::Cpu,
                    "KIND_GPU" => InstanceKind::Gpu,
                    other => return Err(invalid(path, g, format!("'{other}' is not supported"))),
                }
            }
            "gpus" => group.gpus.push(number(path, g)?),
            _ => return Err(unsupported(path, g)),
        }
    }
    if group.kind == InstanceKind::Cpu && !group.gpus.is_empty() {
        return Err(invalid("", f, "a KIND_CPU group cannot list gpus"));
    }
    Ok(group)
}

fn version_policy(f: &Field) -> Result<VersionPolicy, ConfigError> {
    let path = "version_policy";
    let inner = message("", f)?;
    let [choice] = inner else {
        return Err(invalid("", f, "exactly one of latest, all, specific"));
    };
    let cpath = join(path, &choice.name);
    match choice.name.as_str() {
        "all" => match message(path, choice)?.first() {
            None => Ok(VersionPolicy::All),
            Some(g) => Err(unsupported(&cpath, g)),
        },
        "latest" => {
            let mut n = 1;
            for g in message(path, choice)? {
                match g.name.as_str() {
                    "num_versions" => n = number(&cpath, g)?,
                    _ => return Err(unsupported(&cpath, g)),
                }
            }
            Ok(VersionPolicy::Latest(n))
        }
        "specific" => {
            let mut versions = Vec::new();
            for g in message(path, choice)? {
                match g.name.as_str() {
                    "versions" => versions.push(number(&cpath, g)?),
                    _ => return Err(unsupported(&cpath, g)),
                }
            }
            Ok(VersionPolicy::Specific(versions))
        }
        _ => Err(unsupported(path, choice)),
    }
}

/// Triton's graph level numbers as its ONNX Runtime backend maps them. Level 0 is "the default",
/// which here is the server's `runtime.graph_optimization_level`.
fn graph_level(path: &str, f: &Field) -> Result<Option<GraphOptimization>, ConfigError> {
    match number::<i64>(path, f)? {
        -1 => Ok(Some(GraphOptimization::Basic)),
        0 => Ok(None),
        1 => Ok(Some(GraphOptimization::Extended)),
        2 => Ok(Some(GraphOptimization::All)),
        n => Err(invalid(
            path,
            f,
            format!(
                "graph level {n} is not -1 (basic), 0 (server default), 1 (extended) or 2 (all)"
            ),
        )),
    }
}

/// The number [`graph_level`] reads back to `level`, for the JSON form.
fn graph_level_number(level: GraphOptimization) -> Option<i64> {
    match level {
        GraphOptimization::Basic => Some(-1),
        GraphOptimization::Extended => Some(1),
        GraphOptimization::All => Some(2),
        GraphOptimization::Disable | GraphOptimization::Layout => None,
    }
}

/// GPU accelerators and graph optimization level from `optimization { ... }`.
type Optimization = (Vec<Accelerator>, Option<GraphOptimization>);

fn optimization(f: &Field, ignored: &mut Vec<String>) -> Result<Optimization, ConfigError> {
    let mut accelerators = Vec::new();
    let mut graph = None;
    for g in message("", f)? {
        if ignorable("optimization", g, ignored)? {
            continue;
        }
        if g.name == "graph" {
            for h in message("optimization", g)? {
                if h.name != "level" {
                    return Err(unsupported("optimization.graph", h));
                }
                graph = graph_level("optimization.graph", h)?;
            }
            continue;
        }
        if g.name != "execution_accelerators" {
            return Err(unsupported("optimization", g));
        }
        let path = "optimization.execution_accelerators";
        for h in message("optimization", g)? {
            if h.name != "gpu_execution_accelerator" {
                return Err(unsupported(path, h));
            }
            let apath = "optimization.execution_accelerators.gpu_execution_accelerator";
            let mut acc = Accelerator {
                name: String::new(),
                parameters: BTreeMap::new(),
            };
            for k in message(path, h)? {
                match k.name.as_str() {
                    "name" => acc.name = string(apath, k)?,
                    "parameters" => {
                        let (key, value) = string_map_entry(apath, k)?;
                        acc.parameters.insert(key, value);
                    }
                    _ => return Err(unsupported(apath, k)),
                }
            }
            if acc.name != "cuda" {
                return Err(invalid(
                    path,
                    h,
                    format!("accelerator '{}' is not supported; only 'cuda'", acc.name),
                ));
            }
            if let Some(key) = acc
                .parameters
                .keys()
                .find(|k| !CUDA_PARAMETERS.contains(&k.as_str()))
            {
                return Err(invalid(
                    path,
                    h,
                    format!("cuda parameter '{key}' is not supported"),
                ));
            }
            if let Some(v) = acc.parameters.get("gpu_mem_limit")
                && v.parse::<u64>().is_err()
            {
                return Err(invalid(
                    path,
                    h,
                    format!("gpu_mem_limit '{v}' is not a byte count"),
                ));
            }
            if let Some(v) = acc.parameters.get("cudnn_conv_algo_search")
                && !CUDNN_CONV_ALGO_SEARCH.contains(&v.as_str())
            {
                return Err(invalid(
                    path,
                    h,
                    format!(
                        "cudnn_conv_algo_search '{v}' is not one of {}",
                        CUDNN_CONV_ALGO_SEARCH.join(", ")
                    ),
                ));
            }
            accelerators.push(acc);
        }
    }
    Ok((accelerators, graph))
}

/// CUDA accelerator parameters passed to the CUDA execution provider.
pub const CUDA_PARAMETERS: [&str; 2] = ["gpu_mem_limit", "cudnn_conv_algo_search"];
/// Values of `cudnn_conv_algo_search`, as Triton's ONNX Runtime backend spells them.
pub const CUDNN_CONV_ALGO_SEARCH: [&str; 3] = ["EXHAUSTIVE", "HEURISTIC", "DEFAULT"];

fn string_map_entry(path: &str, f: &Field) -> Result<(String, String), ConfigError> {
    let mut key = None;
    let mut value = None;
    for g in message(path, f)? {
        match g.name.as_str() {
            "key" => key = Some(string(path, g)?),
            "value" => value = Some(string(path, g)?),
            _ => return Err(unsupported(&join(path, &f.name), g)),
        }
    }
    match (key, value) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(invalid(path, f, "needs 'key' and 'value'")),
    }
}

fn parameter(f: &Field) -> Result<(String, String), ConfigError> {
    let mut key = None;
    let mut value = None;
    for g in message("", f)? {
        match g.name.as_str() {
            "key" => key = Some(string("parameters", g)?),
            "value" => {
                for h in message("parameters", g)? {
                    match h.name.as_str() {
                        "string_value" => value = Some(string("parameters.value", h)?),
                        _ => return Err(unsupported("parameters.value", h)),
                    }
                }
            }
            _ => return Err(unsupported("parameters", g)),
        }
    }
    match (key, value) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(invalid("", f, "needs 'key' and 'value { string_value }'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_STRING dims: [ -1 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 16 } }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
version_policy: { latest: { num_versions: 2 } }
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "cuda" } ] } }
parameters { key: "note" value: { string_value: "hi" } }
"#;

    #[test]
    fn parses_the_supported_subset() {
        let c = ModelConfig::parse("m", FULL).unwrap();
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(
            c.inputs,
            [TensorConfig {
                name: "x".into(),
                datatype: DataType::Fp32,
                dims: vec![4]
            }]
        );
        assert_eq!(c.outputs[0].datatype, DataType::Bytes);
        let d = c.dynamic_batching.as_ref().unwrap();
        assert_eq!(
            (
                d.preferred_batch_size.as_slice(),
                d.max_queue_delay_microseconds,
                d.max_queue_size
            ),
            (&[4, 8][..], 100, Some(16))
        );
        assert_eq!(
            c.instance_groups[0],
            InstanceGroup {
                name: None,
                count: 2,
                kind: InstanceKind::Gpu,
                gpus: vec![0]
            }
        );
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(c.gpu_accelerators[0].name, "cuda");
        assert_eq!(c.parameters["note"], "hi");
        let j = c.to_json(&BTreeMap::new());
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(
            j["dynamic_batching"]["default_queue_policy"]["max_queue_size"],
            16
        );
    }

    #[test]
    fn triton_fields_that_cannot_change_results_are_ignored_and_named() {
        let text = "name: \"m\"\n\
            model_warmup [ { name: \"w\" batch_size: 1 inputs { key: \"x\" value: { data_type: TYPE_FP32 dims: 4 zero_data: true } } } ]\n\
            response_cache { enable: true }\n\
            model_transaction_policy { decoupled: false }\n\
            optimization { priority: PRIORITY_MAX cuda { graphs: true } graph { level: 1 } }\n";
        let c = ModelConfig::parse("m", text).unwrap();
        assert_eq!(
            c.ignored,
            [
                "model_warmup (line 2)",
                "response_cache (line 3)",
                "optimization.priority (line 5)",
                "optimization.cuda (line 5)"
            ]
        );
        assert_eq!(c.graph_optimization, Some(GraphOptimization::Extended));
    }

    #[test]
    fn rejects_unsupported_fields_by_path_and_line() {
        let e = ModelConfig::parse("m", "name: \"m\"\nsequence_batching { }\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.pbtxt line 2: field 'sequence_batching': not supported: stateful sequence \
             batching is not implemented"
        );
        let e =
            ModelConfig::parse("m", "model_transaction_policy { decoupled: true }").unwrap_err();
        assert!(
            e.to_string().contains("decoupled models are not supported"),
            "{e}"
        );
        let e = ModelConfig::parse("m", "frobnicate: 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.pbtxt line 1: unsupported field 'frobnicate'"
        );
        let e =
            ModelConfig::parse("m", "instance_group { count: 1 rate_limiter { } }").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.pbtxt line 1: unsupported field 'instance_group.rate_limiter'"
        );
        let e = ModelConfig::parse(
            "m",
            "input { name: \"x\" data_type: TYPE_FP32 dims: 3 reshape { } }",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unsupported field 'input.reshape'"),
            "{e}"
        );
        let e = ModelConfig::parse("m", "optimization { graph { fuse: 1 } }").unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported field 'optimization.graph.fuse'"),
            "{e}"
        );
        let e = ModelConfig::parse("m", "optimization { graph { level: 3 } }").unwrap_err();
        assert!(
            e.to_string().contains("graph level 3 is not -1 (basic)"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            ("name: \"other\"", "differs from the model directory"),
            (
                "platform: \"tensorflow_graphdef\"",
                "only 'onnxruntime_onnx'",
            ),
            ("max_batch_size: -1", "not a valid u32"),
            (
                "input { name: \"x\" data_type: TYPE_COMPLEX dims: 1 }",
                "not a supported data type",
            ),
            ("input { name: \"x\" dims: 1 }", "missing 'data_type'"),
            (
                "instance_group { kind: KIND_MODEL }",
                "'KIND_MODEL' is not supported",
            ),
            (
                "optimization { execution_accelerators { gpu_execution_accelerator { name: \"tensorrt\" } } }",
                "only 'cuda'",
            ),
            (
                "version_policy { latest { num_versions: 1 } all { } }",
                "exactly one",
            ),
            ("default_model_filename: \"../x.onnx\"", "plain file name"),
        ];
        for (text, expected) in cases {
            let e = ModelConfig::parse("m", text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn cuda_parameter_values_are_checked_when_the_config_is_read() {
        let cuda = |params: &str| {
            ModelConfig::parse(
                "m",
                &format!(
                    "optimization {{ execution_accelerators {{ gpu_execution_accelerator {{ name: \"cuda\" {params} }} }} }}"
                ),
            )
        };
        let c = cuda(
            "parameters { key: \"gpu_mem_limit\" value: \"2147483648\" } \
             parameters { key: \"cudnn_conv_algo_search\" value: \"HEURISTIC\" }",
        )
        .unwrap();
        assert_eq!(
            c.gpu_accelerators[0].parameters["gpu_mem_limit"],
            "2147483648"
        );
        let e = cuda("parameters { key: \"gpu_mem_limit\" value: \"2G\" }").unwrap_err();
        assert!(
            e.to_string()
                .contains("gpu_mem_limit '2G' is not a byte count"),
            "{e}"
        );
        let e = cuda("parameters { key: \"cudnn_conv_algo_search\" value: \"FAST\" }").unwrap_err();
        assert!(
            e.to_string().contains(
                "cudnn_conv_algo_search 'FAST' is not one of EXHAUSTIVE, HEURISTIC, DEFAULT"
            ),
            "{e}"
        );
        let e = cuda("parameters { key: \"device_id\" value: \"1\" }").unwrap_err();
        assert!(
            e.to_string()
                .contains("cuda parameter 'device_id' is not supported"),
            "{e}"
        );
    }

    #[test]
    fn graph_level_follows_tritons_onnxruntime_backend() {
        let level = |text: &str| ModelConfig::parse("m", text).unwrap().graph_optimization;
        assert_eq!(level(""), None);
        assert_eq!(level("optimization { graph { level: 0 } }"), None);
        assert_eq!(
            level("optimization { graph { level: -1 } }"),
            Some(GraphOptimization::Basic)
        );
        assert_eq!(
            level("optimization { graph { level: 1 } }"),
            Some(GraphOptimization::Extended)
        );
        let c = ModelConfig::parse(
            "m",
            "optimization { graph { level: 2 } execution_accelerators { gpu_execution_accelerator { name: \"cuda\" } } }",
        )
        .unwrap();
        assert_eq!(c.graph_optimization, Some(GraphOptimization::All));
        assert_eq!(c.gpu_accelerators.len(), 1);
        let j = c.to_json(&BTreeMap::new());
        assert_eq!(j["optimization"]["graph"]["level"], 2);
        assert_eq!(
            j["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]["name"],
            "cuda"
        );
    }

    #[test]
    fn version_policy_selects() {
        let available = [3, 1, 2];
        assert_eq!(VersionPolicy::Latest(1).select(&available), [3]);
        assert_eq!(VersionPolicy::Latest(5).select(&available), [1, 2, 3]);
        assert_eq!(VersionPolicy::All.select(&available), [1, 2, 3]);
        assert_eq!(VersionPolicy::Specific(vec![2, 9]).select(&available), [2]);
    }
}
