//! The server's own configuration (`modelserver.toml`): everything except ports, addresses and the
//! model repository, which are command-line flags named like Triton's.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// 64 MiB: room for a batch of large images, and the size gRPC clients of Triton are used to.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// gRPC messages get 64 MiB plus framing headroom so a body that REST accepts also fits over gRPC.
pub const DEFAULT_GRPC_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024 + 1024 * 1024;
/// Requests allowed to wait per model when the model config sets no queue size: enough to absorb a
/// burst, small enough that a flood is answered 503 quickly instead of growing memory.
pub const DEFAULT_MAX_QUEUE_SIZE: u32 = 128;
/// Triton's default for models whose batch dimension is inferred from the ONNX file.
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 4;
/// ONNX Runtime's intra-op threads busy-wait (spin) for the next piece of work by default. On a
/// server whose HTTP/gRPC front end shares the cores, that spinning takes the CPU the front end
/// needs (a fifth of all CPU samples in the serving benchmark's gRPC run on 2 cores were ORT's spin
/// loop), so it is off unless configured; turn it on where inference has cores to itself.
pub const DEFAULT_INTRA_OP_SPINNING: bool = false;
/// ONNX Runtime's own default, and what Triton's ONNX Runtime backend uses unless a model says
/// otherwise: every graph rewrite, the fastest steady state for the price of a slower load.
pub const DEFAULT_GRAPH_OPTIMIZATION: GraphOptimization = GraphOptimization::All;

/// How long readiness reports "not serving" before the listeners stop accepting (see
/// [`ShutdownConfig::readiness_grace_ms`]). 500 ms: a client that watches `grpc.health.v1` (gRPC's
/// client-side health checking) or a balancer already told of the shutdown hears the flip within
/// a round trip, and a stop stays quick under `docker compose stop` (10 s before SIGKILL) and in
/// tests. A balancer that polls needs its probe interval times its unhealthy threshold: set it
/// for that balancer (the shipped local Envoy: 1 s x 2, so 2 s and more; compose and Kubernetes,
/// whose Envoy checks every 5 s, ship 12 s in their configs).
pub const DEFAULT_READINESS_GRACE: Duration = Duration::from_millis(500);
/// How long in-flight requests may take to finish once the listeners stop accepting; after it,
/// they are abandoned and the process exits. 30 s: a full queue of a slow model drains well
/// within it, and grace plus deadline fit the Kubernetes manifest's 60 s
/// `terminationGracePeriodSeconds`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Top-level configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// ONNX Runtime and execution settings.
    pub runtime: RuntimeConfig,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Whether model calls must carry the gateway's decision.
    pub authorization: AuthorizationConfig,
    /// How the server stops: readiness grace and drain deadline.
    pub shutdown: ShutdownConfig,
}

/// `[shutdown]`: the drain that [`crate::serve`] runs when its shutdown future completes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Milliseconds between readiness turning false (REST `/v2/health/ready` 503, gRPC health
    /// `NOT_SERVING`) and the listeners closing, while requests are still served, so load
    /// balancers stop routing here before connections are refused (see
    /// [`DEFAULT_READINESS_GRACE`]).
    pub readiness_grace_ms: u64,
    /// Milliseconds in-flight requests may take once the listeners close (see
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout_ms: u64,
}

impl ShutdownConfig {
    /// [`ShutdownConfig::readiness_grace_ms`] as a duration.
    pub fn readiness_grace(&self) -> Duration {
        Duration::from_millis(self.readiness_grace_ms)
    }

    /// [`ShutdownConfig::drain_timeout_ms`] as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        // Both constants are far below u64::MAX milliseconds.
        ShutdownConfig {
            readiness_grace_ms: DEFAULT_READINESS_GRACE.as_millis() as u64,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT.as_millis() as u64,
        }
    }
}

/// `[authorization]`: how this server treats the decision authz states in `x-authz-*` headers
/// (see [`crate::access`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// `gateway` (default): every model-scoped call must carry authz's decision for exactly that
    /// model, version and action, and calls no single-model decision covers are refused. `none`:
    /// no check, for a server no untrusted client can reach (standalone use, tests).
    pub mode: crate::access::AuthorizationMode,
}

