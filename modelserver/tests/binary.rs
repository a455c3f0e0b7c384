//! The `modelserver` binary as an operator runs it: Triton-style flags, a TOML config, real ports,
//! and a clean drain on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use e2e::{Process, free_port, http_get, wait_for_http};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modelserver"))
}

#[test]
fn serve_with_triton_flags_then_drain_on_sigterm() {
    let repo = common::repository();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("modelserver.toml");
    std::fs::write(
        &config,
        "[runtime]\ncpu_cores = 2\n[limits]\nmax_queue_size = 8\n[authorization]\nmode = \"none\"\n",
    )
    .unwrap();
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let mut cmd = binary();
    cmd.arg("serve")
        .arg("--model-repository")
        .arg(repo)
        .args([
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .args([
            "--metrics-port",
            &metrics.to_string(),
            "--address",
            "127.0.0.1",
        ])
        .arg("--config")
        .arg(&config)
        .env("ORT_DYLIB_PATH", e2e::ort_dylib());
    let mut proc = Process::spawn("modelserver", cmd);
    let http_addr = SocketAddr::from(([127, 0, 0, 1], http));
    wait_for_http(
        http_addr,
        "/v2/health/ready",
        Duration::from_secs(60),
        Some(&mut proc),
    );

    let (status, body) = http_get(http_addr, "/v2/models/add_fp32").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"shape\":[-1,4]"), "{body}");
    let (status, body) = http_get(SocketAddr::from(([127, 0, 0, 1], metrics)), "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("modelserver_model_ready{model=\"add_fp32\"} 1"),
        "{body}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok());

    proc.signal(libc::SIGTERM);
    let code = proc.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "log:\n{}", proc.logs());
    let logs = proc.logs();
    assert!(logs.contains("shutdown requested: draining"), "{logs}");
    assert!(logs.contains("drained"), "{logs}");
    // The failed models were reported in the log with their reasons.
    assert!(
        logs.contains("field 'sequence_batching': not supported"),
        "{logs}"
    );
}

#[test]
fn check_config_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[runtime]\ncpu_cores = 0\nintra_op_threads = 0\n").unwrap();
    let out = binary().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "runtime.cpu_cores must be at least 1; runtime.intra_op_threads must be at least 1"
        ),
        "{stderr}"
    );
    std::fs::write(&path, "[limits]\nmax_body_bytes = 1048576\n").unwrap();
    let out = binary().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn configuration_errors_exit_64_once_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[runtime]\nthreads = 2\n").unwrap();
    let repo = common::repository();
    let runs = [
        binary().arg("check-config").arg(&path).output().unwrap(),
        binary()
            .args(["serve", "--model-repository"])
            .arg(repo)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap(),
    ];
    for out in runs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        // The TOML error with its line and column, said once, without colour codes.
        assert_eq!(
            stderr.matches("unknown field `threads`").count(),
            1,
            "{stderr}"
        );
        assert!(stderr.contains("line 2, column 1"), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "ANSI escape in {stderr:?}");
    }
    let out = binary()
        .args(["serve", "--model-repository"])
        .arg(dir.path().join("no-such-repository"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
}
