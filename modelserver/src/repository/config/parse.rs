//! Parsing `config.pbtxt` into a [`ModelConfig`]: the fields of the supported subset, section by
//! section, and the Triton fields that are ignored (harmless) or refused (they would change a
//! result), each with why.

use std::collections::BTreeMap;

use super::fields::{
    boolean, file_name, invalid, join, message, number, string, string_map_entry, unsupported, word,
};
use super::{
    Accelerator, BACKEND, ConfigError, DynamicBatching, InstanceGroup, InstanceKind, ModelConfig,
    PLATFORM, TensorConfig, VersionPolicy,
};
use crate::config::GraphOptimization;
use crate::repository::pbtxt::{self, Field};
use crate::tensor::DataType;

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

impl ModelConfig {
    /// Parses `config.pbtxt` text for the model in directory `name`.
    ///
    /// # Errors
    /// [`ConfigError`] for syntax errors, unsupported fields and invalid values.
    pub fn parse(name: &str, text: &str) -> Result<Self, ConfigError> {
        let fields = pbtxt::parse(text)?;
        let mut config = ModelConfig::empty(name);
        for f in &fields {
            match f.name.as_str() {
                "name" | "platform" | "backend" => check_identity(name, f)?,
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
                "model_transaction_policy" => transaction_policy(f)?,
                _ if ignorable("", f, &mut config.ignored)? => {}
                _ => return Err(unsupported("", f)),
            }
        }
        Ok(config)
    }
}

/// `name`, `platform` and `backend` may only say what is true anyway: the directory's name, ONNX
/// Runtime.
fn check_identity(name: &str, f: &Field) -> Result<(), ConfigError> {
    let value = string("", f)?;
    let expected = match f.name.as_str() {
        "name" => name,
        "platform" => PLATFORM,
        _ => BACKEND,
    };
    if value == expected {
        return Ok(());
    }
    let message = if f.name == "name" {
        format!("'{value}' differs from the model directory '{name}'")
    } else {
        format!("'{value}' is not supported; only '{expected}'")
    };
    Err(invalid("", f, message))
}

/// `model_transaction_policy { decoupled: false }`: what Triton's auto-completed configs say by
/// default; `true` (streamed answers) is not implemented.
fn transaction_policy(f: &Field) -> Result<(), ConfigError> {
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
    Ok(())
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
            accelerators.push(gpu_accelerator(path, h)?);
        }
    }
    Ok((accelerators, graph))
}

/// One `gpu_execution_accelerator { ... }` (at `path`): only `cuda`, with the parameters
/// [`CUDA_PARAMETERS`] and their values checked now rather than when a session is built.
fn gpu_accelerator(path: &str, h: &Field) -> Result<Accelerator, ConfigError> {
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
    Ok(acc)
}

/// CUDA accelerator parameters passed to the CUDA execution provider.
pub const CUDA_PARAMETERS: [&str; 2] = ["gpu_mem_limit", "cudnn_conv_algo_search"];
/// Values of `cudnn_conv_algo_search`, as Triton's ONNX Runtime backend spells them.
pub const CUDNN_CONV_ALGO_SEARCH: [&str; 3] = ["EXHAUSTIVE", "HEURISTIC", "DEFAULT"];

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