/// `[runtime]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Path of `libonnxruntime.so`; defaults to `$ORT_DYLIB_PATH`.
    pub ort_library: Option<PathBuf>,
    /// CPU cores the server may use for ONNX Runtime intra-op threads, shared by each model's
    /// instances; defaults to the cores available to the process.
    pub cpu_cores: Option<usize>,
    /// Fixed intra-op threads per session, overriding the core-budget split.
    pub intra_op_threads: Option<usize>,
    /// Whether a GPU instance whose CUDA registration fails may run on CPU instead. Default false:
    /// the model fails to load. When true the fallback is logged, reported in the model config
    /// parameters and in metrics.
    pub allow_cpu_fallback: bool,
    /// Models allowed to fall back to CPU even when `allow_cpu_fallback` is false.
    pub cpu_fallback_models: Vec<String>,
    /// Where models whose config has no `instance_group` run: `cpu` (default) or `gpu`. A GPU
    /// replica sets `gpu`; CUDA failures then follow `allow_cpu_fallback` like any GPU instance.
    pub default_instance_kind: DefaultInstanceKind,
    /// CUDA device for `default_instance_kind = "gpu"` and for `instance_kind = "gpu"` groups
    /// that name no device.
    pub default_gpu: i32,
    /// Where every model runs, whatever its `config.pbtxt` pins: `config` (default) keeps each
    /// model's `instance_group`; `gpu` runs every instance group on CUDA (a GPU deployment over
    /// a repository whose configs say `KIND_CPU`, as the demo's do); `cpu` runs every one on CPU.
    /// The reported model config shows the kind actually used.
    pub instance_kind: InstanceKindPolicy,
    /// When batching models wait for a fuller batch: `busy` (default; only while every instance
    /// is busy) or `always` (Triton's behaviour). A model's `batch_wait` parameter overrides it.
    pub batch_wait: crate::batcher::BatchWait,
    /// `max_batch_size` given to models without config whose inputs and outputs all have a dynamic
    /// first dimension.
    pub default_max_batch_size: u32,
    /// ONNX Runtime graph optimization level of models whose `config.pbtxt` sets no
    /// `optimization { graph { level } }` (or level 0).
    pub graph_optimization_level: GraphOptimization,
    /// Whether ONNX Runtime's intra-op threads spin while waiting for work (see
    /// [`DEFAULT_INTRA_OP_SPINNING`]).
    pub intra_op_spinning: bool,
    /// NVML, for the `nv_gpu_*` metrics: the driver's `libnvidia-ml.so.1` unless set. Absent is
    /// normal on CPU machines (no GPU series).
    pub nvml_library: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            ort_library: None,
            cpu_cores: None,
            intra_op_threads: None,
            allow_cpu_fallback: false,
            cpu_fallback_models: Vec::new(),
            default_instance_kind: DefaultInstanceKind::Cpu,
            default_gpu: 0,
            instance_kind: InstanceKindPolicy::Config,
            batch_wait: crate::batcher::BatchWait::Busy,
            default_max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            graph_optimization_level: DEFAULT_GRAPH_OPTIMIZATION,
            nvml_library: None,
            intra_op_spinning: DEFAULT_INTRA_OP_SPINNING,
        }
    }
}

/// Device of models without an `instance_group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultInstanceKind {
    /// CPU.
    Cpu,
    /// CUDA.
    Gpu,
}

/// Whether the deployment overrides the instance kinds of the models' configs
/// (`[runtime] instance_kind`, or `serve --instance-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InstanceKindPolicy {
    /// Each model's `instance_group` as configured.
    Config,
    /// Every instance group on CPU.
    Cpu,
    /// Every instance group on CUDA; a group that names no GPUs uses `default_gpu`.
    Gpu,
}

/// How much ONNX Runtime rewrites a graph when it creates a session (its
/// `GraphOptimizationLevel`): more rewrites load slower and usually run faster. `disable` is for
/// debugging a model whose optimized form misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphOptimization {
    /// No rewrites (`ORT_DISABLE_ALL`).
    Disable,
    /// Constant folding and redundant-node elimination (`ORT_ENABLE_BASIC`).
    Basic,
    /// Plus node fusions (`ORT_ENABLE_EXTENDED`).
    Extended,
    /// Plus memory layout rewrites (`ORT_ENABLE_LAYOUT`).
    Layout,
    /// Everything (`ORT_ENABLE_ALL`), the default.
    All,
}

