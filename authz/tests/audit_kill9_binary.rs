//! `kill -9` of the real `authz serve` in the middle of a load of checks: afterwards every check
//! that was answered OK has its audit record on disk, and `authz audit verify` passes (a torn
//! final line from the crash is reported as such, never as tampering).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;

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

/// Rewrites the dev config's ports to free ones and appends `extra`.
fn with_ports(cfg: &Path, extra: &str) -> u16 {
    let (grpc, admin) = (free_port(), free_port());
    let text = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("127.0.0.1:9001", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:9002", &format!("127.0.0.1:{admin}"));
    std::fs::write(cfg, text + extra).unwrap();
    grpc
}

/// Starts `authz serve` and connects to it.
async fn serve(cfg: &Path, grpc: u16) -> (Child, AuthorizationClient<Channel>) {
    let child = authz()
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{grpc}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match AuthorizationClient::connect(url.clone()).await {
            Ok(c) => return (child, c),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("authz never listened: {e}"),
        }
    }
}

/// Eight clients check as fast as they can until `oks` were answered OK; then `authz` is
/// killed with SIGKILL (no drain, no flush). Returns every OK answer's decision id.
async fn load_then_kill_9(
    mut child: Child,
    client: AuthorizationClient<Channel>,
    oks: usize,
) -> Vec<String> {
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
    while answered.lock().unwrap().len() < oks {
        assert!(
            Instant::now() < wait,
            "the load never reached {oks} answers"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL: no drain, no flush
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    answered.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record_of_an_answered_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path());
    let grpc = with_ports(&cfg, "");
    let (child, client) = serve(&cfg, grpc).await;
    let answered = load_then_kill_9(child, client, OKS_BEFORE_KILL).await;

    let active = dir.path().join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&active).unwrap();
    let on_disk: HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["decision_id"].as_str().map(str::to_owned))
        .collect();
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

/// The lines of the audit files under `dir`, parsed.
fn chain_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    files.sort();
    // The active file (no number) holds the newest lines.
    files.rotate_left(1);
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A dev config in a temporary directory, and a witness file path in its own directory.
fn with_witness() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = serve_config(dir.path());
    let witness_dir = dir.path().join("witness");
    std::fs::create_dir(&witness_dir).unwrap();
    (dir, cfg, witness_dir.join("checkpoints.jsonl"))
}

/// `[audit.checkpoint]` with the dev key, `witness` and a checkpoint every `every` (or a
/// million records).
fn checkpoint_toml(dir: &Path, witness: &Path, every: &str) -> String {
    format!(
        "\n[audit.checkpoint]\nsigning_key = {:?}\nwitness_file = {witness:?}\nevery_records = 1000000\nevery = {every:?}\n",
        dir.join("audit-checkpoint-key.pem"),
    )
}

/// `authz audit verify` of `dir`'s audit directory against `witness` with the dev public key,
/// which must pass; its output.
fn verify_with_witness(dir: &Path, witness: &Path) -> String {
    let verify = authz()
        .args(["audit", "verify"])
        .arg(dir.join("audit"))
        .arg("--checkpoints")
        .arg(witness)
        .arg("--public-key")
        .arg(dir.join("audit-checkpoint-key.pub.pem"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert_eq!(verify.status.code(), Some(0), "{report}");
    report
}

/// kill -9 after records were answered and before any checkpoint covered them: the restarted
/// replica signs a checkpoint over the resumed chain, the witness gets it, and `verify` with the
/// witness finds every record attested and nothing missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_records_and_their_checkpoint_is_attested_after_restart() {
    let (dir, cfg, witness) = with_witness();
    let checkpoint = |every: &str| checkpoint_toml(dir.path(), &witness, every);
    let original = std::fs::read_to_string(&cfg).unwrap();
    // First run: no checkpoint comes due (an hour, a million records), so the kill lands
    // between the records and their checkpoint.
    let grpc = with_ports(&cfg, &checkpoint("1h"));
    let (child, client) = serve(&cfg, grpc).await;
    let answered = load_then_kill_9(child, client, 200).await;
    let lines = chain_lines(&dir.path().join("audit"));
    assert!(lines.iter().all(|l| l["kind"] != "checkpoint"));
    assert!(lines.len() > answered.len());
    assert!(!witness.exists() || std::fs::read_to_string(&witness).unwrap().is_empty());

    // Second run: a checkpoint every 200 ms. The first covers the records of the killed run.
    std::fs::write(&cfg, &original).unwrap();
    let grpc = with_ports(&cfg, &checkpoint("200ms"));
    let (mut child, _client) = serve(&cfg, grpc).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&witness).is_ok_and(|w| !w.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint reached the witness"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let report = verify_with_witness(dir.path(), &witness);
    assert!(report.contains("witnessed through seq"), "{report}");
    assert!(
        report.contains("0 decision record(s) after the last one"),
        "{report}"
    );
    let lines = chain_lines(&dir.path().join("audit"));
    let first_checkpoint = lines
        .iter()
        .position(|l| l["kind"] == "checkpoint")
        .unwrap();
    let killed_run_ids: HashSet<&str> = lines[..first_checkpoint]
        .iter()
        .filter_map(|l| l["decision_id"].as_str())
        .collect();
    assert!(
        answered
            .iter()
            .all(|id| killed_run_ids.contains(id.as_str()))
    );
}

/// SIGTERM ends `authz serve` cleanly: the writer writes the closing checkpoint over the last
/// record and the witness file has it before the process exits, so the whole chain is attested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_a_witnessed_checkpoint_over_the_last_record() {
    let (dir, cfg, witness) = with_witness();
    // No checkpoint comes due while serving (an hour, a million records): only the closing one.
    let grpc = with_ports(&cfg, &checkpoint_toml(dir.path(), &witness, "1h"));
    let (mut child, mut client) = serve(&cfg, grpc).await;
    let mut answered = Vec::new();
    for _ in 0..20 {
        let request = req(BE).api_key(LOAD_TESTER_KEY).build();
        let outcome = Outcome::from(client.check(request).await.unwrap().into_inner());
        assert_eq!(outcome.status, 200, "{:?}", outcome.body);
        answered.push(outcome.headers["x-authz-decision-id"].clone());
    }
    assert!(!witness.exists() || std::fs::read_to_string(&witness).unwrap().is_empty());
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "authz did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");

    // The chain ends with a checkpoint right after the last decision record, and the witness
    // file's last line is that checkpoint.
    let lines = chain_lines(&dir.path().join("audit"));
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "checkpoint", "{last}");
    let last_decision = &lines[lines.len() - 2];
    assert_eq!(
        last_decision["decision_id"].as_str(),
        answered.last().map(String::as_str)
    );
    assert_eq!(last["prev_hash"], last_decision["hash"]);
    let witnessed: Vec<serde_json::Value> = std::fs::read_to_string(&witness)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(witnessed.last(), Some(last));

    let report = verify_with_witness(dir.path(), &witness);
    assert!(
        report.contains("0 decision record(s) after the last one"),
        "{report}"
    );
}
