//! Shared harness: a generated test model repository and a real server on loopback ports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use modelserver::{Config, ModelServer};
use tokio::sync::watch;

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

/// A server running on 127.0.0.1 ephemeral ports; stops when dropped.
pub struct Running {
    /// `http://127.0.0.1:PORT` of the REST server.
    pub http: String,
    /// `http://127.0.0.1:PORT` of the gRPC server.
    pub grpc: String,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics: String,
    /// The core.
    pub server: Arc<ModelServer>,
    stop: watch::Sender<bool>,
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
    let (h, g, m) = (bind().await, bind().await, bind().await);
    let url = |l: &tokio::net::TcpListener| format!("http://{}", l.local_addr().expect("addr"));
    let (http, grpc, metrics) = (url(&h), url(&g), format!("{}/metrics", url(&m)));
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    tokio::spawn(modelserver::http::serve(
        h,
        server.clone(),
        stopped(rx.clone()),
    ));
    tokio::spawn(modelserver::grpc::serve(
        g,
        server.clone(),
        stopped(rx.clone()),
    ));
    tokio::spawn(modelserver::http::serve_metrics(
        m,
        server.clone(),
        stopped(rx),
    ));
    Running {
        http,
        grpc,
        metrics,
        server,
        stop,
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
