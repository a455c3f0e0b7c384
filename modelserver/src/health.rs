//! Readiness as both protocols report it, from the one function [`ModelServer::ready`]: REST's
//! `/v2/health/ready` asks it on every probe ([`crate::http`]); `grpc.health.v1`, whose
//! statuses are held by `tonic_health` and pushed to watching clients, is kept in step by
//! [`GrpcHealth`], which [`crate::serve`] refreshes at start, at the start of a drain (at once,
//! before any listener closes) and every [`READINESS_POLL`] in between (a model load or unload
//! changes readiness under `strict_readiness`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::grpc::OipService;
use crate::grpc::pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::server::ModelServer;

/// How often the gRPC health statuses are re-read from [`ModelServer::ready`] between the
/// pushes [`crate::serve`] makes itself: well inside any balancer's probe interval, and the read
/// is a flag and a read lock.
pub const READINESS_POLL: Duration = Duration::from_millis(250);

/// The `grpc.health.v1` services reported: the overall server (`""`, what Envoy's gRPC health
/// check asks by default) and the inference service by its full name.
pub const SERVICES: [&str; 2] = [
    "",
    <GrpcInferenceServiceServer<OipService> as NamedService>::NAME,
];

/// The gRPC health statuses, kept equal to [`ModelServer::ready`].
#[derive(Clone)]
pub struct GrpcHealth {
    server: Arc<ModelServer>,
    reporter: HealthReporter,
    /// The readiness last pushed, so an unchanged one does not wake every `Watch` stream; a
    /// mutex (not an atomic) so two refreshes cannot push out of order.
    last: Arc<Mutex<Option<bool>>>,
}

impl GrpcHealth {
    /// The health state of `server` and the `grpc.health.v1` service that reports it, with the
    /// current readiness already pushed.
    pub async fn new(server: Arc<ModelServer>) -> (GrpcHealth, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = GrpcHealth {
            server,
            reporter,
            last: Arc::new(Mutex::new(None)),
        };
        health.refresh().await;
        (health, service)
    }

    /// Pushes [`ModelServer::ready`] to every reported service if it changed.
    pub async fn refresh(&self) {
        // Read under the lock: a refresh that read "ready" just before a drain began must not
        // push it after the drain's own refresh pushed "not serving".
        let mut last = self.last.lock().await;
        let ready = self.server.ready();
        if *last == Some(ready) {
            return;
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
        *last = Some(ready);
    }

    /// Refreshes every [`READINESS_POLL`], forever; [`crate::serve`] drops it when it stops.
    pub async fn follow(self) {
        let mut tick = tokio::time::interval(READINESS_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }
}
