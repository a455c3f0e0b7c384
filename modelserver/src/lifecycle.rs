//! The one way the model server starts and stops: [`serve`] runs the REST, gRPC and metrics
//! servers on listeners it is given, and when its shutdown future completes, drains them in one
//! ordered sequence. `main.rs` calls it on SIGTERM/SIGINT; the tests' harness calls it on
//! loopback listeners, so tests run the production wiring.
//!
//! The drain, in order:
//! 1. readiness turns false ([`ModelServer::begin_drain`]): REST `/v2/health/ready` answers 503
//!    and gRPC health is pushed `NOT_SERVING` for `""` and `inference.GRPCInferenceService`, while
//!    every listener still accepts and serves;
//! 2. after `[shutdown] readiness_grace_ms`, long enough for load balancers to see it, the
//!    listeners stop accepting and each server finishes the requests it has;
//! 3. after `[shutdown] drain_timeout_ms` whatever is still in flight is abandoned and [`serve`]
//!    returns [`Stopped::DeadlinePassed`], so the process can exit on time.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::GrpcHealth;
use crate::server::ModelServer;

/// The three listeners, already bound (tests bind `127.0.0.1:0`).
pub struct Listeners {
    /// OIP REST.
    pub http: tokio::net::TcpListener,
    /// OIP gRPC and `grpc.health.v1`.
    pub grpc: tokio::net::TcpListener,
    /// Prometheus `GET /metrics`.
    pub metrics: tokio::net::TcpListener,
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every request in flight was answered.
    Drained,
    /// The drain deadline passed with requests (or health `Watch` streams) still open; they
    /// were abandoned.
    DeadlinePassed,
}

/// A server that failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The REST server's listener failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    /// The gRPC server's transport failed.
    #[error("gRPC server: {0}")]
    Grpc(#[source] tonic::transport::Error),
    /// The metrics server's listener failed.
    #[error("metrics server: {0}")]
    Metrics(#[source] std::io::Error),
    /// A server task panicked.
    #[error("{what} server task: {source}")]
    Task {
        /// Which server.
        what: &'static str,
        /// The join error.
        source: tokio::task::JoinError,
    },
}

/// Serves `server` on `listeners` until `shutdown` completes, then drains as the module docs
/// describe, with the grace and deadline of `server.config.shutdown`.
///
/// # Errors
/// The first [`ServeError`] of a server, once every server has stopped.
pub async fn serve(
    server: Arc<ModelServer>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, ServeError> {
    // Flips to true once, after the readiness grace: every server then stops accepting.
    let (close_tx, close_rx) = watch::channel(false);
    let closed = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|&c| c).await;
    };
    let (health, health_service) = GrpcHealth::new(Arc::clone(&server)).await;
    let follow = tokio::spawn(health.clone().follow());
    let http = tokio::spawn(crate::http::serve(
        listeners.http,
        Arc::clone(&server),
        closed(close_rx.clone()),
    ));
    let grpc = tokio::spawn(crate::grpc::serve(
        listeners.grpc,
        Arc::clone(&server),
        health_service,
        closed(close_rx.clone()),
    ));
    let metrics = tokio::spawn(crate::http::serve_metrics(
        listeners.metrics,
        Arc::clone(&server),
        closed(close_rx),
    ));

    // Kept to end the servers, and what they still run, once the deadline passes.
    let abandon = [
        http.abort_handle(),
        grpc.abort_handle(),
        metrics.abort_handle(),
    ];

    shutdown.await;
    let drain = &server.config.shutdown;
    tracing::info!(
        drain.grace_ms = drain.readiness_grace_ms,
        drain.timeout_ms = drain.drain_timeout_ms,
        "shutdown requested: draining (readiness off)"
    );
    server.begin_drain();
    health.refresh().await;
    tokio::time::sleep(drain.readiness_grace()).await;
    tracing::info!("readiness grace over: listeners closed");
    let _ = close_tx.send(true);
    let joined = tokio::time::timeout(drain.drain_timeout(), join(http, grpc, metrics)).await;
    follow.abort();
    match joined {
        Ok(result) => {
            result?;
            tracing::info!("drained");
            Ok(Stopped::Drained)
        }
        Err(_) => {
            abandon.iter().for_each(tokio::task::AbortHandle::abort);
            tracing::warn!(
                drain.timeout_ms = drain.drain_timeout_ms,
                "drain deadline passed: abandoning requests in flight"
            );
            Ok(Stopped::DeadlinePassed)
        }
    }
}

/// Waits for all three servers, then reports the first failure.
async fn join(
    http: JoinHandle<std::io::Result<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics: JoinHandle<std::io::Result<()>>,
) -> Result<(), ServeError> {
    let task = |what| move |source| ServeError::Task { what, source };
    let (h, g, m) = tokio::join!(http, grpc, metrics);
    h.map_err(task("HTTP"))?.map_err(ServeError::Http)?;
    g.map_err(task("gRPC"))?.map_err(ServeError::Grpc)?;
    m.map_err(task("metrics"))?.map_err(ServeError::Metrics)?;
    Ok(())
}
