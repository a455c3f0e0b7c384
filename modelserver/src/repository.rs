//! The model repository in Triton's layout: `<root>/<model>/<version>/model.onnx` with an optional
//! `<root>/<model>/config.pbtxt`.
//!
//! At start-up every model directory is loaded; a model that fails is kept in the index as
//! `UNAVAILABLE` with its reason (logged, and answered to metadata/infer requests) while the others
//! serve. Models are loaded and unloaded explicitly through [`ModelRepository::load`] and
//! [`ModelRepository::unload`]; loads are serialized and run ONNX Runtime on the blocking pool.
//! A failed reload of a model that is serving leaves the serving versions in place.
//!
//! This file owns the index and its states; `load` builds one model from its directory.

pub mod config;
mod load;
pub mod pbtxt;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::{Value as Json, json};

use self::config::{ConfigError, ModelConfig};
use crate::batcher::Scheduler;
use crate::config::Config;
use crate::error::ServerError;
use crate::runtime::{Provider, RuntimeError, SessionPool};
use crate::stats::ModelStats;
use crate::tensor::DataType;

/// An input or output as clients see it in model metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Datatype.
    pub datatype: DataType,
    /// Full shape including the batch dimension; -1 is variable.
    pub shape: Vec<i64>,
}

/// A loaded, servable model version.
pub struct LoadedModel {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// The configuration, completed from the ONNX model.
    pub config: ModelConfig,
    /// Inputs in model order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in model order.
    pub outputs: Vec<TensorSpec>,
    /// Sessions.
    pub pool: Arc<SessionPool>,
    /// Execution provider in use.
    pub provider: Provider,
    /// ONNX Runtime graph optimization level the sessions were built with.
    pub graph_optimization: crate::config::GraphOptimization,
    /// Statistics.
    pub stats: ModelStats,
    /// The request scheduler: the bounded queue, deadlines and dynamic batching.
    pub scheduler: Scheduler,
}

impl LoadedModel {
    /// Version as the protocol's string.
    pub fn version_string(&self) -> String {
        self.version.to_string()
    }

    /// Parameters describing how the model runs, added to its configuration.
    pub fn runtime_parameters(&self) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        p.insert(
            "execution_provider".to_string(),
            self.provider.label().to_string(),
        );
        if let Provider::CpuFallback { reason } = &self.provider {
            p.insert("gpu_fallback_reason".to_string(), reason.clone());
        }
        p.insert("instance_count".to_string(), self.pool.len().to_string());
        p.insert(
            "graph_optimization_level".to_string(),
            self.graph_optimization.as_str().to_string(),
        );
        if let Some(b) = self.scheduler.batch_policy() {
            p.insert(
                crate::batcher::BATCH_WAIT_PARAMETER.to_string(),
                b.wait.as_str().to_string(),
            );
        }
        p
    }
}

/// Where a model stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Serving its versions.
    Ready,
    /// The last load failed; the reason.
    Unavailable(String),
    /// Unloaded by request.
    Unloaded,
}

struct ModelEntry {
    state: ModelState,
    versions: BTreeMap<u64, Arc<LoadedModel>>,
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, when one is loaded.
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, or `None` for a model never loaded.
    pub state: Option<&'static str>,
    /// Why it is not ready.
    pub reason: Option<String>,
}

impl IndexEntry {
    /// Triton's JSON form.
    pub fn to_json(&self) -> Json {
        let mut j = json!({"name": self.name});
        if let Some(v) = &self.version {
            j["version"] = json!(v);
        }
        if let Some(s) = self.state {
            j["state"] = json!(s);
        }
        if let Some(r) = &self.reason {
            j["reason"] = json!(r);
        }
        j
    }
}

/// Why a model failed to load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The model directory does not exist.
    #[error("no model directory {0}")]
    NoDirectory(PathBuf),
    /// Reading the repository failed.
    #[error("reading {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// Bad config.pbtxt.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No version directory matched the policy.
    #[error("no version directory with {file} matches the version policy in {dir}")]
    NoVersions {
        /// Model directory.
        dir: PathBuf,
        /// Model file name.
        file: String,
    },
    /// ONNX Runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The configuration disagrees with the ONNX model.
    #[error("version {version}: {message}")]
    Mismatch {
        /// Version.
        version: u64,
        /// What disagrees.
        message: String,
    },
}

/// The set of models and their states.
pub struct ModelRepository {
    root: PathBuf,
    config: Arc<Config>,
    /// Model entries by name; readers (every request) never wait on a load.
    models: RwLock<BTreeMap<String, ModelEntry>>,
    /// Serializes loads and unloads so two loads of one model cannot interleave.
    load_lock: tokio::sync::Mutex<()>,
    /// Load failures per model since start, for metrics.
    load_failures: RwLock<BTreeMap<String, u64>>,
}

/// Checks that `name` is a plain directory name (no path separators or dot segments).
///
/// # Errors
/// [`ServerError::InvalidInput`].
pub fn check_model_name(name: &str) -> Result<(), ServerError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ServerError::InvalidInput(format!(
            "invalid model name '{name}'"
        )))
    }
}

