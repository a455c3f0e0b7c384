//! The running configuration: a validated [`Config`] with its policy engine and credential
//! verifiers ([`Runtime`]), held behind an atomic pointer ([`SharedRuntime`]) so a reload swaps
//! everything at once. A check loads the pointer once and uses that one runtime throughout, so it
//! never sees half of an old config and half of a new one.
//!
//! Reloads happen on SIGHUP and when the config, schema, policy or JWKS files change (polled by
//! modification time and size). An invalid new configuration is rejected, logged and counted
//! (`authz_config_reloads_total{result="failure"}`); the running one stays.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::authn::jwks::Jwks;
use crate::authn::jwt::{Issuer, JwtVerifier};
use crate::authn::{Authenticator, api_key::ApiKeys, mtls::MtlsMap};
use crate::config::{Config, ConfigErrors, ConfigProblem};
use crate::metrics::Metrics;
use crate::policy::PolicyEngine;
use crate::ratelimit::LimitTable;
use crate::request::RequestRules;

/// The shared, atomically swappable runtime.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

/// Aborts a background task when the runtime that owns it is dropped (after a reload), so old
/// JWKS refreshers stop with their config.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One loaded configuration and everything built from it.
#[derive(Debug)]
pub struct Runtime {
    /// The validated config.
    pub config: Config,
    /// Path rules for request facts.
    pub rules: RequestRules,
    /// Credential verification.
    pub authenticator: Authenticator,
    /// Cedar policies and entities.
    pub policy: PolicyEngine,
    /// The `[policy] shadow` candidate, when configured and it loaded.
    pub shadow: Option<PolicyEngine>,
    /// Configured model names (for metric labels).
    pub model_names: BTreeSet<String>,
    /// Validated per-model rate limits of this configuration.
    pub limits: LimitTable,
    /// JWKS background refreshers, stopped when this runtime is dropped (held only for that).
    _refreshers: Vec<AbortOnDrop>,
}

impl Runtime {
    /// Builds a runtime from a validated config: loads policies, and loads each issuer's keys
    /// once (file keys must load; URL/discovery keys that fail now are retried in the background
    /// and the service is not ready until they load).
    ///
    /// # Errors
    /// [`ConfigErrors`] with every policy and key problem.
    pub async fn build(
        config: Config,
        file: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigErrors> {
        let mut problems: Vec<ConfigProblem> = Vec::new();
        let limits = LimitTable::from_models(
            "models",
            config
                .models
                .iter()
                .map(|(name, m)| (name.as_str(), m.rate_limit.as_ref())),
        )
        .unwrap_or_else(|mut ps| {
            problems.append(&mut ps);
            LimitTable::default()
        });
        let policy =
            match PolicyEngine::load(&config.policy.schema, &config.policy.files, &config.models) {
                Ok(p) => Some(p),
                Err(mut e) => {
                    problems.append(&mut e);
                    None
                }
            };
        let shadow = load_shadow(&config, &metrics);
        let issuers = load_issuers(&config, &metrics, &mut problems).await;
        let Some(policy) = policy.filter(|_| problems.is_empty()) else {
            return Err(ConfigErrors {
                file: file.to_owned(),
                problems,
            });
        };
        let refreshers = issuers
            .iter()
            .map(|i| AbortOnDrop(i.jwks.spawn_refresher(i.config.refresh_interval)))
            .collect();
        let authenticator = Authenticator {
            jwt: JwtVerifier::new(
                issuers,
                config.authn.max_token_bytes,
                config.authn.token_cache_entries,
                Arc::clone(&metrics),
            ),
            api_keys: ApiKeys::new(&config.authn.api_keys),
            mtls: MtlsMap::new(&config.authn.mtls),
        };
        Ok(Runtime {
            rules: RequestRules {
                public_paths: config.request.public_paths.clone(),
                max_reason_bytes: config.request.max_reason_bytes,
                max_header_bytes: config.request.max_header_bytes,
            },
            model_names: config.models.keys().cloned().collect(),
            limits,
            authenticator,
            policy,
            shadow,
            config,
            _refreshers: refreshers,
        })
    }

    /// Loads and builds from a file.
    ///
    /// # Errors
    /// [`ConfigErrors`] with every problem found.
    pub async fn load(file: &Path, metrics: Arc<Metrics>) -> Result<Self, ConfigErrors> {
        let config = Config::load(file)?;
        Self::build(config, file, metrics).await
    }

    /// Ready to decide: config and policies are loaded by construction; keys must be too.
    pub fn ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why this configuration is not ready to decide (signing keys missing); the part of the
    /// rule in `crate::readiness` that belongs to the configuration.
    pub fn not_ready_reason(&self) -> Option<String> {
        let missing: Vec<&str> = self
            .authenticator
            .jwt
            .issuers()
            .filter(|i| !i.jwks.is_loaded())
            .map(|i| i.config.issuer.as_str())
            .collect();
        (!missing.is_empty())
            .then(|| format!("signing keys not loaded for: {}", missing.join(", ")))
    }

    /// The metric label for a model name: configured names as is, anything else `unknown`.
    pub fn model_label(&self, model: Option<&str>) -> String {
        match model {
            None => "none".to_owned(),
            Some(m) if self.model_names.contains(m) => m.to_owned(),
            Some(_) => "unknown".to_owned(),
        }
    }
}

/// The `[policy] shadow` engine: same schema and models as the active policies. A shadow that
/// fails to load is logged and counted, and the runtime goes on without one: a candidate never
/// affects live decisions, not even by failing.
fn load_shadow(config: &Config, metrics: &Metrics) -> Option<PolicyEngine> {
    let path = config.policy.shadow.as_ref()?;
    match PolicyEngine::load(
        &config.policy.schema,
        std::slice::from_ref(path),
        &config.models,
    ) {
        Ok(engine) => {
            metrics.shadow_loaded(true);
            tracing::info!(policy.shadow = %path.display(), "shadow policy loaded");
            Some(engine)
        }
        Err(problems) => {
            metrics.shadow_loaded(false);
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            tracing::error!(
                policy.shadow = %path.display(),
                error = %problems.join("; "),
                "shadow policy rejected; running without a shadow"
            );
            None
        }
    }
}

/// Reloads `file` into `shared`; on failure the running runtime stays. Counted in metrics.
///
/// # Errors
/// The problems of the rejected configuration.
pub async fn reload(
    file: &Path,
    shared: &SharedRuntime,
    metrics: &Arc<Metrics>,
) -> Result<(), ConfigErrors> {
    match Runtime::load(file, Arc::clone(metrics)).await {
        Ok(rt) => {
            shared.store(Arc::new(rt));
            metrics.config_reloaded(true);
            tracing::info!(config = %file.display(), "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            metrics.config_reloaded(false);
            tracing::error!(config = %file.display(), error = %e, "configuration rejected; keeping the running one");
            Err(e)
        }
    }
}

type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(file: &Path, rt: &Runtime) -> Fingerprint {
    let mut files = vec![file.to_owned()];
    files.extend(rt.config.watched_files());
    files.extend(
        rt.config
            .authn
            .issuers
            .iter()
            .filter_map(|i| i.jwks_file.clone()),
    );
    files
        .into_iter()
        .map(|f| {
            let stat = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (f, stat)
        })
        .collect()
}

/// Watches for reload triggers until `shutdown` completes: SIGHUP, and (when `poll` is non-zero)
/// a change of any watched file's modification time or size.
pub async fn watch(
    file: PathBuf,
    shared: SharedRuntime,
    metrics: Arc<Metrics>,
    poll: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; file polling only");
            None
        }
    };
    watch_with(file, shared, metrics, poll, hup, shutdown).await;
}

