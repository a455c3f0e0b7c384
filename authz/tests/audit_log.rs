//! The audit writer as the Check pipeline uses it: durable appends, one valid chain under
//! concurrency, group commit, rotation and retention, resume after restart, and failures that
//! surface as errors (never an `Ok` without the record) and heal by themselves.

use std::{
    io::{self, Write},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use authz::audit::{
    AuditConfig, AuditDecision, AuditError, AuditEvent, AuditLog, AuditMetrics, AuditPrincipal,
    AuditRecord, Durability, FailureKind, RateLimitState, verify,
};
use prometheus_client::registry::Registry;

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        decision_id: uuid::Uuid::now_v7(),
        request_id: Some(format!("req-{n}")),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        principal: Some(AuditPrincipal {
            id: format!("user-{n}"),
            auth_method: "jwt".into(),
            roles: vec!["analyst".into()],
        }),
        model: Some("resnet50".into()),
        version: Some("1".into()),
        action: "infer".into(),
        decision: if n.is_multiple_of(3) {
            AuditDecision::Deny
        } else {
            AuditDecision::Allow
        },
        status: if n.is_multiple_of(3) { 403 } else { 200 },
        reason: if n.is_multiple_of(3) {
            "role_not_allowed".into()
        } else {
            "ok".into()
        },
        policy_ids: vec!["analysts-may-infer".into()],
        access_reason: Some(format!("ticket INC-{n}")),
        rate_limit: Some(RateLimitState {
            outcome: "allowed".into(),
            limit: Some(10),
            remaining: Some(9),
            retry_after_ms: None,
        }),
        source_ip: Some("10.1.2.3".parse().unwrap()),
        latency: Duration::from_micros(250),
        request_time: None,
        shadow: None,
    }
}

fn config(path: &Path) -> AuditConfig {
    AuditConfig {
        path: path.to_owned(),
        ..AuditConfig::default()
    }
}

fn start(config: &AuditConfig) -> (AuditLog, Registry) {
    let mut registry = Registry::default();
    let log = AuditLog::start(config, AuditMetrics::new(&mut registry)).unwrap();
    (log, registry)
}

