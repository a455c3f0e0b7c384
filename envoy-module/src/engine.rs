//! The authz pipeline inside Envoy: one [`Engine`] per `authz.toml` (shared by the filter
//! configurations naming it), all of them on one Tokio runtime owned by the module. A check's
//! decision is polled on the stream's Envoy worker (its CPU part runs there, like a native
//! filter's); Redis round trips, the audit group commit (the writer thread), config reloads and
//! the admin server never block an Envoy worker thread.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use authz::admin::{AdminState, serve_admin};
use authz::decision::{Decision, ReasonCode};
use authz::metrics::Metrics;
use authz::response::to_check_response;
use authz::runtime::{Runtime, SharedRuntime};
use authz::service::AuthzService;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::sync::watch;

/// Threads of the module's Tokio runtime: they drive the Redis client, the reload watcher and the
/// admin server; decisions themselves are polled on Envoy's workers.
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
    /// The admin server (`/metrics`, `/readyz`) cannot listen on `[server] admin_addr`.
    #[error("admin server on {addr}: {error}")]
    Admin {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    /// Span export is configured (`OTEL_*` in Envoy's environment) but cannot start.
    #[error("starting the OTLP span exporter: {0}")]
    Tracing(String),
}

/// One check's decision, to be polled to its answer on the stream's Envoy worker thread (see
/// [`crate::filter`]): its CPU part (authentication, policy, in-process limits) runs there as a
/// native filter's would; what waits (a Redis round trip, the audit record's group commit) waits
/// elsewhere and wakes the stream through Envoy's scheduler.
pub type Decide = Pin<Box<dyn Future<Output = CheckResponse> + Send>>;

/// Starts checks; the filter polls what it returns.
pub trait Checker: Send + Sync {
    /// The decision of `req`; `envoy_traceparent` is the W3C `traceparent` of Envoy's span for
    /// the request (the check's spans are its children), when Envoy traces it.
    fn check(&self, req: CheckRequest, envoy_traceparent: Option<String>) -> Decide;
    /// A denial of `req` with `reason`, without reading it (audited like any decision).
    fn refusal(&self, req: CheckRequest, reason: ReasonCode, why: String) -> Decide;
    /// The largest first gRPC message the filter reads whole (frame header not counted).
    fn max_grpc_message_bytes(&self) -> usize;
    /// Enters the pipeline's runtime context (its timers and Redis client), for polling a
    /// [`Decide`] on a thread that is not the runtime's; `None` where there is none.
    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>>;
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

/// One filter configuration: the pipeline of its `authz.toml` and its own gRPC message limit.
pub struct FilterConfig {
    engine: Arc<Engine>,
    max_grpc_message_bytes: usize,
}

impl FilterConfig {
    /// Parses the filter config JSON and starts (or joins) the pipeline of the `authz.toml` it
    /// names. Blocks (Envoy calls this on its main thread, at configuration time).
    ///
    /// # Errors
    /// [`LoadError`] naming what is wrong.
    pub fn load(filter_config: &[u8]) -> Result<Self, LoadError> {
        let config: ModuleConfig = serde_json::from_slice(filter_config)?;
        Ok(FilterConfig {
            engine: Engine::for_config(&config.config)?,
            max_grpc_message_bytes: config.max_grpc_message_bytes,
        })
    }
}

impl Checker for FilterConfig {
    fn check(&self, req: CheckRequest, envoy_traceparent: Option<String>) -> Decide {
        let service = self.engine.service.clone();
        Box::pin(async move {
            let decision = service
                .decide_in_trace(&req, envoy_traceparent.as_deref())
                .await;
            to_check_response(&decision)
        })
    }

    fn refusal(&self, req: CheckRequest, reason: ReasonCode, why: String) -> Decide {
        let service = self.engine.service.clone();
        Box::pin(async move { to_check_response(&service.refuse(&req, reason, why).await) })
    }

