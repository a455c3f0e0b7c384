//! Signed checkpoints and their witnesses, with real files and a real redis-server: what a
//! verifier holding the witness detects that the bare chain cannot (truncation after a
//! checkpoint, a whole file rewritten with recomputed hashes, a deleted file, a replayed
//! checkpoint, a wrong key), and that a witness that is down never stops decisions.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use authz::audit::{
    AuditConfig, AuditLog, AuditMetrics, CheckpointConfig, Durability, chain,
    checkpoint::PublicKeys,
    verify::{self, VerifyError},
};
use authz::devkeys::DevKey;
use common::audit::*;
use serde_json::Value;

/// A signing key outside the audit directory, and its public key.
struct Keys {
    private: PathBuf,
    public: PathBuf,
}

fn keys(dir: &Path, name: &str) -> Keys {
    let key = DevKey::generate();
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    std::fs::write(&private, key.to_pem()).unwrap();
    std::fs::write(&public, key.to_public_pem()).unwrap();
    Keys { private, public }
}

/// The audit, witness and key directories of one test.
struct Setup {
    _root: tempfile::TempDir,
    audit: PathBuf,
    witness: PathBuf,
    keys: Keys,
}

fn setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    let audit = root.path().join("audit");
    let other = root.path().join("witness");
    std::fs::create_dir_all(&audit).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let keys = keys(&other, "checkpoint");
    Setup {
        audit,
        witness: other.join("checkpoints.jsonl"),
        keys,
        _root: root,
    }
}

fn config(s: &Setup, every_records: u64, redis: Option<String>) -> AuditConfig {
    AuditConfig {
        path: s.audit.clone(),
        durability: Durability::Write,
        max_file_bytes: 8192,
        retention: 100,
        replica: "authz-0".into(),
        checkpoint: Some(CheckpointConfig {
            signing_key: Some(s.keys.private.clone()),
            every_records,
            every: Duration::from_secs(3600),
            witness_file: Some(s.witness.clone()),
            redis_url: redis,
            ..CheckpointConfig::default()
        }),
        ..AuditConfig::default()
    }
}

async fn write_log(config: &AuditConfig, records: usize) -> AuditMetrics {
    let metrics = AuditMetrics::unregistered();
    let log = AuditLog::start(config, metrics.clone()).unwrap();
    for n in 0..records {
        log.append(event(n)).await.unwrap();
    }
    tokio::task::spawn_blocking(move || log.shutdown())
        .await
        .unwrap();
    metrics
}

/// Every line of `files` with its file and 1-based line number.
fn placed_lines(files: &[PathBuf]) -> Vec<(PathBuf, u64, String)> {
    files
        .iter()
        .flat_map(|f| {
            read_lines(f)
                .into_iter()
                .enumerate()
                .map(move |(n, l)| (f.clone(), n as u64 + 1, l))
        })
        .collect()
}