/// The value of one sample in the Prometheus text exposition, e.g.
/// `metric(&registry, "authz_audit_records_total")`.
fn metric(registry: &Registry, sample: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn verify_dir(dir: &Path) -> verify::VerifySummary {
    verify::verify_files(&[dir.to_owned()]).unwrap_or_else(|e| panic!("verify failed: {e}"))
}

#[tokio::test]
async fn every_decision_becomes_one_durable_hashed_line_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = start(&config(dir.path()));
    let mut long = event(1);
    long.access_reason = Some("x".repeat(600));
    let first = log.append(event(0)).await.unwrap();
    let second = log.append(long).await.unwrap();

    let lines = lines(&dir.path().join("audit.jsonl"));
    assert_eq!(lines.len(), 3, "a header and two records: {lines:?}");
    let header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(header["kind"], "header");
    assert_eq!(header["file_seq"], 0);
    assert_eq!(header["prev_hash"], "0".repeat(64));

    let on_disk: AuditRecord = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(on_disk, first);
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, header["hash"].as_str().unwrap());
    assert_eq!(first.decision, AuditDecision::Deny);
    assert_eq!(first.status, 403);
    assert_eq!(first.reason, "role_not_allowed");
    assert_eq!(first.latency_us, 250);
    assert_eq!(second.prev_hash, first.hash);
    assert_eq!(second.access_reason.as_deref().map(str::len), Some(500));
    assert!(second.access_reason_truncated);

    // Exactly the documented members, in order: nothing else (no credentials, no tensors).
    let value: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "v",
        "kind",
        "seq",
        "time",
        "replica",
        "decision_id",
        "request_id",
        "trace_id",
        "principal",
        "model",
        "version",
        "action",
        "decision",
        "status",
        "reason",
        "policy_ids",
        "access_reason",
        "access_reason_truncated",
        "rate_limit",
        "source_ip",
        "latency_us",
        "prev_hash",
        "hash",
    ];
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    expected.sort();
    assert_eq!(sorted_keys, expected);
    assert!(
        lines[2].starts_with(r#"{"v":3,"kind":"decision","seq":2,"time":""#),
        "{}",
        lines[2]
    );

    assert_eq!(metric(&registry, "authz_audit_records_total"), 2.0);
    assert_eq!(
        metric(&registry, "authz_audit_fsync_duration_seconds_count"),
        2.0
    );
    assert_eq!(metric(&registry, "authz_audit_queue_depth"), 0.0);
    let summary = verify_dir(dir.path());
    assert_eq!((summary.records, summary.headers), (2, 1));
    assert_eq!(summary.last_hash, second.hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_chain_and_share_fsyncs() {
    const CHECKS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = start(&config(dir.path()));
    let tasks: Vec<_> = (0..CHECKS)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(event(n)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap().seq);
    }
    seqs.sort();
    assert_eq!(seqs, (1..=CHECKS as u64).collect::<Vec<_>>());

    let lines = lines(&dir.path().join("audit.jsonl"));
    assert_eq!(lines.len(), CHECKS + 1);
    for line in &lines[1..] {
        serde_json::from_str::<AuditRecord>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert_eq!(verify_dir(dir.path()).records, CHECKS as u64);

    let batches = metric(&registry, "authz_audit_batch_records_count");
    let fsyncs = metric(&registry, "authz_audit_fsync_duration_seconds_count");
    assert_eq!(
        metric(&registry, "authz_audit_batch_records_sum"),
        CHECKS as f64
    );
    assert_eq!(batches, fsyncs, "one fsync per batch");
    assert!(
        batches < CHECKS as f64,
        "{CHECKS} records took {batches} fsyncs: no group commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_alone_commits_its_own_record_durably_and_others_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = start(&config(dir.path()));
    // One append at a time: each commits inline (no hand-off to the writer thread), and is on
    // disk, synced, when it returns.
    for n in 0..3 {
        let record = log.append(event(n)).await.unwrap();
        let on_disk = lines(&dir.path().join("audit.jsonl"));
        assert!(
            on_disk.iter().any(|l| l.contains(&record.hash)),
            "record {n} is not in the file when append returns"
        );
    }
    assert_eq!(metric(&registry, "authz_audit_inline_commits_total"), 3.0);
    assert_eq!(
        metric(&registry, "authz_audit_fsync_duration_seconds_count"),
        3.0
    );
    // Many at once: the writer thread group-commits what queues behind the first.
    let tasks: Vec<_> = (3..67)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(event(n)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let inline = metric(&registry, "authz_audit_inline_commits_total");
    assert!(inline < 67.0, "every concurrent append committed inline");
    assert_eq!(verify_dir(dir.path()).records, 67);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_marked_must_not_block_never_commits_inline() {
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = start(&config(dir.path()));
    // What the Envoy module does on Envoy's worker threads (a thread of its own, polling inside
    // the runtime's context): the append hands its record to the writer thread even though it
    // is alone and the runtime has two workers.
    let handle = tokio::runtime::Handle::current();
    let marked = log.clone();
    std::thread::spawn(move || {
        let _guard = authz::audit::MustNotBlock::enter();
        for n in 0..3 {
            handle.block_on(marked.append(event(n))).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(metric(&registry, "authz_audit_inline_commits_total"), 0.0);
    // The same without the mark: inline, as on any thread of the runtime.
    let handle = tokio::runtime::Handle::current();
    let unmarked = log.clone();
    std::thread::spawn(move || handle.block_on(unmarked.append(event(3))).unwrap())
        .join()
        .unwrap();
    assert_eq!(metric(&registry, "authz_audit_inline_commits_total"), 1.0);
    assert_eq!(verify_dir(dir.path()).records, 4);
}

#[tokio::test]
async fn on_a_single_threaded_runtime_every_record_goes_through_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = start(&config(dir.path()));
    for n in 0..3 {
        log.append(event(n)).await.unwrap();
    }
    // Blocking the only worker on the disk would stall every other task.
    assert_eq!(metric(&registry, "authz_audit_inline_commits_total"), 0.0);
    assert_eq!(verify_dir(dir.path()).records, 3);
}

/// A stream whose writes block until released, to hold the writer inside one batch.
#[derive(Clone, Default)]
struct GatedStream {
    open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    bytes: Arc<Mutex<Vec<u8>>>,
    fail: Arc<AtomicBool>,
    /// Set while a write waits at the gate: the writer thread is inside a batch.
    blocked: Arc<AtomicBool>,
}

impl GatedStream {
    fn opened() -> Self {
        let stream = GatedStream::default();
        stream.release();
        stream
    }
    fn release(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
    fn hold(&self) {
        *self.open.0.lock().unwrap() = false;
    }
    async fn wait_until_blocked(&self) {
        for _ in 0..500 {
            if self.blocked.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the writer never reached the stream");
    }
}

impl Write for GatedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut open = self.open.0.lock().unwrap();
        while !*open {
            self.blocked.store(true, Ordering::SeqCst);
            open = self.open.1.wait(open).unwrap();
        }
        self.blocked.store(false, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn wait_for(registry: &Registry, sample: &str, value: f64) {
    for _ in 0..500 {
        if metric(registry, sample) == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{sample} never reached {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_queued_during_a_commit_are_written_by_one_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let stream = GatedStream::opened();
    let mut registry = Registry::default();
    let log = AuditLog::start_with_stream(
        &config(dir.path()),
        AuditMetrics::new(&mut registry),
        Some(Box::new(stream.clone())),
    )
    .unwrap();
    log.append(event(0)).await.unwrap();

    stream.hold();
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(event(1)).await }
    });
    stream.wait_until_blocked().await;
    let queued: Vec<_> = (2..34)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(event(n)).await })
        })
        .collect();
    wait_for(&registry, "authz_audit_queue_depth", 32.0).await;
    stream.release();
    first.await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
    assert_eq!(metric(&registry, "authz_audit_batch_records_count"), 3.0);
    assert_eq!(
        metric(&registry, "authz_audit_batch_records_bucket{le=\"32.0\"}"),
        3.0
    );
    assert_eq!(
        metric(&registry, "authz_audit_batch_records_bucket{le=\"16.0\"}"),
        2.0
    );
    assert_eq!(verify_dir(dir.path()).records, 34);
    // The stream received exactly the bytes of the file.
    let file = std::fs::read(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(*stream.bytes.lock().unwrap(), file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_at_once_instead_of_growing() {
    let stream = GatedStream::opened();
    let mut registry = Registry::default();
    let config = AuditConfig {
        file: false,
        queue_capacity: 1,
        ..AuditConfig::default()
    };
    let log = AuditLog::start_with_stream(
        &config,
        AuditMetrics::new(&mut registry),
        Some(Box::new(stream.clone())),
    )
    .unwrap();
    stream.hold();
    let in_writer = tokio::spawn({
        let log = log.clone();
        async move { log.append(event(0)).await }
    });
    stream.wait_until_blocked().await;
    // Behind the held commit: at most the queue's one slot, plus the one record the writer
    // thread may have taken while it waits for the writer lock. Then appends fail at once.
    let mut waiting = Vec::new();
    let error = loop {
        let log = log.clone();
        let n = waiting.len() + 1;
        let mut append = tokio::spawn(async move { log.append(event(n)).await });
        match tokio::time::timeout(Duration::from_millis(200), &mut append).await {
            Ok(result) => break result.unwrap().unwrap_err(),
            Err(_) => waiting.push(append),
        }
        assert!(
            waiting.len() <= 2,
            "{} appends are waiting behind one commit with a queue of 1",
            waiting.len()
        );
    };
    assert!(
        matches!(error, AuditError::QueueFull { capacity: 1 }),
        "{error}"
    );
    assert!(!waiting.is_empty(), "the queue's one slot took a record");
    assert_eq!(
        metric(&registry, "authz_audit_failures_total{kind=\"queue_full\"}"),
        1.0
    );
    stream.release();
    in_writer.await.unwrap().unwrap();
    for append in waiting {
        append.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn stdout_only_stream_is_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let stream = GatedStream::opened();
    let config = AuditConfig {
        file: false,
        ..AuditConfig::default()
    };
    let log = AuditLog::start_with_stream(
        &config,
        AuditMetrics::unregistered(),
        Some(Box::new(stream.clone())),
    )
    .unwrap();
    for n in 0..5 {
        log.append(event(n)).await.unwrap();
    }
    let captured = dir.path().join("stdout.jsonl");
    std::fs::write(&captured, &*stream.bytes.lock().unwrap()).unwrap();
    let summary = verify::verify_files(&[captured]).unwrap();
    assert_eq!((summary.records, summary.headers), (5, 1));
}

#[tokio::test]
async fn a_failing_stream_fails_the_append_and_the_file_keeps_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let stream = GatedStream::opened();
    let mut registry = Registry::default();
    let log = AuditLog::start_with_stream(
        &config(dir.path()),
        AuditMetrics::new(&mut registry),
        Some(Box::new(stream.clone())),
    )
    .unwrap();
    log.append(event(0)).await.unwrap();
    stream.fail.store(true, Ordering::SeqCst);
    let error = log.append(event(1)).await.unwrap_err();
    assert_eq!(error.kind(), FailureKind::Io, "{error}");
    assert_eq!(
        lines(&dir.path().join("audit.jsonl")).len(),
        2,
        "rolled back"
    );
    stream.fail.store(false, Ordering::SeqCst);
    let next = log.append(event(2)).await.unwrap();
    assert_eq!(next.seq, 2);
    assert_eq!(
        metric(&registry, "authz_audit_failures_total{kind=\"io\"}"),
        1.0
    );
    assert_eq!(verify_dir(dir.path()).records, 2);
}

#[tokio::test]
async fn write_mode_does_not_fsync_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::Write,
        ..config(dir.path())
    };
    let (log, registry) = start(&config);
    for n in 0..3 {
        log.append(event(n)).await.unwrap();
    }
    assert_eq!(metric(&registry, "authz_audit_records_total"), 3.0);
    assert_eq!(
        metric(&registry, "authz_audit_fsync_duration_seconds_count"),
        0.0
    );
    assert_eq!(lines(&dir.path().join("audit.jsonl")).len(), 4);
}

#[tokio::test]
async fn disk_full_fails_every_append_and_never_returns_ok() {
    let (log, registry) = start(&config(Path::new("/dev/full")));
    for n in 0..3 {
        let error = log.append(event(n)).await.unwrap_err();
        assert_eq!(error.kind(), FailureKind::NoSpace, "{error}");
        assert!(error.is_transient());
    }
    assert_eq!(
        metric(&registry, "authz_audit_failures_total{kind=\"no_space\"}"),
        3.0
    );
    assert_eq!(metric(&registry, "authz_audit_records_total"), 0.0);
}

#[tokio::test]
async fn writing_resumes_by_itself_when_the_disk_has_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.jsonl");
    // The active file is a device whose writes fail with ENOSPC, until the operator fixes it.
    std::os::unix::fs::symlink("/dev/full", &active).unwrap();
    let (log, registry) = start(&config(&active));
    assert_eq!(
        log.append(event(0)).await.unwrap_err().kind(),
        FailureKind::NoSpace
    );
    assert_eq!(
        log.append(event(1)).await.unwrap_err().kind(),
        FailureKind::NoSpace
    );
    assert!(log.is_failing());
    std::fs::remove_file(&active).unwrap();
    let record = log.append(event(2)).await.unwrap();
    assert!(!log.is_failing());
    assert_eq!(record.seq, 1);
    assert_eq!(
        metric(&registry, "authz_audit_failures_total{kind=\"no_space\"}"),
        2.0
    );
    assert_eq!(verify_dir(dir.path()).records, 1);
}

#[tokio::test]
async fn a_missing_audit_directory_is_created_owner_and_group_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("new/audit");
    let mut dir_path = audit_dir.clone().into_os_string();
    dir_path.push("/");
    let (log, _registry) = start(&config(Path::new(&dir_path)));
    log.append(event(0)).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // At most 0750 / 0640 (the umask may take away more): never readable by others.
    assert_eq!(mode(&audit_dir) & !0o750, 0, "{:o}", mode(&audit_dir));
    let file_mode = mode(&audit_dir.join("audit.jsonl"));
    assert_eq!(file_mode & !0o640, 0, "{file_mode:o}");
    assert_eq!(verify_dir(&audit_dir).records, 1);
}

#[tokio::test]
async fn writing_resumes_once_a_missing_directory_appears() {
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("later");
    let (log, _registry) = start(&config(&audit_dir.join("audit.jsonl")));
    assert_eq!(
        log.append(event(0)).await.unwrap_err().kind(),
        FailureKind::NotFound
    );
    std::fs::create_dir(&audit_dir).unwrap();
    log.append(event(1)).await.unwrap();
    assert_eq!(verify_dir(&audit_dir).records, 1);
}

fn rotating(dir: &Path, retention: u32) -> AuditConfig {
    AuditConfig {
        max_file_bytes: 4096,
        retention,
        ..config(dir)
    }
}

fn audit_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn rotation_keeps_the_chain_and_retention_deletes_the_oldest_files() {
    let dir = tempfile::tempdir().unwrap();
    let (log, registry) = start(&rotating(dir.path(), 2));
    for n in 0..60 {
        log.append(event(n)).await.unwrap();
    }
    // Rotation runs after the batch is answered: wait for the writer to finish.
    log.shutdown();
    let rotations = metric(&registry, "authz_audit_rotations_total");
    assert!(rotations >= 5.0, "{rotations} rotations");
    let mut names = audit_files(dir.path());
    assert_eq!(names.len(), 4, "lock, active + 2 rotated: {names:?}");
    assert_eq!(names.remove(0), ".audit.jsonl.lock");
    assert_eq!(names[0], "audit.jsonl");
    let last = rotations as u64;
    assert_eq!(names[1], format!("audit.jsonl.{:06}", last - 2));
    assert_eq!(names[2], format!("audit.jsonl.{:06}", last - 1));
    for name in &names {
        let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size < 4096 + 1024, "{name} is {size} bytes");
    }
    let summary = verify_dir(dir.path());
    assert_eq!(summary.file_seqs, (last - 2, last));
    assert_ne!(summary.anchor, "0".repeat(64), "older files were deleted");
}

#[tokio::test]
async fn a_restart_continues_the_chain_in_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = start(&config(dir.path()));
    let before = log.append(event(0)).await.unwrap();
    log.shutdown();
    let (log, _) = start(&config(dir.path()));
    let after = log.append(event(1)).await.unwrap();
    assert_eq!(after.prev_hash, before.hash);
    assert_eq!(after.seq, before.seq + 1);
    let summary = verify_dir(dir.path());
    assert_eq!((summary.files, summary.records, summary.headers), (1, 2, 1));
}

#[tokio::test]
async fn a_restart_after_a_torn_write_continues_in_a_new_file_and_verify_names_the_tear() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.jsonl");
    let (log, _) = start(&config(dir.path()));
    log.append(event(0)).await.unwrap();
    let acknowledged = log.append(event(1)).await.unwrap();
    log.shutdown();
    // A crash in the middle of write(2): half of a third line.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap();
    file.write_all(br#"{"v":1,"kind":"decision","seq":3,"ti"#)
        .unwrap();
    drop(file);

    let (log, _) = start(&config(dir.path()));
    let after = log.append(event(2)).await.unwrap();
    assert_eq!(
        after.seq,
        acknowledged.seq + 2,
        "the new file's header takes one seq"
    );
    assert_eq!(
        audit_files(dir.path()),
        [".audit.jsonl.lock", "audit.jsonl", "audit.jsonl.000000"]
    );
    let summary = verify_dir(dir.path());
    assert_eq!(summary.records, 3);
    assert_eq!(summary.torn.len(), 1);
    assert_eq!(
        summary.torn[0].to_string(),
        format!("{}:4", dir.path().join("audit.jsonl.000000").display())
    );
}

#[tokio::test]
async fn an_active_file_moved_away_behind_the_writer_is_continued_in_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = start(&config(dir.path()));
    let before = log.append(event(0)).await.unwrap();
    // An external log rotation tool moves the file.
    std::fs::rename(
        dir.path().join("audit.jsonl"),
        dir.path().join("audit.jsonl.000000"),
    )
    .unwrap();
    let after = log.append(event(1)).await.unwrap();
    assert_eq!(after.seq, before.seq + 2, "a new header in between");
    let new_file = lines(&dir.path().join("audit.jsonl"));
    assert_eq!(new_file.len(), 2, "the record went to the new active file");
    let summary = verify_dir(dir.path());
    assert_eq!((summary.files, summary.records), (2, 2));
}

#[tokio::test]
async fn a_deleted_active_file_is_not_written_into() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = start(&config(dir.path()));
    log.append(event(0)).await.unwrap();
    std::fs::remove_file(dir.path().join("audit.jsonl")).unwrap();
    let after = log.append(event(1)).await.unwrap();
    let new_file = lines(&dir.path().join("audit.jsonl"));
    assert_eq!(new_file.len(), 2);
    assert!(new_file[1].contains(&after.hash));
    // The chain now starts at a file that is gone: verify shows the anchor, not genesis.
    let summary = verify_dir(dir.path());
    assert_eq!((summary.file_seqs, summary.records), ((1, 1), 1));
    assert_ne!(summary.anchor, "0".repeat(64));
}

