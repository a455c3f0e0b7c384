//! Shared harness: a generated test model repository and a real server on loopback ports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use modelserver::{Config, Listeners, ModelServer, ServeError, Stopped};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The test model repository, generated once per test process by `fixtures/gen_test_models.py`.
pub fn repository() -> &'static Path {
    static REPO: OnceLock<PathBuf> = OnceLock::new();
    REPO.get_or_init(|| {
        assert!(
            std::env::var_os("ORT_DYLIB_PATH").is_some(),
            "ORT_DYLIB_PATH is not set: run scripts/bootstrap.sh and `source .tools/env`"
        );
        let dir = tempfile::Builder::new()
            .prefix("modelserver-test-models")
            .tempdir()
            .expect("tempdir")
            .keep();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_test_models.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running python3 {}: {e} (run scripts/bootstrap.sh and `source .tools/env`)",
                    script.display()
                )
            });
        assert!(
            out.status.success(),
            "{} failed (needs the `onnx` Python package from scripts/bootstrap.sh): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A server running on 127.0.0.1 ephemeral ports through [`modelserver::serve`], the
/// production start and stop path; stops when dropped.
pub struct Running {
    /// `http://127.0.0.1:PORT` of the REST server.
    pub http: String,
    /// `http://127.0.0.1:PORT` of the gRPC server.
    pub grpc: String,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics: String,
    /// The core.
    pub server: Arc<ModelServer>,
    /// Sends the shutdown [`modelserver::serve`] waits for.
    stop: watch::Sender<bool>,
    /// The running [`modelserver::serve`].
    task: Option<JoinHandle<Result<Stopped, ServeError>>>,
}

impl Running {
    /// Starts the drain without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Starts the drain and waits until [`modelserver::serve`] returns.
    pub async fn shutdown(mut self) -> Result<Stopped, ServeError> {
        self.begin_shutdown();
        let task = self.task.take().expect("serve runs until shutdown");
        task.await.expect("serve does not panic")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Starts all three servers over the test repository.
pub async fn start(config: Config) -> Running {
    start_with(repository(), config).await
}

/// Starts all three servers over `repo`.
pub async fn start_with(repo: &Path, config: Config) -> Running {
    start_traced(repo, config, telemetry::Tracer::disabled()).await
}

/// Starts all three servers over `repo`, recording spans with `tracer`.
pub async fn start_traced(repo: &Path, config: Config, tracer: telemetry::Tracer) -> Running {
    let server = ModelServer::start_traced(repo, config, tracer)
        .await
        .expect("open repository");
    let bind = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
    };
    let listeners = Listeners {
        http: bind().await,
        grpc: bind().await,
        metrics: bind().await,
    };
    let url = |l: &tokio::net::TcpListener| format!("http://{}", l.local_addr().expect("addr"));
    let (http, grpc, metrics) = (
        url(&listeners.http),
        url(&listeners.grpc),
        format!("{}/metrics", url(&listeners.metrics)),
    );
    let (stop, mut rx) = watch::channel(false);
    let stopped = async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let task = tokio::spawn(modelserver::serve(server.clone(), listeners, stopped));
    Running {
        http,
        grpc,
        metrics,
        server,
        stop,
        task: Some(task),
    }
}

/// The text a metrics endpoint (`Running::metrics`) serves.
pub async fn metrics(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Parses `Config` from TOML text. These tests talk to the server directly, as nothing behind
/// the gateway may: without an `[authorization]` table the gateway check is off.
pub fn config(toml: &str) -> Config {
    let mut config = Config::from_toml(Path::new("test.toml"), toml).expect("test config");
    if !toml.contains("[authorization]") {
        config.authorization.mode = modelserver::access::AuthorizationMode::None;
    }
    config
}

/// The default configuration for direct access (the gateway check off).
pub fn direct() -> Config {
    config("")
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// f32 values from little-endian bytes.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// BYTES elements in the 4-byte length-prefixed layout.
pub fn length_prefixed(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}
