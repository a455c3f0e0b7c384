//! Running authz: the gRPC listener (ext_authz and `grpc.health.v1`), the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), the reload watcher, and the bounded drain on shutdown.
//!
//! `authz serve` and the tests that start a server use this one wiring: they bind the listeners
//! (tests on `127.0.0.1:0`), build a [`Server`] and call [`Server::serve`] with a shutdown
//! future. When that future completes the drain starts: both probes say "not ready" at once
//! ([`crate::readiness`]), the gRPC server stops taking connections and lets in-flight checks
//! finish, the admin server keeps answering probes until they have, and everything is given up
//! after `[server] drain_timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use telemetry::Tracer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminState, serve_admin};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::runtime::{self, Runtime, SharedRuntime};
use crate::service::{AuthzService, StartError, serve_grpc, serve_grpc_unix};

/// The already-bound listeners of a server.
#[derive(Debug)]
pub struct Listeners {
    /// ext_authz and `grpc.health.v1`.
    pub grpc: TcpListener,
    /// The same gRPC services on a Unix domain socket (`[server] grpc_unix_socket`), if any.
    pub grpc_unix: Option<UnixListener>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses of a `[server]` section.
    ///
    /// # Errors
    /// [`ServeError::Bind`] naming the listener and address that could not be bound.
    pub async fn bind(server: &ServerConfig) -> Result<Self, ServeError> {
        let bind = async |what: &'static str, addr: SocketAddr| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { what, addr, source })
        };
        Ok(Self {
            grpc: bind("gRPC", server.grpc_addr).await?,
            grpc_unix: match &server.grpc_unix_socket {
                Some(path) => Some(bind_unix(path)?),
                None => None,
            },
            admin: bind("admin", server.admin_addr).await?,
        })
    }
}