#[tokio::test]
async fn a_crash_between_the_rotation_renames_is_completed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.jsonl");
    let (log, _) = start(&config(dir.path()));
    log.append(event(0)).await.unwrap();
    log.shutdown();
    std::fs::rename(&active, dir.path().join("audit.jsonl.000000")).unwrap();
    let (log, _) = start(&config(dir.path()));
    log.append(event(1)).await.unwrap();
    let summary = verify_dir(dir.path());
    assert_eq!((summary.files, summary.records), (2, 2));
}

#[tokio::test]
async fn the_chain_is_never_continued_from_an_edited_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("audit.jsonl");
    let (log, _) = start(&config(dir.path()));
    log.append(event(0)).await.unwrap();
    log.shutdown();
    let original = std::fs::read_to_string(&active).unwrap();
    std::fs::write(
        &active,
        original.replace("\"status\":403", "\"status\":200"),
    )
    .unwrap();
    let (log, registry) = start(&config(dir.path()));
    let error = log.append(event(1)).await.unwrap_err();
    assert!(matches!(error, AuditError::Resume { .. }), "{error}");
    assert_eq!(
        metric(&registry, "authz_audit_failures_total{kind=\"resume\"}"),
        1.0
    );
    std::fs::write(&active, original).unwrap();
    log.append(event(2)).await.unwrap();
}

#[tokio::test]
async fn two_writers_never_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = start(&config(dir.path()));
    first.append(event(0)).await.unwrap();
    let (second, registry) = start(&config(dir.path()));
    let error = second.append(event(1)).await.unwrap_err();
    assert!(matches!(error, AuditError::Locked { .. }), "{error}");
    assert_eq!(
        metric(&registry, "authz_audit_failures_total{kind=\"locked\"}"),
        1.0
    );
    // Once the first writer is gone, the second takes over and continues the chain.
    first.shutdown();
    let record = second.append(event(2)).await.unwrap();
    assert_eq!(record.seq, 2);
    assert_eq!(verify_dir(dir.path()).records, 2);
}

#[test]
fn invalid_config_is_refused_at_start() {
    let config = AuditConfig {
        file: false,
        stdout: false,
        ..AuditConfig::default()
    };
    let error = AuditLog::start(&config, AuditMetrics::unregistered()).unwrap_err();
    assert!(matches!(error, AuditError::Config(_)), "{error}");
    assert!(error.to_string().contains("audit.file"), "{error}");
}