impl ModelRepository {
    /// Opens `root` and loads every model in it. Models that fail are recorded, not fatal.
    ///
    /// # Errors
    /// [`LoadError::Io`] when `root` cannot be listed.
    pub async fn open(root: &Path, config: Arc<Config>) -> Result<Arc<Self>, LoadError> {
        let repo = Arc::new(ModelRepository {
            root: root.to_path_buf(),
            config,
            models: RwLock::new(BTreeMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            load_failures: RwLock::new(BTreeMap::new()),
        });
        for name in repo.model_directories()? {
            if let Err(e) = repo.load(&name).await {
                tracing::error!(model.name = %name, error = %e, "model failed to load");
            }
        }
        Ok(repo)
    }

    /// Names of model directories under the root, sorted.
    fn model_directories(&self) -> Result<Vec<String>, LoadError> {
        let io = |source| LoadError::Io {
            path: self.root.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_dir()
                && let Some(name) = entry.file_name().to_str()
                && check_model_name(name).is_ok()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Loads (or reloads) `name` from the repository.
    ///
    /// # Errors
    /// [`ServerError::InvalidInput`] for a bad name, [`ServerError::LoadFailed`] with the reason.
    pub async fn load(self: &Arc<Self>, name: &str) -> Result<(), ServerError> {
        check_model_name(name)?;
        let _guard = self.load_lock.lock().await;
        let repo = Arc::clone(self);
        let owned = name.to_string();
        let result = tokio::task::spawn_blocking(move || repo.load_blocking(&owned))
            .await
            .map_err(|e| ServerError::Internal(format!("load task failed: {e}")))?;
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(versions) => {
                for v in versions.values() {
                    tracing::info!(
                        model.name = %name, model.version = v.version, provider = v.provider.label(),
                        instances = v.pool.len(), "model ready"
                    );
                }
                models.insert(
                    name.to_string(),
                    ModelEntry {
                        state: ModelState::Ready,
                        versions,
                    },
                );
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(model.name = %name, error = %reason, "model load failed");
                *self
                    .load_failures
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(name.to_string())
                    .or_default() += 1;
                let entry = models.entry(name.to_string()).or_insert(ModelEntry {
                    state: ModelState::Unloaded,
                    versions: BTreeMap::new(),
                });
                if entry.state != ModelState::Ready {
                    entry.state = ModelState::Unavailable(reason.clone());
                    entry.versions.clear();
                }
                Err(ServerError::LoadFailed {
                    model: name.to_string(),
                    reason,
                })
            }
        }
    }

    /// Unloads `name`; in-flight requests finish on the sessions they hold.
    ///
    /// # Errors
    /// [`ServerError::UnknownModel`] when the model was never loaded or tried.
    pub async fn unload(&self, name: &str) -> Result<(), ServerError> {
        let _guard = self.load_lock.lock().await;
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        let entry = models
            .get_mut(name)
            .ok_or_else(|| ServerError::UnknownModel(name.to_string()))?;
        entry.state = ModelState::Unloaded;
        entry.versions.clear();
        tracing::info!(model.name = %name, "model unloaded");
        Ok(())
    }

    /// Finds the version to serve: `version` if given, else the highest loaded.
    ///
    /// # Errors
    /// [`ServerError::UnknownModel`], [`ServerError::UnknownVersion`] or [`ServerError::NotReady`].
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ServerError> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let entry = models
            .get(name)
            .ok_or_else(|| ServerError::UnknownModel(name.to_string()))?;
        let not_ready = |reason: String| ServerError::NotReady {
            model: name.to_string(),
            reason,
        };
        match &entry.state {
            ModelState::Ready => {}
            ModelState::Unavailable(reason) => {
                return Err(not_ready(format!("load failed: {reason}")));
            }
            ModelState::Unloaded => return Err(not_ready("unloaded".into())),
        }
        let unknown_version = |v: &str| ServerError::UnknownVersion {
            model: name.to_string(),
            version: v.to_string(),
        };
        match version.filter(|v| !v.is_empty()) {
            None => entry
                .versions
                .values()
                .next_back()
                .cloned()
                .ok_or_else(|| not_ready("no versions".into())),
            Some(v) => {
                let n: u64 = v.parse().map_err(|_| unknown_version(v))?;
                entry
                    .versions
                    .get(&n)
                    .cloned()
                    .ok_or_else(|| unknown_version(v))
            }
        }
    }

    /// Whether every known model is ready.
    pub fn all_ready(&self) -> bool {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models.values().all(|e| e.state == ModelState::Ready)
    }

    /// Every loaded version of every ready model.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .values()
            .flat_map(|e| e.versions.values().cloned())
            .collect()
    }

    /// All versions of one model (empty if not ready).
    pub fn versions(&self, name: &str) -> Vec<Arc<LoadedModel>> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        models
            .get(name)
            .map(|e| e.versions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Load failures per model since start.
    pub fn load_failures(&self) -> BTreeMap<String, u64> {
        self.load_failures
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every model in the repository directory or known to the server, with its state.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let models = self.models.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = self.model_directories().unwrap_or_default();
        names.extend(models.keys().cloned());
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            match models.get(&name) {
                Some(ModelEntry {
                    state: ModelState::Ready,
                    versions,
                }) => {
                    out.extend(versions.keys().map(|v| IndexEntry {
                        name: name.clone(),
                        version: Some(v.to_string()),
                        state: Some("READY"),
                        reason: None,
                    }));
                }
                _ if ready_only => {}
                Some(ModelEntry {
                    state: ModelState::Unavailable(reason),
                    ..
                }) => out.push(IndexEntry {
                    name,
                    version: None,
                    state: Some("UNAVAILABLE"),
                    reason: Some(reason.clone()),
                }),
                Some(ModelEntry {
                    state: ModelState::Unloaded,
                    ..
                }) => out.push(IndexEntry {
                    name,
                    version: None,
                    state: Some("UNAVAILABLE"),
                    reason: Some("unloaded".into()),
                }),
                None => out.push(IndexEntry {
                    name,
                    version: None,
                    state: None,
                    reason: None,
                }),
            }
        }
        out
    }
}
