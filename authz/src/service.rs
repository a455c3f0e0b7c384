//! The tonic `envoy.service.auth.v3.Authorization` service: composes the pipeline steps.
//!
//! Read [`AuthzService::decide`] top to bottom to follow a request:
//! facts (`request.rs`), authentication (`authn`), policy (`policy.rs`), rate limit
//! (`ratelimit`), audit (`audit`), response (`response.rs`).
//!
//! The Check RPC never fails: every outcome, including a missing dependency, is an explicit
//! decision with a status, so Envoy's `failure_mode_allow` is only about authz being unreachable.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use telemetry::{Span, TraceContext, Tracer};
use tonic::{Request, Response, Status};

use crate::audit::{self, AuditDecision, AuditEvent, AuditLog, AuditMetrics, AuditPrincipal};
use crate::catalog;
use crate::decision::{Decision, ReasonCode};
use crate::metrics::{DecisionLabels, Metrics, ShadowLabels};
use crate::policy::PolicyInput;
use crate::ratelimit::{OnStoreError, RateLimitError, RateLimitOutcome, RateLimiter};
use crate::readiness::Readiness;
use crate::request::{Credentials, Facts, ModelRef, Target, request_meta};
use crate::response::to_check_response;
use crate::runtime::{Runtime, SharedRuntime};
use crate::trace::{annotate_check, fail_step};

/// How long a check waits for its audit record to become durable before it is denied with
/// 503 `audit_unavailable`. Below Envoy's ext_authz timeout (0.5 s in `envoy/render.py`), so a
/// stuck disk gives the client our JSON denial rather than Envoy's bare `status_on_error`.
/// A record that lands after this still exists, showing an allow the client never got: the log
/// may over-report access, never under-report it.
pub const AUDIT_APPEND_TIMEOUT: Duration = Duration::from_millis(400);

/// The audit record's action for `GET /v1/models` (not a model action: no policy decides it).
pub const CATALOG_ACTION: &str = "list";