/// Binds a Unix socket at `path`, first removing a socket file a previous run left there (a
/// file of any other kind is an error, never removed).
fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |source| ServeError::BindUnix {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    UnixListener::bind(path).map_err(err)
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("binding {what} listener {addr}")]
    Bind {
        /// `gRPC` or `admin`.
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC Unix socket could not be bound.
    #[error("binding gRPC Unix socket {}", path.display())]
    BindUnix {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server")]
    Grpc(#[from] tonic::transport::Error),
    /// The admin server failed.
    #[error("admin server")]
    Admin(#[source] std::io::Error),
    /// A server task panicked or was cancelled.
    #[error("{0} server task")]
    Task(&'static str, #[source] tokio::task::JoinError),
}

/// A started decision pipeline, ready to serve.
pub struct Server {
    /// Re-read on reload.
    config_path: PathBuf,
    service: AuthzService,
    metrics: Arc<Metrics>,
    /// Flushed at the end of the drain so the last checks' spans reach the collector.
    tracer: Tracer,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config_path", &self.config_path)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the pipeline's stateful steps (rate-limit store, audit writer) for a loaded
    /// runtime. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`StartError`] when the store or the audit log cannot be set up (a configuration error).
    pub fn start(
        config_path: &Path,
        runtime: Runtime,
        metrics: Arc<Metrics>,
        tracer: Tracer,
    ) -> Result<Self, StartError> {
        let shared: SharedRuntime = Arc::new(ArcSwap::from_pointee(runtime));
        let service =
            AuthzService::start(shared, Arc::clone(&metrics))?.with_tracer(tracer.clone());
        Ok(Self {
            config_path: config_path.to_owned(),
            service,
            metrics,
            tracer,
        })
    }

    /// The configuration in force (swapped on reload).
    pub fn runtime(&self) -> SharedRuntime {
        self.service.runtime()
    }

    /// The decision pipeline this server serves.
    pub fn service(&self) -> &AuthzService {
        &self.service
    }

    /// Serves on `listeners` until `shutdown` completes, then drains (bounded by
    /// `[server] drain_timeout`), flushes spans and closes the audit log.
    ///
    /// # Errors
    /// [`ServeError`] when a server failed; the drain and the audit shutdown happen anyway.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let settings = self.service.runtime().load().config.server.clone();
        tracing::info!(
            grpc = ?listeners.grpc.local_addr().ok(),
            grpc_unix = ?listeners.grpc_unix.as_ref().and_then(|l| l.local_addr().ok()),
            admin = ?listeners.admin.local_addr().ok(),
            "authz serving"
        );
        let running = self.spawn(listeners, settings.reload_poll_interval);
        shutdown.await;
        let result = running.drain(settings.drain_timeout).await;
        // Spans of the last checks reach the collector unless it is unreachable.
        let flush = self.tracer.flush();
        let _ = tokio::time::timeout(telemetry::export::SHUTDOWN_FLUSH_TIMEOUT, flush).await;
        // Every acknowledged record is already durable; this lets the writer finish cleanly.
        let audit = self.service.audit().clone();
        tokio::task::spawn_blocking(move || audit.shutdown())
            .await
            .ok();
        result
    }

    /// Starts the gRPC server, the admin server and the reload watcher.
    fn spawn(&self, listeners: Listeners, reload_poll: std::time::Duration) -> Running {
        let (drain, drain_rx) = watch::channel(false);
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let readiness = self.service.readiness();
        let admin_state = AdminState {
            metrics: Arc::clone(&self.metrics),
            readiness: readiness.clone(),
        };
        Running {
            grpc: tokio::spawn(serve_both(
                listeners.grpc,
                listeners.grpc_unix,
                self.service.clone(),
                drain_rx.clone(),
            )),
            admin: tokio::spawn(serve_admin(
                listeners.admin,
                admin_state,
                became_true(admin_stop_rx),
            )),
            watcher: tokio::spawn(runtime::watch(
                self.config_path.clone(),
                self.service.runtime(),
                Arc::clone(&self.metrics),
                reload_poll,
                became_true(drain_rx),
            )),
            drain,
            admin_stop,
            readiness,
        }
    }
}

/// The tasks of a serving server and the signals that stop them.
struct Running {
    /// Set to `true` at the start of the drain: stops the gRPC server (in-flight checks finish)
    /// and the reload watcher.
    drain: watch::Sender<bool>,
    /// Set to `true` once checks have drained (or the drain timed out): stops the admin server,
    /// so `/readyz` answers "not ready" for the whole drain instead of refusing connections.
    admin_stop: watch::Sender<bool>,
    /// Flipped to draining before `drain` is sent, so the probes change first.
    readiness: Readiness,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: JoinHandle<std::io::Result<()>>,
    watcher: JoinHandle<()>,
}

impl Running {
    /// The bounded drain: probes say "not ready" at once, then the servers stop, all within
    /// `timeout`.
    async fn drain(self, timeout: std::time::Duration) -> Result<(), ServeError> {
        tracing::info!("draining");
        self.readiness.start_draining();
        let _ = self.drain.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        let watcher = self.watcher;
        let grpc = tokio::time::timeout_at(deadline, async {
            let _ = watcher.await;
            self.grpc.await
        })
        .await;
        let _ = self.admin_stop.send(true);
        let admin = tokio::time::timeout_at(deadline, self.admin).await;
        let (Ok(grpc), Ok(admin)) = (grpc, admin) else {
            tracing::warn!("drain timeout; exiting with checks in flight");
            return Ok(());
        };
        server_result(grpc, admin)?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The first failure of the two servers, if any.
fn server_result(
    grpc: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
    admin: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), ServeError> {
    grpc.map_err(|e| ServeError::Task("gRPC", e))??;
    admin
        .map_err(|e| ServeError::Task("admin", e))?
        .map_err(ServeError::Admin)
}

/// The gRPC services on the TCP listener and, when configured, the Unix socket, until `drain`;
/// the first failure of either.
async fn serve_both(
    tcp: TcpListener,
    unix: Option<UnixListener>,
    service: AuthzService,
    drain: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let Some(unix) = unix else {
        return serve_grpc(tcp, service, became_true(drain)).await;
    };
    let on_unix = serve_grpc_unix(unix, service.clone(), became_true(drain.clone()));
    let on_tcp = serve_grpc(tcp, service, became_true(drain));
    tokio::try_join!(on_tcp, on_unix).map(|_| ())
}

/// Completes once `rx` holds `true` (or its sender is gone).
async fn became_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
