//! The admin HTTP server: `/healthz` (the process is up), `/readyz` (the rule of
//! [`crate::readiness`]: not draining, the audit log is being written, signing keys are loaded:
//! send traffic), `/metrics` (Prometheus/OpenMetrics text).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What the admin handlers read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether to send this replica traffic (shared with the gRPC health service).
    pub readiness: Readiness,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The first line says ready or not (and why); the lines after it are detail that does not
/// decide readiness (audit witnesses).
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let (status, mut body) = match s.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    };
    for line in s.readiness.detail() {
        body.push_str(&line);
        body.push('\n');
    }
    (status, body)
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Serves the admin routes on an already-bound listener until `shutdown` completes.
///
/// # Errors
/// An I/O error from the server.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
