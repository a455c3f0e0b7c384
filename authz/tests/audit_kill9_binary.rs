//! `kill -9` of the real `authz serve` in the middle of a load of checks: afterwards every check
//! that was answered OK has its audit record on disk, and `authz audit verify` passes (a torn
//! final line from the crash is reported as such, never as tampering).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

const BE: &str = "/v2/models/benchmark-echo/infer";
/// OK answers to collect before the kill: enough that the kill lands mid-stream.
const OKS_BEFORE_KILL: usize = 300;

fn authz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_authz"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_config(dir: &Path) -> std::path::PathBuf {
    let out = authz()
        .args(["dev-init", "--out"])
        .arg(dir)
        .arg("--template")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/authz.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("authz.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record_of_an_answered_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path());
    let (grpc, admin) = (free_port(), free_port());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:9001", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:9002", &format!("127.0.0.1:{admin}"));
    std::fs::write(&cfg, text).unwrap();
    let mut child = authz()
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let url = format!("http://127.0.0.1:{grpc}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match AuthorizationClient::connect(url.clone()).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("authz never listened: {e}"),
        }
    };

    // Eight clients check as fast as they can; every OK answer's decision id is remembered.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = client.clone();
        let answered = Arc::clone(&answered);
        tasks.push(tokio::spawn(async move {
            loop {
                let request = req(BE).api_key(LOAD_TESTER_KEY).build();
                let Ok(resp) = client.check(request).await else {
                    return; // the server is gone
                };
                let outcome = Outcome::from(resp.into_inner());
                assert_eq!(outcome.status, 200, "{:?}", outcome.body);
                answered
                    .lock()
                    .unwrap()
                    .push(outcome.headers["x-authz-decision-id"].clone());
            }
        }));
    }
    let wait = Instant::now() + Duration::from_secs(60);
    while answered.lock().unwrap().len() < OKS_BEFORE_KILL {
        assert!(
            Instant::now() < wait,
            "the load never reached {OKS_BEFORE_KILL} answers"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL: no drain, no flush
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    let active = dir.path().join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&active).unwrap();
    let on_disk: HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["decision_id"].as_str().map(str::to_owned))
        .collect();
    let answered = answered.lock().unwrap();
    let missing: Vec<_> = answered
        .iter()
        .filter(|id| !on_disk.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered checks have no record, e.g. {:?}",
        missing.len(),
        answered.len(),
        missing.first()
    );

    let verify = authz()
        .args(["audit", "verify"])
        .arg(&active)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert_eq!(verify.status.code(), Some(0), "{report}");
    assert!(!report.contains("TAMPERED"), "{report}");
}