fn kind(line: &str) -> String {
    serde_json::from_str::<Value>(line).unwrap()["kind"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Verifies `s`'s chain against `sources` with `public_keys`, expecting tampering at
/// `path:line` with a problem that mentions `what`; the command exits 1.
fn assert_tampered(
    s: &Setup,
    sources: &[PathBuf],
    public_keys: &[PathBuf],
    path: &Path,
    line: u64,
    what: &str,
) {
    let keys = PublicKeys::read(public_keys).unwrap();
    let reports = verify::verify_replicas(std::slice::from_ref(&s.audit), sources, Some(&keys));
    let error = match reports {
        Ok(mut reports) => {
            assert_eq!(reports.len(), 1, "{reports:?}");
            reports.remove(0).result.unwrap_err()
        }
        Err(error) => error,
    };
    match error {
        VerifyError::Tampered { at, problem } => {
            assert_eq!((at.path.as_path(), at.line), (path, line), "{problem}");
            assert!(problem.contains(what), "expected {what:?} in {problem:?}");
        }
        other => panic!("expected tampering, got {other:?}"),
    }
    assert_eq!(
        verify::run_verify_with(std::slice::from_ref(&s.audit), sources, public_keys),
        ExitCode::from(1)
    );
}

fn assert_intact(s: &Setup, sources: &[PathBuf], public_keys: &[PathBuf]) {
    assert_eq!(
        verify::run_verify_with(std::slice::from_ref(&s.audit), sources, public_keys),
        ExitCode::SUCCESS
    );
}

/// `redis-cli --raw XRANGE` of the checkpoint stream, saved to `path` as an operator would.
fn dump_stream(redis: &e2e::RedisServer, path: &Path) {
    let out = Command::new(e2e::tool("redis-cli"))
        .args(["-p", &redis.port().to_string(), "--raw", "XRANGE"])
        .args(["authz:audit:checkpoints", "-", "+"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(path, out.stdout).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_into_the_chain_and_reach_every_witness() {
    let s = setup();
    let redis = e2e::RedisServer::start();
    let metrics = write_log(&config(&s, 10, Some(redis.url())), 45).await;

    let chain_checkpoints: Vec<String> = audit_files(&s.audit)
        .iter()
        .flat_map(|f| read_lines(f))
        .filter(|l| kind(l) == "checkpoint")
        .collect();
    // One per 10 records, and one for the last 5 when the log closed.
    assert_eq!(chain_checkpoints.len(), 5, "{chain_checkpoints:#?}");
    assert_eq!(metrics.checkpoints.get(), 5);
    let first: Value = serde_json::from_str(&chain_checkpoints[0]).unwrap();
    assert_eq!(first["replica"], "authz-0");
    assert_eq!(first["v"], 3);
    assert!(first["signature"].as_str().unwrap().len() == 128);
    // The witness file holds exactly the chain's checkpoint lines, in order.
    assert_eq!(read_lines(&s.witness), chain_checkpoints);
    // So does the Redis stream.
    let dump = s.witness.with_file_name("redis-dump.txt");
    dump_stream(&redis, &dump);
    let dumped: Vec<String> = read_lines(&dump)
        .into_iter()
        .filter(|l| l.starts_with('{'))
        .collect();
    assert_eq!(dumped, chain_checkpoints);

    let public = [s.keys.public.clone()];
    for source in [&s.witness, &dump] {
        let keys = PublicKeys::read(&public).unwrap();
        let reports = verify::verify_replicas(
            std::slice::from_ref(&s.audit),
            std::slice::from_ref(source),
            Some(&keys),
        )
        .unwrap();
        assert_eq!(reports.len(), 1);
        let summary = reports[0].result.as_ref().unwrap();
        assert_eq!(summary.replica.as_deref(), Some("authz-0"));
        assert_eq!((summary.records, summary.checkpoints), (45, 5));
        assert_eq!(summary.uncovered, 0);
        let witness = reports[0].witness.as_ref().unwrap();
        assert_eq!(witness.matched, 5);
        assert_eq!(witness.last_witnessed, Some(summary.seqs.1));
        assert_intact(&s, std::slice::from_ref(source), &public);
    }
    // Without a key, a witness proves nothing: refused (exit 2), never called intact.
    assert_eq!(
        verify::run_verify_with(
            std::slice::from_ref(&s.audit),
            std::slice::from_ref(&s.witness),
            &[]
        ),
        ExitCode::from(2)
    );
}

#[tokio::test]
async fn records_cut_after_a_checkpoint_are_named_as_truncation() {
    let s = setup();
    write_log(&config(&s, 10, None), 45).await;
    let files = audit_files(&s.audit);
    let active = files.last().unwrap();
    let mut lines = read_lines(active);
    // Cut the tail from the last checkpoint on: the bare chain still verifies...
    let last_checkpoint = lines.iter().rposition(|l| kind(l) == "checkpoint").unwrap();
    lines.truncate(last_checkpoint);
    write_lines(active, &lines);
    assert_intact(&s, &[], std::slice::from_ref(&s.keys.public));
    // ...but the witness holds a checkpoint beyond its end.
    assert_tampered(
        &s,
        std::slice::from_ref(&s.witness),
        std::slice::from_ref(&s.keys.public),
        active,
        lines.len() as u64,
        "truncated",
    );
}

/// Edits the fourth line of the first file with `edit` and recomputes every hash after it:
/// what an attacker with the disk but not the key can do.
fn rehash(files: &[PathBuf], mut edit: impl FnMut(&mut Value)) {
    let mut prev: Option<String> = None;
    for (f, file) in files.iter().enumerate() {
        let mut out = Vec::new();
        for (n, line) in read_lines(file).iter().enumerate() {
            let mut value: Value = serde_json::from_str(line).unwrap();
            if (f, n) == (0, 3) {
                edit(&mut value);
            }
            if let Some(prev) = &prev {
                value["prev_hash"] = Value::String(prev.clone());
            }
            let hash = chain::line_hash(&value);
            value["hash"] = Value::String(hash.clone());
            prev = Some(hash);
            out.push(serde_json::to_string(&value).unwrap());
        }
        write_lines(file, &out);
    }
}

#[tokio::test]
async fn a_whole_chain_rewritten_with_recomputed_hashes_is_named() {
    let s = setup();
    write_log(&config(&s, 10, None), 45).await;
    let files = audit_files(&s.audit);
    rehash(&files, |record| record["decision"] = "allow".into());
    // The hash chain alone cannot tell: every link is consistent again.
    assert_intact(&s, &[], &[]);
    // The signatures can: the first checkpoint after the edit attests another head.
    let first_checkpoint = placed_lines(&files)
        .into_iter()
        .find(|(_, _, l)| kind(l) == "checkpoint")
        .unwrap();
    assert_tampered(
        &s,
        &[],
        std::slice::from_ref(&s.keys.public),
        &first_checkpoint.0,
        first_checkpoint.1,
        "signature does not verify",
    );
    // And the witness names the same line as rewritten.
    let sources = [s.witness.clone()];
    let without_signatures =
        verify::verify_replicas(std::slice::from_ref(&s.audit), &sources, None).unwrap();
    match &without_signatures[0].result {
        Err(VerifyError::Tampered { at, problem }) => {
            assert_eq!(at.path, first_checkpoint.0);
            assert_eq!(at.line, first_checkpoint.1);
            assert!(problem.starts_with("rewritten"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn deleted_rotated_files_are_named() {
    let s = setup();
    write_log(&config(&s, 10, None), 60).await;
    let files = audit_files(&s.audit);
    assert!(files.len() >= 3, "{files:?}");
    let public = [s.keys.public.clone()];
    // A file from the middle: the chain itself names the gap in the file sequence.
    let middle = files[1].clone();
    let saved = std::fs::read(&middle).unwrap();
    std::fs::remove_file(&middle).unwrap();
    assert_tampered(&s, &[], &public, &files[2], 1, "missing from the sequence");
    std::fs::write(&middle, saved).unwrap();
    // The newest files (the active one and the last rotated one): only the witness can tell.
    let kept = &files[..files.len() - 2];
    for file in &files[files.len() - 2..] {
        std::fs::remove_file(file).unwrap();
    }
    let kept_last = kept.last().unwrap();
    assert_intact(&s, &[], &public);
    assert_tampered(
        &s,
        std::slice::from_ref(&s.witness),
        &public,
        kept_last,
        read_lines(kept_last).len() as u64,
        "truncated",
    );
}

#[tokio::test]
async fn a_replayed_old_checkpoint_is_named() {
    let s = setup();
    write_log(&config(&s, 10, None), 45).await;
    let files = audit_files(&s.audit);
    let active = files.last().unwrap();
    let public = [s.keys.public.clone()];
    let old_checkpoint = files
        .iter()
        .flat_map(|f| read_lines(f))
        .find(|l| kind(l) == "checkpoint")
        .unwrap();

    // Cut the tail and append the old checkpoint, re-linked to look like the current head.
    let mut lines = read_lines(active);
    lines.truncate(lines.len() - 4);
    let tip: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let mut replayed: Value = serde_json::from_str(&old_checkpoint).unwrap();
    replayed["seq"] = (tip["seq"].as_u64().unwrap() + 1).into();
    replayed["prev_hash"] = tip["hash"].clone();
    replayed["hash"] = chain::line_hash(&replayed).into();
    lines.push(replayed.to_string());
    write_lines(active, &lines);
    assert_tampered(
        &s,
        &[],
        &public,
        active,
        lines.len() as u64,
        "signature does not verify",
    );

    // Verbatim, it does not even link.
    lines.pop();
    lines.push(old_checkpoint.clone());
    write_lines(active, &lines);
    assert_tampered(&s, &[], &public, active, lines.len() as u64, "seq");

    // Replayed in the witness under another replica's name: its signature fails there.
    let mut forged: Value = serde_json::from_str(&old_checkpoint).unwrap();
    forged["replica"] = "authz-1".into();
    forged["hash"] = chain::line_hash(&forged).into();
    let witness = s.witness.with_file_name("replayed.jsonl");
    write_lines(&witness, &[forged.to_string()]);
    let keys = PublicKeys::read(&public).unwrap();
    match verify::verify_replicas(
        std::slice::from_ref(&s.audit),
        std::slice::from_ref(&witness),
        Some(&keys),
    ) {
        Err(VerifyError::Tampered { at, problem }) => {
            assert_eq!((at.path, at.line), (witness, 1));
            assert!(problem.contains("signature does not verify"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_key_is_named_and_rotated_keys_verify_together() {
    let s = setup();
    write_log(&config(&s, 10, None), 25).await;
    // The replica restarts with a new key (rotation) and writes more.
    let rotated = keys(s.keys.private.parent().unwrap(), "rotated");
    let mut second = config(&s, 10, None);
    if let Some(c) = second.checkpoint.as_mut() {
        c.signing_key = Some(rotated.private.clone());
    }
    write_log(&second, 25).await;

    let both = [s.keys.public.clone(), rotated.public.clone()];
    assert_intact(&s, std::slice::from_ref(&s.witness), &both);

    let first_checkpoint_at = |key_id_of: &Path| {
        let pem = std::fs::read_to_string(key_id_of).unwrap();
        let public = authz::devkeys::ed25519_public_from_pem(&pem).unwrap();
        let id = authz::audit::checkpoint::key_id(&public);
        placed_lines(&audit_files(&s.audit))
            .into_iter()
            .find(|(_, _, l)| l.contains(&format!("\"key_id\":\"{id}\"")))
            .map(|(f, n, _)| (f, n))
            .unwrap()
    };
    // Only the old key: the first checkpoint signed with the new one is named.
    let (file, line) = first_checkpoint_at(&rotated.public);
    assert_tampered(
        &s,
        &[],
        std::slice::from_ref(&s.keys.public),
        &file,
        line,
        "not among the public keys",
    );
    // A key that signed nothing here.
    let stranger = keys(s.keys.private.parent().unwrap(), "stranger");
    let (file, line) = first_checkpoint_at(&s.keys.public);
    assert_tampered(
        &s,
        &[],
        &[stranger.public],
        &file,
        line,
        "not among the public keys",
    );
}

/// Appends a decision every 5 ms for `how_long`: each must succeed at once, whatever the
/// witnesses are doing.
async fn append_for(log: &AuditLog, how_long: Duration) {
    let until = Instant::now() + how_long;
    let mut n = 0;
    while Instant::now() < until {
        let started = Instant::now();
        log.append(event(n)).await.expect("decisions go on");
        // Generous for a loaded 2-core machine; a write that waited for the dead witness
        // would also show as failures of the appends themselves.
        assert!(started.elapsed() < Duration::from_secs(1));
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Appends for `how_long` with the witness back, expects it up again, and closes the log.
async fn caught_up_then_closed(log: AuditLog, how_long: Duration) {
    append_for(&log, how_long).await;
    let status = log.witness_status();
    assert!(status[0].down_since.is_none(), "{status:?}");
    tokio::task::spawn_blocking(move || log.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_is_down_never_stops_decisions_and_catches_up() {
    let s = setup();
    let mut redis = e2e::RedisServer::start();
    let mut config = config(&s, 1000, Some(redis.url()));
    // A checkpoint every 100 ms: 3 s of outage stand for a minute at the production interval.
    if let Some(c) = config.checkpoint.as_mut() {
        c.every = Duration::from_millis(100);
        c.witness_file = None;
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = AuditMetrics::new(&mut registry);
    let log = AuditLog::start(&config, metrics.clone()).unwrap();
    append_for(&log, Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| redis.stop());
    append_for(&log, Duration::from_secs(3)).await;
    let status = log.witness_status();
    assert_eq!(status.len(), 1);
    assert!(status[0].down_since.is_some(), "{status:?}");
    assert!(status[0].pending > 5, "{status:?}");
    assert!(status[0].to_string().contains("down"), "{}", status[0]);
    let failures = metrics
        .witness_failures
        .get_or_create(&authz::audit::metrics::WitnessLabels { witness: "redis" })
        .get();
    assert!(failures > 0);

    tokio::task::block_in_place(|| redis.restart());
    caught_up_then_closed(log, Duration::from_millis(1500)).await;
    // The restarted Redis lost what it held before (no persistence), but got the backlog: the
    // checkpoints of the outage and after.
    let dump = s.witness.with_file_name("redis-dump.txt");
    dump_stream(&redis, &dump);
    let delivered = read_lines(&dump)
        .iter()
        .filter(|l| l.starts_with('{'))
        .count();
    assert!(
        delivered >= 20,
        "{delivered} checkpoints delivered after the outage"
    );
    assert_intact(&s, &[dump], std::slice::from_ref(&s.keys.public));
}

#[tokio::test]
async fn several_replicas_verify_together_and_a_missing_one_is_named() {
    let s = setup();
    let root = s.audit.clone();
    for replica in ["authz-0", "authz-1"] {
        let mut config = config(&s, 10, None);
        config.path = root.join(replica);
        std::fs::create_dir_all(&config.path).unwrap();
        config.replica = replica.into();
        write_log(&config, 25).await;
    }
    let public = [s.keys.public.clone()];
    let keys = PublicKeys::read(&public).unwrap();
    let sources = std::slice::from_ref(&s.witness);
    let reports =
        verify::verify_replicas(std::slice::from_ref(&root), sources, Some(&keys)).unwrap();
    let names: Vec<_> = reports.iter().map(|r| r.replica.as_deref()).collect();
    assert_eq!(names, [Some("authz-0"), Some("authz-1")]);
    for report in &reports {
        assert_eq!(report.result.as_ref().unwrap().records, 25, "{report:?}");
        assert_eq!(report.witness.as_ref().unwrap().matched, 3, "{report:?}");
    }
    assert_intact(&s, sources, &public);

    // One replica's files are gone: the witness still knows it existed.
    std::fs::remove_dir_all(root.join("authz-1")).unwrap();
    let reports =
        verify::verify_replicas(std::slice::from_ref(&root), sources, Some(&keys)).unwrap();
    match &reports[1].result {
        Err(VerifyError::Tampered { at, problem }) => {
            assert_eq!(at.path, s.witness);
            assert!(problem.starts_with("missing: replica authz-1"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        verify::run_verify_with(std::slice::from_ref(&root), sources, &public),
        ExitCode::from(1)
    );
}

/// A log of `records` records without checkpoints, and its files.
async fn unsigned_log(records: usize) -> (Setup, Vec<PathBuf>) {
    let s = setup();
    let mut config = config(&s, 10, None);
    config.checkpoint = None;
    write_log(&config, records).await;
    let files = audit_files(&s.audit);
    (s, files)
}

#[tokio::test]
async fn version_1_files_without_replica_ids_still_verify() {
    let (s, files) = unsigned_log(30).await;
    // Make the lines what version 1 wrote: no `replica`, `v` 1, hashes recomputed.
    let mut prev: Option<String> = None;
    for file in &files {
        let mut out = Vec::new();
        for line in read_lines(file) {
            let mut value: Value = serde_json::from_str(&line).unwrap();
            let object = value.as_object_mut().unwrap();
            object.remove("replica");
            object.insert("v".into(), 1.into());
            if let Some(prev) = &prev {
                object.insert("prev_hash".into(), prev.clone().into());
            }
            let hash = chain::line_hash(&value);
            value["hash"] = hash.clone().into();
            prev = Some(hash);
            out.push(value.to_string());
        }
        write_lines(file, &out);
    }
    let summary = verify::verify_files(std::slice::from_ref(&s.audit)).unwrap();
    assert_eq!((summary.records, summary.replica), (30, None));
    assert_intact(&s, &[], &[]);
}

#[tokio::test]
async fn a_record_moved_from_another_replicas_chain_is_named() {
    let (s, files) = unsigned_log(12).await;
    // The fourth line of the first file now claims another replica, every hash recomputed:
    // the chain is consistent, but the line does not belong to this file's replica.
    rehash(&files, |record| {
        assert_eq!(record["kind"], "decision");
        record["replica"] = "authz-1".into();
    });
    match verify::verify_files(std::slice::from_ref(&s.audit)) {
        Err(VerifyError::Tampered { at, problem }) => {
            assert_eq!((at.path.as_path(), at.line), (files[0].as_path(), 4));
            assert!(
                problem.contains(
                    r#"replica "authz-1" in a file whose header (line 1) names replica "authz-0""#
                ),
                "{problem}"
            );
        }
        other => panic!("expected tampering, got {other:?}"),
    }
    assert_eq!(
        verify::run_verify_with(std::slice::from_ref(&s.audit), &[], &[]),
        ExitCode::from(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_file_that_is_gone_for_a_while_never_stops_decisions_and_catches_up() {
    let s = setup();
    let mut config = config(&s, 1000, None);
    // A checkpoint every 100 ms: 2 s of outage stand for a minute at the production interval.
    if let Some(c) = config.checkpoint.as_mut() {
        c.every = Duration::from_millis(100);
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = AuditMetrics::new(&mut registry);
    let log = AuditLog::start(&config, metrics.clone()).unwrap();
    let failures = || {
        metrics
            .witness_failures
            .get_or_create(&authz::audit::metrics::WitnessLabels { witness: "file" })
            .get()
    };
    append_for(&log, Duration::from_millis(500)).await;
    assert!(
        read_lines(&s.witness).len() >= 2,
        "the witness file was written"
    );
    assert_eq!(failures(), 0);

    // The witness volume goes away: its directory is moved off and a plain file takes its
    // place, so the witness path can be neither written nor created.
    let dir = s.witness.parent().unwrap().to_owned();
    let away = dir.with_file_name("witness-away");
    std::fs::rename(&dir, &away).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    append_for(&log, Duration::from_secs(2)).await;
    let status = log.witness_status();
    assert_eq!(status.len(), 1);
    assert!(status[0].down_since.is_some(), "{status:?}");
    assert!(status[0].pending > 5, "{status:?}");
    assert!(failures() > 0);

    // Back: the backlog is delivered in order, and later checkpoints follow it.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    caught_up_then_closed(log, Duration::from_millis(1000)).await;
    // Every checkpoint of the chain is in the witness file, the outage's included.
    let summary = verify::verify_files(std::slice::from_ref(&s.audit)).unwrap();
    let witnessed = read_lines(&s.witness).len() as u64;
    assert_eq!(witnessed, summary.checkpoints);
    assert!(witnessed >= 20, "{witnessed} checkpoints witnessed");
    assert_intact(
        &s,
        std::slice::from_ref(&s.witness),
        std::slice::from_ref(&s.keys.public),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_by_time_come_once_per_interval_not_once_per_batch() {
    let s = setup();
    let mut config = config(&s, 1000, None);
    if let Some(c) = config.checkpoint.as_mut() {
        c.every = Duration::from_millis(200);
    }
    let log = AuditLog::start(&config, AuditMetrics::unregistered()).unwrap();
    append_for(&log, Duration::from_millis(1500)).await;
    tokio::task::spawn_blocking(move || log.shutdown())
        .await
        .unwrap();
    let summary = verify::verify_files(std::slice::from_ref(&s.audit)).unwrap();
    // About one per 200 ms (and the closing one), not one per small batch.
    assert!(summary.records > 50, "{summary:?}");
    assert!(
        (3..=13).contains(&summary.checkpoints),
        "{} checkpoints for {} records in 1.5 s",
        summary.checkpoints,
        summary.records
    );
}
