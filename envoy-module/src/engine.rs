//! The authz pipeline inside Envoy: one [`Engine`] per filter configuration, all of them on one
//! Tokio runtime owned by the module, so Redis round trips and the audit group commit never run
//! on an Envoy worker thread.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use authz::decision::{Decision, ReasonCode};
use authz::metrics::Metrics;
use authz::response::to_check_response;
use authz::runtime::{Runtime, SharedRuntime};
use authz::service::AuthzService;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use futures::FutureExt;

/// Threads of the module's Tokio runtime. A check spends its time waiting (Redis, the audit
/// writer thread's fsync) rather than computing, so two threads keep up with Envoy's workers.
const RUNTIME_THREADS: usize = 2;

/// The largest first gRPC message the filter reads whole before deciding (4 MiB): above any
/// OIP request that names a model and carries a small tensor, and small enough that one stream's
/// buffer stays bounded. A larger message is refused, never decided on a prefix;
/// `render_embedded.py` raises Envoy's per-connection buffer limit to match.
pub const DEFAULT_MAX_GRPC_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The filter configuration (the `filter_config` string of the `dynamic_modules` filter).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// The `authz.toml` that `authz serve` would be started with.
    pub config: PathBuf,
    /// The largest first gRPC message read whole (its 5-byte frame header not counted).
    #[serde(default = "default_max_grpc_message_bytes")]
    pub max_grpc_message_bytes: usize,
}

fn default_max_grpc_message_bytes() -> usize {
    DEFAULT_MAX_GRPC_MESSAGE_BYTES
}

/// Loading the filter configuration failed; Envoy then rejects the filter (and its listener).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The filter config is not the JSON [`ModuleConfig`].
    #[error("filter config: {0}")]
    FilterConfig(#[from] serde_json::Error),
    /// The module's runtime threads could not be started.
    #[error("tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// `authz.toml` is invalid (every problem, as `authz check-config` prints them).
    #[error("{path}: {errors}")]
    Config { path: String, errors: String },
    /// The rate limiter or the audit log could not be started.
    #[error("starting the pipeline: {0}")]
    Start(#[from] authz::service::StartError),
}

/// Receives a check's answer, on some other thread, exactly once.
pub type Done = Box<dyn FnOnce(CheckResponse) + Send>;

/// Runs one check to its answer, off the Envoy worker thread.
pub trait Checker: Send + Sync {
    /// Starts deciding `req`; `done` gets the answer.
    fn spawn_check(&self, req: CheckRequest, done: Done);
    /// Starts denying `req` with `reason` without reading it (audited like any decision); `done`
    /// gets the answer.
    fn spawn_refusal(&self, req: CheckRequest, reason: ReasonCode, why: String, done: Done);
    /// The largest first gRPC message the filter reads whole (frame header not counted).
    fn max_grpc_message_bytes(&self) -> usize;
}

/// The module's Tokio runtime, started on first use and never stopped (a dynamic module is
/// never unloaded while Envoy runs).
fn tokio_runtime() -> Result<&'static tokio::runtime::Runtime, std::io::Error> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .thread_name("authz-module")
        .enable_all()
        .build()?;
    // A racing initialisation drops its runtime; either one is fine.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The pipeline of one filter configuration: the same [`AuthzService`] `authz serve` runs.
pub struct Engine {
    service: AuthzService,
    handle: tokio::runtime::Handle,
    max_grpc_message_bytes: usize,
}

impl Engine {
    /// Loads `authz.toml` named by the filter config JSON and starts the pipeline, as
    /// `authz serve` does. Blocks (Envoy calls this on its main thread, at configuration time).
    ///
    /// # Errors
    /// [`LoadError`] naming what is wrong.
    pub fn load(filter_config: &[u8]) -> Result<Self, LoadError> {
        let config: ModuleConfig = serde_json::from_slice(filter_config)?;
        let rt = tokio_runtime()?;
        let metrics = Arc::new(Metrics::new());
        let service = rt.block_on(async {
            let runtime = Runtime::load(&config.config, Arc::clone(&metrics))
                .await
                .map_err(|e| LoadError::Config {
                    path: config.config.display().to_string(),
                    errors: e.to_string(),
                })?;
            let shared: SharedRuntime = Arc::new(arc_swap::ArcSwap::from_pointee(runtime));
            Ok::<_, LoadError>(AuthzService::start(shared, metrics)?)
        })?;
        Ok(Engine {
            service,
            handle: rt.handle().clone(),
            max_grpc_message_bytes: config.max_grpc_message_bytes,
        })
    }
}

impl Engine {
    /// Runs `decide` on the module's runtime; a panic in it answers 503.
    fn spawn<F>(&self, decide: F, done: Done)
    where
        F: Future<Output = Decision> + Send + 'static,
    {
        self.handle.spawn(async move {
            let decided = std::panic::AssertUnwindSafe(decide).catch_unwind().await;
            done(match decided {
                Ok(decision) => to_check_response(&decision),
                Err(_) => unavailable("the decision pipeline failed"),
            });
        });
    }
}

impl Checker for Engine {
    fn spawn_check(&self, req: CheckRequest, done: Done) {
        let service = self.service.clone();
        self.spawn(async move { service.decide(&req).await }, done);
    }

    fn spawn_refusal(&self, req: CheckRequest, reason: ReasonCode, why: String, done: Done) {
        let service = self.service.clone();
        self.spawn(async move { service.refuse(&req, reason, why).await }, done);
    }

    fn max_grpc_message_bytes(&self) -> usize {
        self.max_grpc_message_bytes
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Envoy destroyed the filter configuration (listener removed or shutting down): let the
        // audit writer answer what is queued and stop.
        self.service.audit().clone().shutdown();
    }
}

/// The 503 every failure of the module itself becomes (never an allow), in the pipeline's own
/// error shape.
pub fn unavailable(why: &str) -> CheckResponse {
    to_check_response(&Decision::new(ReasonCode::Unavailable, why))
}