/// [`watch`] without SIGHUP, for a pipeline inside another program whose signals are not its own
/// (the Envoy dynamic module): reloads on a change of any watched file, every `poll`.
pub async fn watch_files(
    file: PathBuf,
    shared: SharedRuntime,
    metrics: Arc<Metrics>,
    poll: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    watch_with(file, shared, metrics, poll, None, shutdown).await;
}

async fn watch_with(
    file: PathBuf,
    shared: SharedRuntime,
    metrics: Arc<Metrics>,
    poll: Duration,
    mut hup: Option<tokio::signal::unix::Signal>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut seen = fingerprint(&file, &shared.load());
    let poll_every = if poll.is_zero() {
        Duration::from_secs(3600)
    } else {
        poll
    };
    tokio::pin!(shutdown);
    loop {
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            _ = hup_recv => {
                tracing::info!("SIGHUP: reloading configuration");
                let _ = reload(&file, &shared, &metrics).await;
            }
            () = tokio::time::sleep(poll_every), if !poll.is_zero() => {
                let now = fingerprint(&file, &shared.load());
                if now != seen {
                    let _ = reload(&file, &shared, &metrics).await;
                }
            }
        }
        seen = fingerprint(&file, &shared.load());
    }
}

/// Each configured issuer with its key set, loaded once: a key file must load (else a problem);
/// a URL or discovery issuer whose keys fail now is kept and retried in the background.
async fn load_issuers(
    config: &Config,
    metrics: &Arc<Metrics>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<Issuer> {
    let mut issuers = Vec::new();
    for (i, ic) in config.authn.issuers.iter().enumerate() {
        let at = format!("authn.issuers[{i}]");
        let jwks = match Jwks::new(ic, Arc::clone(metrics)) {
            Ok(j) => Arc::new(j),
            Err(e) => {
                problems.push(ConfigProblem::new(at, e.to_string()));
                continue;
            }
        };
        if let Err(e) = jwks.refresh().await {
            if ic.jwks_file.is_some() {
                problems.push(ConfigProblem::new(format!("{at}.jwks_file"), e.to_string()));
            } else {
                tracing::warn!(issuer = %ic.issuer, error = %e, "JWKS not loaded yet; retrying in the background");
            }
        }
        issuers.push(Issuer::new(ic.clone(), jwks));
    }
    issuers
}
