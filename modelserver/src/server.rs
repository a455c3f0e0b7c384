//! The protocol-independent core that both front ends ([`crate::http`], [`crate::grpc`]) call:
//! health, metadata, request validation against the model's metadata, inference, statistics,
//! repository operations and the metrics text.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value as Json, json};

use crate::access::{Enforcer, GatewayDecision, ModelCall};
use crate::config::Config;
use crate::error::ServerError;
use crate::repository::{LoadError, LoadedModel, ModelRepository, TensorSpec};
use crate::runtime::Provider;
use crate::tensor::{DataType, Tensor};

/// Server name reported by server metadata.
pub const SERVER_NAME: &str = "modelserver";
/// Protocol extensions implemented.
pub const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
    "schedule_policy",
];

/// The shared server state.
pub struct ModelServer {
    /// Models.
    pub repository: Arc<ModelRepository>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Set when shutdown starts, so readiness turns false while in-flight requests drain.
    draining: AtomicBool,
    /// NVML when the driver's library is present, read at each metrics scrape.
    gpu: Option<crate::gpu::Nvml>,
    /// Span export ([`crate::trace`]); disabled unless configured.
    pub tracer: telemetry::Tracer,
    /// The gateway-decision check every model-scoped call passes ([`crate::access`]).
    access: Enforcer,
}

impl ModelServer {
    /// Loads the repository at `root` and builds the server.
    ///
    /// # Errors
    /// [`LoadError::Io`] when the repository cannot be listed (individual model failures are not
    /// errors).
    pub async fn start(root: &Path, config: Config) -> Result<Arc<Self>, LoadError> {
        Self::start_traced(root, config, telemetry::Tracer::disabled()).await
    }

    /// As [`ModelServer::start`], recording each request's spans with `tracer`.
    ///
    /// # Errors
    /// As [`ModelServer::start`].
    pub async fn start_traced(
        root: &Path,
        config: Config,
        tracer: telemetry::Tracer,
    ) -> Result<Arc<Self>, LoadError> {
        let config = Arc::new(config);
        let repository = ModelRepository::open(root, Arc::clone(&config)).await?;
        let nvml = config
            .runtime
            .nvml_library
            .clone()
            .unwrap_or_else(|| crate::gpu::DEFAULT_NVML_LIBRARY.into());
        let access = Enforcer::new(config.authorization.mode);
        Ok(Arc::new(ModelServer {
            access,
            repository,
            config,
            draining: AtomicBool::new(false),
            gpu: crate::gpu::Nvml::open_optional(&nvml),
            tracer,
        }))
    }

    /// Marks the server as draining: readiness becomes false. [`crate::serve`] calls it first
    /// thing in a drain.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Liveness: the process serves requests.
    pub fn live(&self) -> bool {
        true
    }