impl GraphOptimization {
    /// The name used in the TOML file and reported in the model configuration parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphOptimization::Disable => "disable",
            GraphOptimization::Basic => "basic",
            GraphOptimization::Extended => "extended",
            GraphOptimization::Layout => "layout",
            GraphOptimization::All => "all",
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest HTTP request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest gRPC message, both directions.
    pub grpc_max_message_bytes: usize,
    /// Queue size per model unless its config sets `default_queue_policy.max_queue_size`.
    pub max_queue_size: u32,
    /// When true, `/v2/health/ready` also requires every model to be ready (Triton's
    /// `--strict-readiness`); by default one broken model does not take the replica out of rotation.
    pub strict_readiness: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            grpc_max_message_bytes: DEFAULT_GRPC_MAX_MESSAGE_BYTES,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            strict_readiness: false,
        }
    }
}

/// A configuration that failed validation; lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// Not valid TOML or an unknown key.
    #[error("parsing {path}: {source}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// TOML error.
        source: Box<toml::de::Error>,
    },
    /// Values that parse but make no sense.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Parses TOML text and validates it.
    ///
    /// # Errors
    /// [`ConfigFileError::Parse`] or [`ConfigFileError::Invalid`] listing every problem.
    pub fn from_toml(path: &std::path::Path, text: &str) -> Result<Self, ConfigFileError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// As [`Config::from_toml`], plus [`ConfigFileError::Read`].
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Checks values, reporting every problem with its field path.
    ///
    /// # Errors
    /// [`ConfigFileError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let mut problems = Vec::new();
        if self.runtime.cpu_cores == Some(0) {
            problems.push("runtime.cpu_cores must be at least 1".to_string());
        }
        if self.runtime.intra_op_threads == Some(0) {
            problems.push("runtime.intra_op_threads must be at least 1".to_string());
        }
        if self.limits.max_body_bytes < 1024 {
            problems.push("limits.max_body_bytes must be at least 1024".to_string());
        }
        if self.limits.grpc_max_message_bytes < 1024 {
            problems.push("limits.grpc_max_message_bytes must be at least 1024".to_string());
        }
        if self.limits.max_queue_size == 0 {
            problems.push("limits.max_queue_size must be at least 1".to_string());
        }
        if self.shutdown.drain_timeout_ms == 0 {
            problems.push("shutdown.drain_timeout_ms must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigFileError::Invalid(problems))
        }
    }

    /// Whether `model` may fall back from GPU to CPU.
    pub fn cpu_fallback_allowed(&self, model: &str) -> bool {
        self.runtime.allow_cpu_fallback
            || self.runtime.cpu_fallback_models.iter().any(|m| m == model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c = Config::from_toml("x".as_ref(), "").unwrap();
        assert_eq!(c.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(c.limits.grpc_max_message_bytes >= 64 * 1024 * 1024);
        let e = Config::from_toml("x".as_ref(), "[runtime]\nthreads = 2\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `threads`"), "{e}");
        assert_eq!(c.runtime.graph_optimization_level, GraphOptimization::All);
        assert!(!c.runtime.intra_op_spinning);
        assert_eq!(c.shutdown.readiness_grace(), DEFAULT_READINESS_GRACE);
        assert_eq!(c.shutdown.drain_timeout(), DEFAULT_DRAIN_TIMEOUT);
        let c = Config::from_toml(
            "x".as_ref(),
            "[runtime]\ngraph_optimization_level = \"basic\"\n",
        )
        .unwrap();
        assert_eq!(c.runtime.graph_optimization_level, GraphOptimization::Basic);
        let e = Config::from_toml(
            "x".as_ref(),
            "[runtime]\ngraph_optimization_level = \"max\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `max`"), "{e}");
        let e = Config::from_toml(
            "x".as_ref(),
            "[runtime]\ncpu_cores = 0\n[limits]\nmax_queue_size = 0\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: runtime.cpu_cores must be at least 1; limits.max_queue_size must be at least 1"
        );
    }

    /// The configurations compose and Kubernetes ship load as the server reads them (a typo there
    /// would stop every replica at start), with the readiness grace they set.
    #[test]
    fn shipped_deployment_configs_load() {
        for (path, text) in [
            (
                "deploy/compose/modelserver.toml",
                include_str!("../../deploy/compose/modelserver.toml"),
            ),
            (
                "k8s/base/modelserver/config/modelserver.toml",
                include_str!("../../k8s/base/modelserver/config/modelserver.toml"),
            ),
        ] {
            let c = Config::from_toml(path.as_ref(), text).unwrap();
            assert!(
                c.shutdown.readiness_grace() >= Duration::from_secs(10),
                "{path}"
            );
        }
    }
}
