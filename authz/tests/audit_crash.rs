//! Process-level failures, each in a child process (this test binary re-run with
//! `--ignored --exact <child>`):
//! - `kill -9` in the middle of audit load: every append that returned `Ok` has its record on
//!   disk, and `verify` passes or reports only a torn final line. (The end-to-end version, with
//!   the real `authz` binary behind Envoy, lives in `e2e`.)
//! - a write that fails half-way (the file size limit, `RLIMIT_FSIZE`, cuts it like a full disk
//!   does): the append fails, the partial line is rolled back, and writing resumes once there
//!   is room again.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use authz::audit::{AuditConfig, AuditDecision, AuditEvent, AuditLog, AuditMetrics, verify};

/// Set in the children's environment: the audit directory they write to.
const CHILD_DIR_ENV: &str = "AUTHZ_AUDIT_CRASH_CHILD_DIR";
/// Acknowledgements to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 300;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        decision_id: uuid::Uuid::now_v7(),
        request_id: Some(format!("req-{n}")),
        trace_id: None,
        principal: None,
        model: Some("resnet50".into()),
        version: None,
        action: "infer".into(),
        decision: AuditDecision::Allow,
        status: 200,
        reason: "ok".into(),
        policy_ids: vec!["everyone".into()],
        access_reason: None,
        rate_limit: None,
        source_ip: None,
        latency: Duration::from_micros(50),
        request_time: None,
        shadow: None,
    }
}

/// The child: 16 tasks append as fast as they can (small files, so rotations happen too) and
/// print `ack <hash>` for every record acknowledged, until killed.
#[test]
#[ignore = "the child process of kill_9_during_load_loses_no_acknowledged_record"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV)
        .unwrap_or_else(|_| panic!("run by kill_9_during_load_loses_no_acknowledged_record"));
    let config = AuditConfig {
        path: PathBuf::from(dir),
        max_file_bytes: 64 * 1024,
        ..AuditConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = AuditLog::start(&config, AuditMetrics::unregistered()).unwrap();
        let tasks: Vec<_> = (0..16u64)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    for n in 0.. {
                        let record = log.append(event(task * 1_000_000 + n)).await.unwrap();
                        println!("ack {}", record.hash);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn kill_9_during_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("child exited after {} acks", acked.len()))
            .unwrap();
        if let Some(hash) = line.strip_prefix("ack ") {
            acked.push(hash.to_owned());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks printed between our last read and the kill count too.
    for line in lines {
        if let Some(hash) = line.unwrap().strip_prefix("ack ") {
            acked.push(hash.to_owned());
        }
    }

    let summary = verify::verify_files(&[dir.path().to_owned()])
        .unwrap_or_else(|e| panic!("chain broken after kill -9: {e}"));
    assert!(summary.torn.len() <= 1, "{:?}", summary.torn);
    let on_disk: HashSet<String> = verify::read_decision_records(&[dir.path().to_owned()])
        .unwrap()
        .into_iter()
        .map(|record| record.hash)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|h| !on_disk.contains(*h)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost: {lost:?}",
        lost.len()
    );
    assert!(summary.records >= acked.len() as u64);

    // A restart continues the chain after the crash.
    let config = AuditConfig {
        path: dir.path().to_owned(),
        ..AuditConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = AuditLog::start(&config, AuditMetrics::unregistered()).unwrap();
        log.append(event(0)).await.unwrap();
    });
    let after = verify::verify_files(&[dir.path().to_owned()]).unwrap();
    assert_eq!(after.records, summary.records + 1);
}

/// The file size limit for the child: room for the header and a few dozen records.
const FSIZE_LIMIT: u64 = 16 * 1024;

/// The child: appends until the file size limit makes a write fail part-way, checks what a
/// caller and `verify` see, then raises the limit and checks that writing resumes. It panics
/// (exits non-zero) on any unexpected outcome.
#[test]
#[ignore = "the child process of a_write_cut_short_is_rolled_back_and_writing_resumes"]
fn file_size_limit_child() {
    let dir =
        PathBuf::from(std::env::var(CHILD_DIR_ENV).unwrap_or_else(|_| {
            panic!("run by a_write_cut_short_is_rolled_back_and_writing_resumes")
        }));
    let mut original = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid, owned struct; the signal disposition change makes an
    // over-limit write fail with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut original), 0);
        let limited = libc::rlimit {
            rlim_cur: FSIZE_LIMIT,
            rlim_max: original.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limited), 0);
    }
    let config = AuditConfig {
        path: dir.clone(),
        ..AuditConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let log = AuditLog::start(&config, AuditMetrics::unregistered()).unwrap();
        let mut acknowledged = 0u64;
        let error = loop {
            match log.append(event(acknowledged)).await {
                Ok(_) => acknowledged += 1,
                Err(error) => break error,
            }
            assert!(acknowledged < 1000, "the size limit never stopped a write");
        };
        assert_eq!(error.kind(), authz::audit::FailureKind::NoSpace, "{error}");
        assert!(acknowledged > 5, "only {acknowledged} records fit");
        // Still no room: still an error, never an Ok.
        assert!(log.append(event(9999)).await.is_err());

        // The cut line was rolled back: the file ends with a complete line and holds exactly
        // the acknowledged records.
        let bytes = std::fs::read(dir.join("audit.jsonl")).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'));
        let summary = verify::verify_files(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(summary.records, acknowledged);
        assert!(summary.torn.is_empty());

        // SAFETY: as above.
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &original), 0);
        }
        log.append(event(10_000)).await.unwrap();
        let summary = verify::verify_files(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(summary.records, acknowledged + 1);
    });
}

#[test]
fn a_write_cut_short_is_rolled_back_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "file_size_limit_child",
            "--nocapture",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the child test did not run: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