    fn max_grpc_message_bytes(&self) -> usize {
        self.max_grpc_message_bytes
    }

    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        Some(self.engine.handle.enter())
    }
}

/// The pipeline of one `authz.toml`, as `authz serve` runs it: the same [`AuthzService`], the
/// reload watcher (file polling every `[server] reload_poll_interval`; an invalid change keeps
/// the running configuration) and the admin server (`/metrics`, `/readyz`, `/healthz` on
/// `[server] admin_addr`).
///
/// Every filter configuration naming the same file shares one engine (the plain and the TLS
/// listener; a listener update's new configuration, created while the old one still runs), so
/// an audit chain has one writer and the admin address one listener.
pub struct Engine {
    service: AuthzService,
    handle: tokio::runtime::Handle,
    /// Set to `true` when the engine is dropped: stops the reload watcher and the admin server.
    stop: watch::Sender<bool>,
}

/// The running engines by `authz.toml` path; an entry lives while a filter configuration holds it.
static ENGINES: Mutex<Vec<(PathBuf, Weak<Engine>)>> = Mutex::new(Vec::new());

impl Engine {
    /// The running engine of `path`, or a new one.
    ///
    /// # Errors
    /// [`LoadError`] when a new engine cannot start.
    fn for_config(path: &Path) -> Result<Arc<Engine>, LoadError> {
        let mut engines = ENGINES.lock().unwrap_or_else(PoisonError::into_inner);
        engines.retain(|(_, e)| e.strong_count() > 0);
        if let Some(engine) = engines
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, e)| e.upgrade())
        {
            return Ok(engine);
        }
        let engine = Arc::new(Engine::start(path)?);
        engines.push((path.to_owned(), Arc::downgrade(&engine)));
        Ok(engine)
    }

    fn start(path: &Path) -> Result<Self, LoadError> {
        let rt = tokio_runtime()?;
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = watch::channel(false);
        let service = rt.block_on(async {
            let runtime = Runtime::load(path, Arc::clone(&metrics))
                .await
                .map_err(|e| LoadError::Config {
                    path: path.display().to_string(),
                    errors: e.to_string(),
                })?;
            let server = runtime.config.server.clone();
            let admin = tokio::net::TcpListener::bind(server.admin_addr)
                .await
                .map_err(|error| LoadError::Admin {
                    addr: server.admin_addr,
                    error,
                })?;
            let shared: SharedRuntime = Arc::new(arc_swap::ArcSwap::from_pointee(runtime));
            let tracer = authz::trace::tracer_from_env(&metrics)
                .map_err(|e| LoadError::Tracing(e.to_string()))?;
            let service =
                AuthzService::start(Arc::clone(&shared), Arc::clone(&metrics))?.with_tracer(tracer);
            let state = AdminState {
                metrics: Arc::clone(&metrics),
                readiness: service.readiness(),
            };
            tokio::spawn(serve_admin(admin, state, stopped_signal(stopped.clone())));
            tokio::spawn(authz::runtime::watch_files(
                path.to_owned(),
                shared,
                metrics,
                server.reload_poll_interval,
                stopped_signal(stopped),
            ));
            Ok::<_, LoadError>(service)
        })?;
        Ok(Engine {
            service,
            handle: rt.handle().clone(),
            stop,
        })
    }
}

/// Completes once `stop` turns `true` (or its sender is gone).
async fn stopped_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Every filter configuration of this file is gone (listener removed, Envoy shutting
        // down): stop the watcher and the admin server, let the audit writer answer what is
        // queued and stop.
        let _ = self.stop.send(true);
        self.service.audit().clone().shutdown();
    }
}

/// The 503 every failure of the module itself becomes (never an allow), in the pipeline's own
/// error shape.
pub fn unavailable(why: &str) -> CheckResponse {
    to_check_response(&Decision::new(ReasonCode::Unavailable, why))
}
