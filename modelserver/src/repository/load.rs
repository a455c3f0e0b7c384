//! Loading one model from its directory: reading `config.pbtxt` (or none), selecting versions,
//! placing instances (the deployment's `[runtime]` defaults and policy), building the session
//! pools, and completing or checking the configuration against the ONNX model's signatures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::config::{InstanceGroup, InstanceKind, ModelConfig, TensorConfig};
use super::{LoadError, LoadedModel, ModelRepository, TensorSpec};
use crate::batcher::Scheduler;
use crate::config::{DefaultInstanceKind, InstanceKindPolicy};
use crate::runtime::{self, SessionOptions, SessionPool, Signature};
use crate::stats::ModelStats;
use crate::tensor::DataType;

impl ModelRepository {
    /// The instance group of models whose config names none: one instance on the configured
    /// default device.
    fn default_instance_group(&self) -> InstanceGroup {
        let gpu = self.config.runtime.default_instance_kind == DefaultInstanceKind::Gpu;
        InstanceGroup {
            name: None,
            count: 1,
            kind: if gpu {
                InstanceKind::Gpu
            } else {
                InstanceKind::Cpu
            },
            gpus: if gpu {
                vec![self.config.runtime.default_gpu]
            } else {
                Vec::new()
            },
        }
    }

    /// Rewrites the instance groups' kind when the deployment says where every model runs
    /// (`[runtime] instance_kind`); the rewritten groups are what the model config reports.
    fn apply_instance_kind_policy(&self, model: &str, groups: &mut [InstanceGroup]) {
        let policy = self.config.runtime.instance_kind;
        let kind = match policy {
            InstanceKindPolicy::Config => return,
            InstanceKindPolicy::Cpu => InstanceKind::Cpu,
            InstanceKindPolicy::Gpu => InstanceKind::Gpu,
        };
        for group in groups.iter_mut().filter(|g| g.kind != kind) {
            tracing::info!(
                model.name = model,
                configured = ?group.kind,
                used = ?kind,
                "instance kind set by the deployment (runtime.instance_kind)"
            );
            group.kind = kind;
            match kind {
                InstanceKind::Gpu if group.gpus.is_empty() => {
                    group.gpus = vec![self.config.runtime.default_gpu];
                }
                InstanceKind::Cpu => group.gpus.clear(),
                _ => {}
            }
        }
    }

    /// Loads every selected version of model `name` from its directory (blocking: reads files and
    /// builds ONNX Runtime sessions).
    pub(super) fn load_blocking(
        &self,
        name: &str,
    ) -> Result<BTreeMap<u64, Arc<LoadedModel>>, LoadError> {
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(LoadError::NoDirectory(dir));
        }
        let (mut config, has_config) = read_config(&dir, name)?;
        let available = available_versions(&dir, &config.default_model_filename)?;
        let selected = config.version_policy.select(&available);
        if selected.is_empty() {
            return Err(LoadError::NoVersions {
                dir,
                file: config.default_model_filename.clone(),
            });
        }
        let env = runtime::environment(self.config.runtime.ort_library.as_deref())?;
        if config.instance_groups.is_empty() {
            // Stated in the reported config, so where a model runs is never implicit.
            config.instance_groups.push(self.default_instance_group());
        }
        self.apply_instance_kind_policy(name, &mut config.instance_groups);
        let placements = runtime::placements(&config.instance_groups);
        let options = self.session_options(name, &config, placements.len());
        let mut versions = BTreeMap::new();
        for version in selected {
            let path = dir
                .join(version.to_string())
                .join(&config.default_model_filename);
            let (sessions, provider) = runtime::build_sessions(env, &path, &placements, &options)?;
            let (inputs, outputs) = sessions
                .first()
                .map(runtime::signatures)
                .unwrap_or_default();
            let completed = complete_config(
                &config,
                has_config,
                &inputs,
                &outputs,
                self.config.runtime.default_max_batch_size,
            )
            .map_err(|message| LoadError::Mismatch { version, message })?;
            let (queue, batching) = crate::batcher::policies(
                &completed,
                self.config.limits.max_queue_size,
                self.config.runtime.batch_wait,
            );
            let model = LoadedModel {
                name: name.to_string(),
                version,
                inputs: tensor_specs(&completed, &completed.inputs),
                outputs: tensor_specs(&completed, &completed.outputs),
                config: completed,
                pool: Arc::new(SessionPool::new(sessions)),
                provider,
                graph_optimization: options.graph_optimization,
                stats: ModelStats::default(),
                scheduler: Scheduler::new(queue, batching),
            };
            versions.insert(version, Arc::new(model));
        }
        Ok(versions)
    }

    /// How each session of model `name` is built, for `instances` instances.
    fn session_options(
        &self,
        name: &str,
        config: &ModelConfig,
        instances: usize,
    ) -> SessionOptions {
        let cores = self
            .config
            .runtime
            .cpu_cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        SessionOptions {
            // Instances of one model run concurrently; splitting the core budget between them keeps
            // instances × threads within it.
            intra_threads: self
                .config
                .runtime
                .intra_op_threads
                .unwrap_or((cores / instances).max(1)),
            allow_cpu_fallback: self.config.cpu_fallback_allowed(name),
            graph_optimization: config
                .graph_optimization
                .unwrap_or(self.config.runtime.graph_optimization_level),
            intra_op_spinning: self.config.runtime.intra_op_spinning,
            cuda_parameters: config
                .gpu_accelerators
                .iter()
                .flat_map(|a| a.parameters.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
        }
    }
}

