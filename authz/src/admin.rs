//! The admin HTTP server: `/healthz` (the process is up), `/readyz` (config, policies and signing
//! keys are loaded and the audit log is being written: send traffic), `/metrics`
//! (Prometheus/OpenMetrics text).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::runtime::SharedRuntime;

/// How long a failed audit write keeps `/readyz` at 503 before the replica is offered traffic
/// again to find out whether writing works (see [`AuditLog::failed_within`]).
pub const AUDIT_UNREADY_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// What the admin handlers read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The running configuration.
    pub runtime: SharedRuntime,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The audit log: while its last write failed, every check is denied with
    /// `audit_unavailable`, so the replica reports itself not ready (a load balancer or
    /// Kubernetes then sends traffic to replicas that can leave evidence).
    pub audit: Option<AuditLog>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.audit
        .as_ref()
        .is_some_and(|a| a.failed_within(AUDIT_UNREADY_WINDOW))
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the audit log cannot be written\n".to_owned(),
        );
    }
    match s.runtime.load().not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
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
