//! The one readiness rule, read by both probes: the admin `/readyz` and `grpc.health.v1`
//! (Envoy's and Kubernetes' view of whether to send this replica traffic).
//!
//! A replica is ready when it is not draining, its audit log is being written (no evidence, no
//! access: while writes fail every check is denied, so traffic should go elsewhere), and every
//! issuer's signing keys are loaded. Draining starts when shutdown begins and never ends, so both
//! probes say "not serving" for the whole bounded drain while in-flight checks finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::runtime::SharedRuntime;

/// How long a failed audit write keeps the replica not ready before it is offered traffic
/// again to find out whether writing works (see [`AuditLog::failed_within`]).
pub const AUDIT_UNREADY_WINDOW: Duration = Duration::from_secs(10);

/// How often the gRPC health status is recomputed (key loads and audit failures have no event to
/// wait on); a drain is reported at once, without waiting for the next poll.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// The services `grpc.health.v1` reports on: the server as a whole (`""`) and ext_authz.
const HEALTH_SERVICES: [&str; 2] = ["", "envoy.service.auth.v3.Authorization"];

/// Whether this replica should get traffic; cheap to clone (all clones share one state).
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The configuration in force (signing keys loaded or not).
    runtime: SharedRuntime,
    /// The audit log whose recent write failures make the replica not ready.
    audit: Option<AuditLog>,
    /// `true` from the start of a drain on. A watch channel, not a flag, so the gRPC health task
    /// wakes the moment a drain starts; the sender is shared by every clone.
    draining: Arc<watch::Sender<bool>>,
}

impl Readiness {
    /// The readiness of `runtime` and `audit`, not draining.
    pub fn new(runtime: SharedRuntime, audit: Option<AuditLog>) -> Self {
        Self {
            runtime,
            audit,
            draining: Arc::new(watch::Sender::new(false)),
        }
    }

    /// `Ok` when ready; otherwise why not, as `/readyz` says it.
    ///
    /// # Errors
    /// The reason the replica should not get traffic now.
    pub fn check(&self) -> Result<(), String> {
        if *self.draining.borrow() {
            return Err("draining: shutting down".to_owned());
        }
        if self
            .audit
            .as_ref()
            .is_some_and(|a| a.failed_within(AUDIT_UNREADY_WINDOW))
        {
            return Err("the audit log cannot be written".to_owned());
        }
        match self.runtime.load().not_ready_reason() {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Lines of detail for `/readyz` that do not decide readiness: the state of each audit
    /// witness (a witness that is down never blocks decisions, but an operator should see it).
    pub fn detail(&self) -> Vec<String> {
        self.audit
            .as_ref()
            .map(|audit| {
                audit
                    .witness_status()
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Marks the start of a drain: from now on both probes say not ready.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Keeps `reporter`'s status of the ext_authz service (and of the server, `""`) in step with
    /// [`Readiness::check`] until the task is aborted.
    pub async fn report_health(self, reporter: tonic_health::server::HealthReporter) {
        let mut draining = self.draining.subscribe();
        let mut last = None;
        loop {
            let ready = self.check().is_ok();
            if last != Some(ready) {
                let status = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for service in HEALTH_SERVICES {
                    reporter.set_service_status(service, status).await;
                }
                last = Some(ready);
            }
            tokio::select! {
                () = tokio::time::sleep(HEALTH_POLL) => {}
                // `self` holds a sender, so this never fails.
                _ = draining.changed() => {}
            }
        }
    }
}