    /// Readiness: not draining and, with `strict_readiness`, every model ready. The one readiness
    /// function: REST `/v2/health/ready` and gRPC `ServerReady` ask it, and `grpc.health.v1`
    /// reports it ([`crate::health`]).
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
            && (!self.config.limits.strict_readiness || self.repository.all_ready())
    }

    /// Server metadata JSON.
    pub fn metadata_json(&self) -> Json {
        json!({"name": SERVER_NAME, "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS})
    }

    /// The model a model-scoped call addresses, once the call is checked against the gateway's
    /// decision: the one way a front end obtains a model, so every REST route and gRPC method
    /// that names a model meets the same check before any model work.
    ///
    /// # Errors
    /// [`ServerError::NotAuthorized`] (see [`crate::access`]), then as [`ModelRepository::get`].
    pub fn model(
        &self,
        decision: &GatewayDecision,
        call: ModelCall<'_>,
    ) -> Result<Arc<LoadedModel>, ServerError> {
        self.access.check(decision, &call)?;
        self.repository.get(call.name, call.version)
    }

    /// Checks a call that addresses no single model (statistics of every model, the repository
    /// API): refused behind the gateway, which never authorizes one.
    ///
    /// # Errors
    /// [`ServerError::NotAuthorized`] in `gateway` mode.
    pub fn unscoped(&self, decision: &GatewayDecision, what: &str) -> Result<(), ServerError> {
        self.access.check_unscoped(decision, what)
    }

    /// Model metadata JSON (the protocol's fields, plus `execution_provider`).
    pub fn model_metadata_json(&self, model: &LoadedModel) -> Json {
        let versions: Vec<String> = self
            .repository
            .versions(&model.name)
            .iter()
            .map(|m| m.version_string())
            .collect();
        let tensor = |t: &TensorSpec| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape});
        json!({
            "name": model.name,
            "versions": versions,
            "platform": crate::repository::config::PLATFORM,
            "inputs": model.inputs.iter().map(tensor).collect::<Vec<_>>(),
            "outputs": model.outputs.iter().map(tensor).collect::<Vec<_>>(),
            "parameters": model.runtime_parameters(),
        })
    }

    /// Model configuration JSON in Triton's form.
    pub fn model_config_json(&self, model: &LoadedModel) -> Json {
        model.config.to_json(&model.runtime_parameters())
    }

    /// Statistics JSON for the model `call` names (all its loaded versions, or the one named),
    /// or, with `call` `None`, for every model (an unscoped call).
    ///
    /// # Errors
    /// As [`ModelServer::model`] and [`ModelServer::unscoped`].
    pub fn stats_json(
        &self,
        decision: &GatewayDecision,
        call: Option<ModelCall<'_>>,
    ) -> Result<Json, ServerError> {
        let models = match call {
            None => {
                self.unscoped(decision, "statistics of every model")?;
                self.repository.loaded()
            }
            Some(c) if c.version.is_some() => vec![self.model(decision, c)?],
            Some(c) => {
                self.model(decision, c)?;
                self.repository.versions(c.name)
            }
        };
        let stats: Vec<Json> = models
            .iter()
            .map(|m| m.stats.to_json(&m.name, &m.version_string()))
            .collect();
        Ok(json!({"model_stats": stats}))
    }

    /// Runs one request whose inputs were checked with [`check_input`] and [`check_request`];
    /// `timeout` is the request's `timeout` parameter (how long it may stay queued).
    ///
    /// # Errors
    /// As [`crate::batcher::Scheduler::submit`]. Every outcome is counted in the statistics.
    pub async fn infer(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
        batch: u64,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<Tensor>, ServerError> {
        let mut outcome = Outcome {
            model,
            start: Instant::now(),
            succeeded: false,
        };
        model.stats.pending.fetch_add(1, Ordering::Relaxed);
        let result = model
            .scheduler
            .submit(model, inputs, outputs, batch, timeout)
            .await;
        outcome.succeeded = result.is_ok();
        result
    }

    /// Counts a request that failed validation before reaching the scheduler.
    pub fn record_rejected(&self, model: &LoadedModel, started: Instant) {
        model.stats.fail.record(started.elapsed());
    }

    /// The Prometheus text exposition: Triton's `nv_inference_*` families plus model state.
    ///
    /// Rendered by hand rather than through a metrics library because Triton's counter names
    /// carry no `_total` suffix, and dashboards built for Triton expect them exactly.
    pub fn metrics_text(&self) -> String {
        let models = self.repository.loaded();
        let mut out = String::new();
        type Get = fn(&LoadedModel) -> u64;
        let families: [(&str, &str, &str, Get); 14] = [
            (
                "nv_inference_request_success",
                "counter",
                "Number of successful inference requests, all batch sizes",
                |m| m.stats.success.get().0,
            ),
            (
                "nv_inference_request_failure",
                "counter",
                "Number of failed inference requests, all batch sizes",
                |m| m.stats.fail.get().0,
            ),
            (
                "nv_inference_count",
                "counter",
                "Number of inferences performed (batch elements)",
                |m| m.stats.inference_count.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_exec_count",
                "counter",
                "Number of model executions performed",
                |m| m.stats.execution_count.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_request_duration_us",
                "counter",
                "Cumulative inference request duration in microseconds",
                |m| (m.stats.success.get().1 + m.stats.fail.get().1) / 1000,
            ),
            (
                "nv_inference_queue_duration_us",
                "counter",
                "Cumulative inference queuing duration in microseconds",
                |m| m.stats.queue.get().1 / 1000,
            ),
            (
                "nv_inference_compute_input_duration_us",
                "counter",
                "Cumulative compute input duration in microseconds",
                |m| m.stats.compute_input.get().1 / 1000,
            ),
            (
                "nv_inference_compute_infer_duration_us",
                "counter",
                "Cumulative compute inference duration in microseconds",
                |m| m.stats.compute_infer.get().1 / 1000,
            ),
            (
                "nv_inference_compute_output_duration_us",
                "counter",
                "Cumulative inference compute output duration in microseconds",
                |m| m.stats.compute_output.get().1 / 1000,
            ),
            (
                "nv_inference_pending_request_count",
                "gauge",
                "Instantaneous number of pending requests awaiting execution",
                |m| m.stats.pending.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_queue_size",
                "gauge",
                "Instantaneous number of requests admitted to the queue and not yet started",
                |m| u64::from(m.scheduler.queued()),
            ),
            (
                "nv_inference_rejected_overload",
                "counter",
                "Number of requests rejected because the model's queue was full",
                |m| m.stats.rejected_overload.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_timed_out",
                "counter",
                "Number of requests whose timeout expired while they were queued",
                |m| m.stats.timed_out.load(Ordering::Relaxed),
            ),
            (
                "nv_inference_cancelled",
                "counter",
                "Number of queued requests dropped without running because their client went away",
                |m| m.stats.cancelled.load(Ordering::Relaxed),
            ),
        ];
        // Writing to a String cannot fail; the results are ignored for that reason.
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for m in &models {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\",version=\"{}\"}} {}",
                    m.name,
                    m.version,
                    get(m)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP nv_inference_batch_size Batch size (inferences) of each model execution\n# TYPE nv_inference_batch_size histogram"
        );
        for m in &models {
            let labels = format!("model=\"{}\",version=\"{}\"", m.name, m.version);
            let (buckets, sum) = m.stats.batch_size_histogram();
            for (le, n) in &buckets {
                let le = le.map_or_else(|| "+Inf".to_string(), |l| l.to_string());
                let _ = writeln!(
                    out,
                    "nv_inference_batch_size_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let count = buckets.last().map_or(0, |b| b.1);
            let _ = writeln!(out, "nv_inference_batch_size_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "nv_inference_batch_size_count{{{labels}}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP modelserver_model_execution_provider Execution provider of each loaded model version (1 = in use); cpu-fallback marks a GPU model running on CPU\n# TYPE modelserver_model_execution_provider gauge"
        );
        for m in &models {
            let _ = writeln!(
                out,
                "modelserver_model_execution_provider{{model=\"{}\",version=\"{}\",provider=\"{}\"}} 1",
                m.name,
                m.version,
                m.provider.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP modelserver_model_ready Whether the model serves requests (0 = unavailable or unloaded)\n# TYPE modelserver_model_ready gauge"
        );
        for entry in self.repository.index(false) {
            let ready = u8::from(entry.state == Some("READY"));
            let _ = writeln!(
                out,
                "modelserver_model_ready{{model=\"{}\"}} {ready}",
                entry.name
            );
        }
        let _ = writeln!(
            out,
            "# HELP modelserver_model_load_failures_total Model loads that failed since start\n# TYPE modelserver_model_load_failures_total counter"
        );
        for (name, n) in self.repository.load_failures() {
            let _ = writeln!(
                out,
                "modelserver_model_load_failures_total{{model=\"{name}\"}} {n}"
            );
        }
        let fallback = models
            .iter()
            .filter(|m| matches!(m.provider, Provider::CpuFallback { .. }))
            .count();
        let _ = writeln!(
            out,
            "# HELP modelserver_gpu_fallback_models Loaded model versions configured for GPU running on CPU\n# TYPE modelserver_gpu_fallback_models gauge\nmodelserver_gpu_fallback_models {fallback}"
        );
        self.access.write_metrics(&mut out);
        if let Some(nvml) = &self.gpu {
            crate::gpu::render(&nvml.sample(), &mut out);
        }
        out
    }
}

/// Ends a request's accounting however it ends: answered, failed, or dropped because the client
/// went away (which counts as a failure and must not leave the pending gauge raised).
struct Outcome<'a> {
    model: &'a LoadedModel,
    start: Instant,
    succeeded: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        let stats = &self.model.stats;
        stats.pending.fetch_sub(1, Ordering::Relaxed);
        if self.succeeded {
            stats.success.record(self.start.elapsed());
        } else {
            stats.fail.record(self.start.elapsed());
        }
    }
}

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
