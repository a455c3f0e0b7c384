//! The protocol-independent core that both front ends ([`crate::http`], [`crate::grpc`]) call:
//! health, metadata, request validation against the model's metadata, inference, statistics,
//! repository operations and the metrics text.
//!
//! Request validation against the model's metadata is `validate` (re-exported here); the metrics
//! text is `metrics`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value as Json, json};

use crate::access::{Enforcer, GatewayDecision, ModelCall};
use crate::config::Config;
use crate::error::ServerError;
use crate::repository::{LoadError, LoadedModel, ModelRepository, TensorSpec};
use crate::tensor::{DataType, Tensor};

mod metrics;
mod validate;

pub use validate::{check_input, check_outputs, check_request};

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