/// The model's `config.pbtxt`, or the empty configuration when there is none; `true` when there
/// is one.
fn read_config(dir: &Path, name: &str) -> Result<(ModelConfig, bool), LoadError> {
    let config_path = dir.join("config.pbtxt");
    if !config_path.exists() {
        return Ok((ModelConfig::empty(name), false));
    }
    let text = std::fs::read_to_string(&config_path).map_err(|source| LoadError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config = ModelConfig::parse(name, &text)?;
    if !config.ignored.is_empty() {
        tracing::warn!(
            model.name = name,
            fields = %config.ignored.join(", "),
            "config.pbtxt fields not implemented here are ignored (they tune speed, \
             warm-up or reporting, never results)"
        );
    }
    Ok((config, true))
}

/// The numbered version directories of `dir` that hold the model file `file`.
fn available_versions(dir: &Path, file: &str) -> Result<Vec<u64>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut available = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(v) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
            && entry.path().join(file).is_file()
        {
            available.push(v);
        }
    }
    Ok(available)
}

/// The request-facing shapes of `tensors`: with a leading dynamic batch dimension when the model
/// batches.
fn tensor_specs(config: &ModelConfig, tensors: &[TensorConfig]) -> Vec<TensorSpec> {
    tensors
        .iter()
        .map(|t| {
            let mut shape = Vec::with_capacity(t.dims.len() + 1);
            if config.max_batch_size > 0 {
                shape.push(-1);
            }
            shape.extend(&t.dims);
            TensorSpec {
                name: t.name.clone(),
                datatype: t.datatype,
                shape,
            }
        })
        .collect()
}

/// Fills in inputs/outputs and the batch size from the ONNX signatures, or checks the declared ones
/// against them.
fn complete_config(
    config: &ModelConfig,
    has_config: bool,
    inputs: &[Signature],
    outputs: &[Signature],
    default_max_batch: u32,
) -> Result<ModelConfig, String> {
    let mut c = config.clone();
    for s in inputs.iter().chain(outputs) {
        if s.datatype.is_none() {
            return Err(format!(
                "'{}' has type {}, which the protocol cannot carry",
                s.name, s.onnx_type
            ));
        }
    }
    let all_batched = inputs
        .iter()
        .chain(outputs)
        .all(|s| s.shape.first() == Some(&-1));
    if !has_config && default_max_batch > 0 && all_batched && !inputs.is_empty() {
        c.max_batch_size = default_max_batch;
    }
    let skip = usize::from(c.max_batch_size > 0);
    if c.max_batch_size > 0
        && let Some(s) = inputs
            .iter()
            .chain(outputs)
            .find(|s| s.shape.first().is_none_or(|&d| d != -1))
    {
        return Err(format!(
            "max_batch_size {} needs a dynamic first dimension but '{}' has shape {:?}",
            c.max_batch_size, s.name, s.shape
        ));
    }
    let derive = |sigs: &[Signature]| -> Vec<TensorConfig> {
        sigs.iter()
            .map(|s| TensorConfig {
                name: s.name.clone(),
                datatype: s.datatype.unwrap_or(DataType::Bytes),
                dims: s.shape[skip.min(s.shape.len())..].to_vec(),
            })
            .collect()
    };
    if c.inputs.is_empty() {
        c.inputs = derive(inputs);
    } else {
        check_declared("input", &c.inputs, inputs, skip)?;
        if let Some(s) = inputs
            .iter()
            .find(|s| !c.inputs.iter().any(|t| t.name == s.name))
        {
            return Err(format!(
                "model input '{}' is missing from config.pbtxt",
                s.name
            ));
        }
    }
    if c.outputs.is_empty() {
        c.outputs = derive(outputs);
    } else {
        check_declared("output", &c.outputs, outputs, skip)?;
    }
    Ok(c)
}

fn check_declared(
    kind: &str,
    declared: &[TensorConfig],
    sigs: &[Signature],
    skip: usize,
) -> Result<(), String> {
    for t in declared {
        let s = sigs
            .iter()
            .find(|s| s.name == t.name)
            .ok_or_else(|| format!("config {kind} '{}' is not in the ONNX model", t.name))?;
        if s.datatype != Some(t.datatype) {
            return Err(format!(
                "config {kind} '{}' is {} but the ONNX model has {}",
                t.name,
                t.datatype.config_name(),
                s.onnx_type
            ));
        }
        let model_dims = &s.shape[skip.min(s.shape.len())..];
        let compatible = model_dims.len() == t.dims.len()
            && model_dims
                .iter()
                .zip(&t.dims)
                .all(|(&m, &d)| m == -1 || d == -1 || m == d);
        if !compatible {
            return Err(format!(
                "config {kind} '{}' has dims {:?} but the ONNX model has shape {:?}",
                t.name, t.dims, s.shape
            ));
        }
    }
    Ok(())
}
