//! The tonic `envoy.service.auth.v3.Authorization` service: composes the pipeline steps.
//!
//! Read [`AuthzService::decide`] top to bottom to follow a request:
//! facts (`request.rs`), authentication (`authn`), policy (`policy.rs`), rate limit (slot),
//! audit (slot), response (`response.rs`).
//!
//! The Check RPC never fails: every outcome, including a missing dependency, is an explicit
//! decision with a status, so Envoy's `failure_mode_allow` is only about authz being unreachable.

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::decision::{Decision, ReasonCode};
use crate::metrics::{DecisionLabels, Metrics};
use crate::policy::PolicyInput;
use crate::request::{Facts, Target, request_meta};
use crate::response::to_check_response;
use crate::runtime::{Runtime, SharedRuntime};

/// The authorization service.
#[derive(Clone, Debug)]
pub struct AuthzService {
    runtime: SharedRuntime,
    metrics: Arc<Metrics>,
}

impl AuthzService {
    /// A service deciding with whatever runtime `runtime` currently holds.
    pub fn new(runtime: SharedRuntime, metrics: Arc<Metrics>) -> Self {
        AuthzService { runtime, metrics }
    }

    /// The whole pipeline for one check. This is the function to extend.
    pub async fn decide(&self, req: &CheckRequest) -> Decision {
        let started = Instant::now();
        // One runtime for the whole check, even if a reload lands meanwhile.
        let rt = self.runtime.load_full();
        let decision = authorize(&rt, req).await;

        // ---- Step 4: RATE LIMIT (slot) ---------------------------------------------------
        // if decision.allowed() && decision.model.is_some() {
        //     match self.rate_limiter.check(&rt, &decision).await {
        //         Allowed { headers } => decision.response_headers.extend(headers),
        //         Limited { retry_after, headers } => {
        //             decision.set_outcome(ReasonCode::RateLimited, "...");
        //             decision.retry_after = Some(retry_after);
        //             decision.response_headers.extend(headers);
        //         }
        //         StoreError per model `on_store_error`: deny -> ReasonCode::Unavailable (503).
        //     }
        // }

        // ---- Step 5: AUDIT (slot) -----------------------------------------------------------
        // Every decision, allow and deny, before responding:
        // if let Err(e) = self.audit.record(&decision, started.elapsed()).await {
        //     decision.set_outcome(ReasonCode::Unavailable, "audit log unavailable");
        // }

        self.observe(&rt, &decision, started);
        decision
    }

    fn observe(&self, rt: &Runtime, d: &Decision, started: Instant) {
        self.metrics
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                decision: d.decision_str(),
                reason: d.reason.as_str().to_owned(),
                model: rt.model_label(d.model.as_deref()),
            })
            .inc();
        if !d.allowed() {
            tracing::info!(
                decision.id = %d.id,
                decision.reason = d.reason.as_str(),
                principal.id = d.principal.as_ref().map(|p| p.id.as_str()),
                model.name = d.model.as_deref(),
                request.id = d.request_id.as_deref(),
                "denied"
            );
        }
    }
}

/// Steps 1-3: facts, authentication, policy.
async fn authorize(rt: &Runtime, req: &CheckRequest) -> Decision {
    let meta = request_meta(req);
    let mut d = Decision::new(ReasonCode::Allowed, "allowed");
    d.source_ip = meta.source_ip;
    d.request_id = meta.request_id;
    d.trace_id = meta.trace_id;

    // 1. Facts.
    let facts = match Facts::from_check_request(req, &rt.rules) {
        Ok(f) => f,
        Err(e) => {
            d.set_outcome(e.reason_code(), e.to_string());
            return d;
        }
    };
    d.access_reason = facts.access_reason.clone();
    let model = match facts.target {
        Target::Public => {
            d.set_outcome(ReasonCode::PublicPath, "public path");
            return d;
        }
        Target::Model(m) => {
            d.model = Some(m.name.clone());
            d.version = m.version.clone();
            d.action = Some(m.action);
            Some(m)
        }
        Target::Other => None,
    };

    // 2. Authentication.
    let principal = match rt.authenticator.authenticate(&facts.credentials).await {
        Ok(p) => p,
        Err(e) => {
            d.set_outcome(e.reason_code(), e.to_string());
            return d;
        }
    };
    d.principal = Some(principal);

    // 3. Policy.
    let Some(model) = model else {
        d.set_outcome(
            ReasonCode::PathNotAllowed,
            "this path is not exposed through the gateway",
        );
        return d;
    };
    let Some(principal) = d.principal.as_ref() else {
        return d;
    };
    let outcome = rt.policy.evaluate(&PolicyInput {
        principal,
        model: &model.name,
        version: model.version.as_deref(),
        action: model.action,
        access_reason: d.access_reason.as_deref(),
        source_ip: d.source_ip,
        request_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
    });
    d.set_outcome(outcome.reason, outcome.message);
    d.policies = outcome.policies;
    d
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let decision = self.decide(request.get_ref()).await;
        // Step 6: the response.
        Ok(Response::new(to_check_response(&decision)))
    }
}

/// Serves ext_authz and `grpc.health.v1` on an already-bound listener until `shutdown` completes;
/// in-flight checks finish first. Health is SERVING only while the runtime is ready.
///
/// # Errors
/// A transport error from the server.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    service: AuthzService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let runtime = Arc::clone(&service.runtime);
    // Keeps the health status in step with readiness (JWKS loaded); stops when serving stops.
    let health_task = tokio::spawn(async move {
        let mut last = None;
        loop {
            let ready = runtime.load().ready();
            if last != Some(ready) {
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                reporter
                    .set_service_status("envoy.service.auth.v3.Authorization", status)
                    .await;
                last = Some(ready);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    });
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    health_task.abort();
    result
}