/// Starting the service's stateful steps failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `[rate_limit]` store could not be set up.
    #[error("rate limiter: {0}")]
    RateLimit(#[from] RateLimitError),
    /// The `[audit]` log could not be started.
    #[error("audit log: {0}")]
    Audit(#[from] audit::AuditError),
}

/// The authorization service.
#[derive(Clone)]
pub struct AuthzService {
    /// The configuration in force; swapped atomically on reload.
    runtime: SharedRuntime,
    metrics: Arc<Metrics>,
    /// Step 4. Its store (and connection) outlives reloads; each check passes the limits of the
    /// runtime it decided with.
    limiter: Arc<RateLimiter>,
    /// Step 5. A handle to the single writer thread; cloning shares it.
    audit: AuditLog,
    /// Whether to send this replica traffic: the runtime's keys, the audit log's health, and
    /// the drain flag every clone shares (read by `/readyz` and `grpc.health.v1`).
    readiness: Readiness,
    /// Span export (`crate::trace`); disabled unless configured, then a check records nothing.
    tracer: Tracer,
}

impl std::fmt::Debug for AuthzService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzService")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl AuthzService {
    /// Starts the rate limiter and the audit writer from the `[rate_limit]` and `[audit]`
    /// sections of the runtime's current config (those take effect at start, not on reload).
    /// Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`StartError`] when the store or the audit log cannot be set up.
    pub fn start(runtime: SharedRuntime, metrics: Arc<Metrics>) -> Result<Self, StartError> {
        let config = runtime.load().config.audit.clone();
        let audit_metrics = metrics.with_registry(AuditMetrics::new);
        let audit = AuditLog::start(&config, audit_metrics)?;
        Self::with_audit(runtime, metrics, audit)
    }

    /// As [`AuthzService::start`], with an audit log the caller started (benchmarks compare
    /// durability modes this way; tests can share one log between services).
    ///
    /// # Errors
    /// [`StartError::RateLimit`] when the store cannot be set up.
    pub fn with_audit(
        runtime: SharedRuntime,
        metrics: Arc<Metrics>,
        audit: AuditLog,
    ) -> Result<Self, StartError> {
        let rt = runtime.load_full();
        let limiter = metrics
            .with_registry(|registry| RateLimiter::from_config(&rt.config.rate_limit, registry))?;
        tracing::info!(
            ratelimit.store = limiter.store_name(),
            audit.path = %rt.config.audit.path.display(),
            "decision pipeline started"
        );
        Ok(AuthzService {
            readiness: Readiness::new(Arc::clone(&runtime), Some(audit.clone())),
            runtime,
            metrics,
            limiter: Arc::new(limiter),
            audit,
            tracer: Tracer::disabled(),
        })
    }

    /// The configuration in force (shared with the reload watcher and the admin server).
    pub fn runtime(&self) -> SharedRuntime {
        Arc::clone(&self.runtime)
    }

    /// Records each check's spans with `tracer` (see [`crate::trace`]).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The audit log handle (shutdown).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// This service's readiness (shared with the admin server; see [`crate::readiness`]).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The whole pipeline for one check, in the trace of the request's `traceparent` header.
    pub async fn decide(&self, req: &CheckRequest) -> Decision {
        self.decide_in_trace(req, None).await
    }

    /// The whole pipeline for one check. `envoy_traceparent` is the `traceparent` Envoy sent with
    /// the Check call itself (its ext_authz span); without a valid one the check's span is a child
    /// of the request's `traceparent` header, or starts a new trace.
    pub async fn decide_in_trace(
        &self,
        req: &CheckRequest,
        envoy_traceparent: Option<&str>,
    ) -> Decision {
        let started = Instant::now();
        let mut span = if self.tracer.is_enabled() {
            let parent = crate::trace::parent_of(envoy_traceparent, req);
            self.tracer.server_span("authz.check", parent)
        } else {
            Span::none()
        };
        // One runtime for the whole check, even if a reload lands meanwhile.
        let rt = self.runtime.load_full();
        // Steps 1-3: facts, authentication, policy.
        let mut decision = authorize_traced(&rt, req, &span).await;
        // The audit names the trace this check's spans are in (also one started here), else the
        // one Envoy traces the request in (also with export off here), else the header's.
        if let Some(trace_id) = span.trace_id() {
            decision.trace_id = Some(trace_id.to_string());
        } else if let Some(envoy) = envoy_traceparent.and_then(|v| TraceContext::parse(v).ok()) {
            decision.trace_id = Some(envoy.trace_id.to_string());
        }
        // Step 4: rate limit, only for requests policy allowed on a model (a catalog read only
        // reads the remaining quotas).
        if decision.reason == ReasonCode::Allowed {
            let mut step = span.child("authz.ratelimit");
            self.rate_limit(&rt, &mut decision).await;
            if let Some(outcome) = &decision.rate_limit
                && step.is_recording()
            {
                step.set_attribute("ratelimit.outcome", audit_rate_limit(outcome).outcome);
            }
            if decision.reason != ReasonCode::Allowed {
                fail_step(&mut step, &decision.reason);
            }
        }
        // Step 5: audit every decision, allow and deny, before answering.
        let mut step = span.child("authz.audit");
        self.record(&mut decision, started).await;
        if decision.reason == ReasonCode::AuditUnavailable {
            fail_step(&mut step, &decision.reason);
        }
        step.end();
        self.observe(&rt, &decision, started);
        annotate_check(&mut span, &rt, &decision);
        decision
    }

    /// A check its adapter refused before the pipeline could read the request (the embedded
    /// filter's gRPC message beyond the bytes it reads): denied with `reason`, audited and counted
    /// like every other decision, under the request's ids and source address.
    pub async fn refuse(
        &self,
        req: &CheckRequest,
        reason: ReasonCode,
        message: impl Into<String>,
    ) -> Decision {
        let started = Instant::now();
        let rt = self.runtime.load_full();
        let meta = request_meta(req);
        let mut decision = Decision::new(reason, message);
        decision.source_ip = meta.source_ip;
        decision.request_id = meta.request_id;
        decision.trace_id = meta.trace_id;
        self.record(&mut decision, started).await;
        self.observe(&rt, &decision, started);
        decision
    }

    async fn rate_limit(&self, rt: &Runtime, d: &mut Decision) {
        // A catalog read spends nothing: it only peeks at each listed model's quota.
        if let (Some(catalog), Some(principal)) = (d.catalog.as_mut(), d.principal.as_ref()) {
            catalog::fill_remaining(catalog, &self.limiter, &rt.limits, principal).await;
            return;
        }
        let (Some(model), Some(principal)) = (d.model.as_deref(), d.principal.as_ref()) else {
            return;
        };
        let outcome = self
            .limiter
            .check(&rt.limits, &principal.id, model, &principal.roles)
            .await;
        if let Some(state) = outcome.state() {
            d.response_headers
                .extend(state.headers().into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
        match outcome {
            RateLimitOutcome::Allowed(_) | RateLimitOutcome::Unlimited => {}
            RateLimitOutcome::Limited(state) => d.set_outcome(
                ReasonCode::RateLimited,
                format!(
                    "rate limit of {} requests exceeded for this model; retry in {} s",
                    state.limit, state.retry_after_secs
                ),
            ),
            RateLimitOutcome::StoreFailed {
                policy: OnStoreError::Allow,
                ..
            } => {}
            RateLimitOutcome::StoreFailed {
                policy: OnStoreError::Deny,
                error,
            } => d.set_outcome(
                ReasonCode::RateLimitUnavailable,
                format!("rate-limit store unavailable ({error:?}); this model fails closed"),
            ),
            RateLimitOutcome::UnknownModel => d.set_outcome(
                ReasonCode::UnknownModel,
                "no rate limit is configured for this model",
            ),
        }
        d.rate_limit = Some(outcome);
    }

    async fn record(&self, d: &mut Decision, started: Instant) {
        let event = audit_event(d, started.elapsed());
        let result = tokio::time::timeout(AUDIT_APPEND_TIMEOUT, self.audit.append(event)).await;
        let error = match result {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no durable record within {AUDIT_APPEND_TIMEOUT:?}"),
        };
        tracing::error!(decision.id = %d.id, error = %error, "audit record not written; denying");
        d.set_outcome(
            ReasonCode::AuditUnavailable,
            "the audit log cannot be written: no evidence, no access",
        );
        // The client is not admitted, so no rate-limit headers describe its request.
        d.response_headers.clear();
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
        if let Some(shadow) = &d.shadow {
            self.metrics
                .shadow_disagreements
                .get_or_create(&ShadowLabels {
                    active: policy_decision_str(d),
                    shadow: if shadow.reason.is_allow() {
                        "allow"
                    } else {
                        "deny"
                    },
                    model: rt.model_label(d.model.as_deref()),
                })
                .inc();
        }
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

/// The active policy's decision, before the rate limit and the audit could turn an allow into a
/// denial: what the shadow policy is compared with.
fn policy_decision_str(d: &Decision) -> &'static str {
    if d.policy_allowed() { "allow" } else { "deny" }
}

/// The audit record of a decision: everything the evidence needs, nothing secret.
fn audit_event(d: &Decision, latency: Duration) -> AuditEvent {
    AuditEvent {
        decision_id: d.id,
        request_id: d.request_id.clone(),
        trace_id: d.trace_id.clone(),
        principal: d.principal.as_ref().map(|p| AuditPrincipal {
            id: p.id.clone(),
            auth_method: p.auth_method.as_str().to_owned(),
            roles: p.roles.clone(),
        }),
        model: d.model.clone(),
        version: d.version.clone(),
        action: match (d.action, &d.catalog) {
            (Some(a), _) => a.as_str(),
            // No policy decides a catalog read; `policy replay` skips it (no model).
            (None, Some(_)) => CATALOG_ACTION,
            (None, None) => "none",
        }
        .to_owned(),
        decision: if d.allowed() {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        },
        status: d.http_status(),
        reason: d.reason.as_str().to_owned(),
        policy_ids: d.policies.clone(),
        access_reason: d.access_reason.clone(),
        rate_limit: d.rate_limit.as_ref().map(audit_rate_limit),
        source_ip: d.source_ip,
        latency,
        request_time: d.request_time,
        shadow: d.shadow.as_ref().map(|s| audit::ShadowVerdict {
            decision: if s.reason.is_allow() {
                AuditDecision::Allow
            } else {
                AuditDecision::Deny
            },
            reason: s.reason.as_str().to_owned(),
            policy_ids: s.policies.clone(),
        }),
    }
}

fn audit_rate_limit(outcome: &RateLimitOutcome) -> audit::RateLimitState {
    let outcome_name = match outcome {
        RateLimitOutcome::Allowed(_) => "allowed",
        RateLimitOutcome::Unlimited => "unlimited",
        RateLimitOutcome::Limited(_) => "limited",
        RateLimitOutcome::StoreFailed {
            policy: OnStoreError::Allow,
            ..
        } => "store_failed_allowed",
        RateLimitOutcome::StoreFailed {
            policy: OnStoreError::Deny,
            ..
        } => "store_failed_denied",
        RateLimitOutcome::UnknownModel => "unknown_model",
    };
    let state = outcome.state();
    audit::RateLimitState {
        outcome: outcome_name.to_owned(),
        limit: state.map(|s| s.limit),
        remaining: state.map(|s| s.remaining),
        retry_after_ms: state
            .filter(|s| s.retry_after_secs > 0)
            .map(|s| s.retry_after_secs.saturating_mul(1000)),
    }
}

/// Steps 1-3: facts, authentication, policy, against one runtime. No side effects beyond the
/// token cache: no rate-limit state, no audit record, no metrics (benchmarks time this part
/// alone; [`AuthzService::decide`] is the whole check).
pub async fn authorize(rt: &Runtime, req: &CheckRequest) -> Decision {
    authorize_traced(rt, req, &Span::none()).await
}

/// [`authorize`], with a child span of `check` per step.
async fn authorize_traced(rt: &Runtime, req: &CheckRequest, check: &Span) -> Decision {
    let step = check.child("authz.facts");
    let meta = request_meta(req);
    let mut d = Decision::new(ReasonCode::Allowed, "allowed");
    d.source_ip = meta.source_ip;
    d.request_id = meta.request_id;
    d.trace_id = meta.trace_id;

    // 1. Facts.
    let Some((credentials, target)) = facts_step(rt, req, &mut d, step) else {
        return d;
    };

    // 2. Authentication.
    let mut step = check.child("authz.authn");
    let principal = match rt.authenticator.authenticate(&credentials).await {
        Ok(p) => p,
        Err(e) => {
            d.set_outcome(e.reason_code(), e.to_string());
            fail_step(&mut step, &d.reason);
            return d;
        }
    };
    step.set_attribute("auth.method", principal.auth_method.as_str());
    step.end();
    d.principal = Some(principal);

    // 3. Policy.
    match target {
        Target::Model(model) => policy_step(rt, &model, &mut d, check),
        // Any authenticated caller may read its own catalog; what it lists is policy's.
        Target::Catalog => {
            if let Some(p) = &d.principal {
                d.catalog = Some(catalog::catalog(&rt.policy, &rt.limits, p, unix_now()));
                d.set_outcome(ReasonCode::Allowed, "catalog");
            }
        }
        Target::Public | Target::Other => d.set_outcome(
            ReasonCode::PathNotAllowed,
            "this path is not exposed through the gateway",
        ),
    }
    d
}

/// The current time in Unix seconds, as policy reads it.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
}

/// Step 1 in span `step`: the request's facts into `d`. `None` when they already decide (a
/// malformed request, a public path); else the credentials and what the request is about.
fn facts_step(
    rt: &Runtime,
    req: &CheckRequest,
    d: &mut Decision,
    mut step: Span,
) -> Option<(Credentials, Target)> {
    let facts = match Facts::from_check_request(req, &rt.rules) {
        Ok(f) => f,
        Err(e) => {
            d.set_outcome(e.reason_code(), e.to_string());
            fail_step(&mut step, &d.reason);
            return None;
        }
    };
    d.access_reason = facts.access_reason.clone();
    match &facts.target {
        Target::Public => {
            d.set_outcome(ReasonCode::PublicPath, "public path");
            return None;
        }
        Target::Model(m) => {
            d.model = Some(m.name.clone());
            d.version = m.version.clone();
            d.action = Some(m.action);
        }
        Target::Catalog | Target::Other => {}
    }
    step.end();
    Some((facts.credentials, facts.target))
}

/// Step 3: the policy's decision on `model` for the authenticated principal, into `d`; then,
/// with the answer decided, the shadow policy's verdict on the same input (kept only where it
/// disagrees). Both are memoized Cedar evaluations (`policy::memo`), a microsecond or two on a
/// warm memo (`cargo bench -p authz --bench decision`, docs/benchmarks.md).
fn policy_step(rt: &Runtime, model: &ModelRef, d: &mut Decision, check: &Span) {
    let Some(principal) = d.principal.as_ref() else {
        return;
    };
    let mut step = check.child("authz.policy");
    let request_time = unix_now();
    let input = PolicyInput {
        principal,
        model: &model.name,
        version: model.version.as_deref(),
        action: model.action,
        access_reason: d.access_reason.as_deref(),
        source_ip: d.source_ip,
        request_time,
    };
    let outcome = rt.policy.evaluate(&input);
    let shadow = rt
        .shadow
        .as_ref()
        .map(|shadow| shadow.evaluate(&input))
        .filter(|s| s.reason != outcome.reason);
    d.request_time = Some(request_time);
    d.shadow = shadow;
    d.set_outcome(outcome.reason, outcome.message);
    d.policies = outcome.policies;
    if !d.allowed() {
        fail_step(&mut step, &d.reason);
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // Envoy's ext_authz filter sends its own span's context as gRPC metadata.
        let envoy_traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let decision = self
            .decide_in_trace(request.get_ref(), envoy_traceparent)
            .await;
        // Step 6: the response.
        Ok(Response::new(to_check_response(&decision)))
    }
}

/// Serves ext_authz and `grpc.health.v1` on an already-bound listener until `shutdown` completes;
/// in-flight checks finish first. Health is SERVING only while the service is ready
/// ([`crate::readiness`]: NOT_SERVING from the start of a drain).
///
/// # Errors
/// A transport error from the server.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    service: AuthzService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // TCP_NODELAY: a gRPC answer is several small writes (headers, message, trailers); with
    // Nagle the last one waits for Envoy's delayed ACK, adding ~40 ms to every decision
    // (measured by `make bench`, docs/benchmarks.md).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(incoming, service, shutdown).await
}

/// As [`serve_grpc`], on a Unix domain socket (`[server] grpc_unix_socket`).
///
/// # Errors
/// A transport error from the server.
pub async fn serve_grpc_unix(
    listener: tokio::net::UnixListener,
    service: AuthzService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    serve_incoming(incoming, service, shutdown).await
}

async fn serve_incoming<I, IO, IE>(
    incoming: I,
    service: AuthzService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    // Stops when serving stops (aborted below).
    let health_task = tokio::spawn(service.readiness().report_health(reporter));
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    health_task.abort();
    result
}
