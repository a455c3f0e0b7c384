//! `authz audit verify`: an intact chain passes with a summary; every kind of tampering fails
//! at the first bad `file:line`; a torn final line is reported as a tear, not tampering.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use authz::audit::{
    AuditConfig, AuditDecision, AuditEvent, AuditLog, AuditMetrics, AuditRecord, Durability, chain,
    verify::{self, VerifyError},
};

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        decision_id: uuid::Uuid::now_v7(),
        request_id: Some(format!("req-{n}")),
        trace_id: None,
        principal: None,
        model: Some("resnet50".into()),
        version: None,
        action: "infer".into(),
        decision: AuditDecision::Deny,
        status: 401,
        reason: "unauthenticated".into(),
        policy_ids: vec![],
        access_reason: None,
        rate_limit: None,
        source_ip: Some("192.0.2.7".parse().unwrap()),
        latency: Duration::from_micros(80),
        request_time: None,
        shadow: None,
    }
}

/// A log of 40 records rotated over several small files; returns the directory and the files
/// oldest first.
async fn fixture() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        path: dir.path().to_owned(),
        durability: Durability::Write,
        max_file_bytes: 4096,
        retention: 100,
        ..AuditConfig::default()
    };
    let log = AuditLog::start(&config, AuditMetrics::unregistered()).unwrap();
    for n in 0..40 {
        log.append(event(n)).await.unwrap();
    }
    log.shutdown();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.to_str().unwrap().parse::<u64>().is_ok())
        })
        .collect();
    files.sort();
    files.push(dir.path().join("audit.jsonl"));
    assert!(files.len() >= 4, "{files:?}");
    (dir, files)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Asserts that verification of `dir` fails at `path:line` with a problem mentioning `what`,
/// and that the command exits 1.
fn assert_tampered_at(dir: &Path, path: &Path, line: u64, what: &str) {
    match verify::verify_files(&[dir.to_owned()]) {
        Err(VerifyError::Tampered { at, problem }) => {
            assert_eq!((at.path.as_path(), at.line), (path, line), "{problem}");
            assert!(problem.contains(what), "expected {what:?} in {problem:?}");
        }
        other => panic!(
            "expected tampering at {}:{line}, got {other:?}",
            path.display()
        ),
    }
    assert_eq!(verify::run_verify(&[dir.to_owned()]), ExitCode::from(1));
}

#[tokio::test]
async fn an_intact_rotated_chain_verifies_with_a_summary() {
    let (dir, files) = fixture().await;
    // `authz audit verify DIR/*`: the shell glob's order does not matter (files are put in
    // sequence by their headers) and the hidden lock file is not picked up.
    let mut globbed: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    globbed.sort();
    assert_eq!(verify::verify_files(&globbed).unwrap().records, 40);
    let mut shuffled = files.clone();
    shuffled.reverse();
    let summary = verify::verify_files(&shuffled).unwrap();
    assert_eq!(summary.files, files.len());
    assert_eq!(summary.records, 40);
    assert_eq!(summary.headers, files.len() as u64);
    assert_eq!(summary.file_seqs, (0, files.len() as u64 - 1));
    assert_eq!(summary.anchor, "0".repeat(64));
    assert!(summary.torn.is_empty());
    let last_line = read_lines(files.last().unwrap()).pop().unwrap();
    let last: AuditRecord = serde_json::from_str(&last_line).unwrap();
    assert_eq!(summary.last_hash, last.hash);
    assert_eq!(summary.time_span.1, last.time);
    assert!(summary.time_span.0 <= summary.time_span.1);
    assert_eq!(
        verify::run_verify(&[dir.path().to_owned()]),
        ExitCode::SUCCESS
    );
}

#[tokio::test]
async fn an_edited_record_is_named() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[1]);
    lines[2] = lines[2].replace("\"status\":401", "\"status\":200");
    write_lines(&files[1], &lines);
    assert_tampered_at(dir.path(), &files[1], 3, "edited");
}

#[tokio::test]
async fn an_edited_and_rehashed_record_breaks_the_next_link() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[1]);
    let mut record: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
    record.decision = AuditDecision::Allow;
    record.status = 200;
    let forged = chain::seal(&mut record).unwrap();
    lines[2] = String::from_utf8(forged).unwrap().trim_end().to_owned();
    write_lines(&files[1], &lines);
    assert_tampered_at(dir.path(), &files[1], 4, "prev_hash does not match");
}

#[tokio::test]
async fn a_deleted_record_is_named() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[2]);
    lines.remove(3);
    write_lines(&files[2], &lines);
    assert_tampered_at(dir.path(), &files[2], 4, "1 record(s) missing");
}

#[tokio::test]
async fn an_inserted_forged_record_is_named() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[1]);
    // A well-formed record that links to line 2 and carries a valid hash of its own.
    let previous: AuditRecord = serde_json::from_str(&lines[1]).unwrap();
    let mut forged: AuditRecord = serde_json::from_str(&lines[2]).unwrap();
    forged.prev_hash = previous.hash.clone();
    forged.seq = previous.seq + 1;
    forged.decision = AuditDecision::Allow;
    forged.status = 200;
    let forged = chain::seal(&mut forged).unwrap();
    lines.insert(2, String::from_utf8(forged).unwrap().trim_end().to_owned());
    write_lines(&files[1], &lines);
    // The forgery itself links correctly; the original record after it no longer does.
    assert_tampered_at(
        dir.path(),
        &files[1],
        4,
        "inserted or records were reordered",
    );
}

#[tokio::test]
async fn reordered_records_are_named() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[0]);
    lines.swap(2, 3);
    write_lines(&files[0], &lines);
    assert_tampered_at(dir.path(), &files[0], 3, "seq 3 follows seq 1");
}

#[tokio::test]
async fn a_missing_rotated_file_is_named() {
    let (dir, files) = fixture().await;
    std::fs::remove_file(&files[1]).unwrap();
    assert_tampered_at(dir.path(), &files[2], 1, "audit file(s) 1..=1 are missing");
}

#[tokio::test]
async fn a_missing_header_is_named() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[2]);
    lines.remove(0);
    write_lines(&files[2], &lines);
    assert_tampered_at(dir.path(), &files[2], 1, "not a header");
}

#[tokio::test]
async fn a_torn_final_line_is_reported_as_a_tear_not_tampering() {
    let (dir, files) = fixture().await;
    let active = files.last().unwrap();
    let text = std::fs::read_to_string(active).unwrap();
    // Cut the last line in the middle, as a crash during write(2) leaves it.
    let cut = text.len() - 40;
    std::fs::write(active, &text[..cut]).unwrap();
    let line_count = text.lines().count() as u64;

    let summary = verify::verify_files(&[dir.path().to_owned()]).unwrap();
    assert_eq!(summary.records, 39);
    assert_eq!(summary.torn.len(), 1);
    assert_eq!(summary.torn[0].path, *active);
    assert_eq!(summary.torn[0].line, line_count);
    assert_eq!(
        verify::run_verify(&[dir.path().to_owned()]),
        ExitCode::SUCCESS
    );
}

#[tokio::test]
async fn a_line_without_a_newline_before_more_lines_is_tampering() {
    let (dir, files) = fixture().await;
    let mut lines = read_lines(&files[0]);
    let joined = format!("{}{}", lines[2], lines[3]);
    lines.splice(2..4, [joined]);
    write_lines(&files[0], &lines);
    assert_tampered_at(dir.path(), &files[0], 3, "not a JSON record");
}

#[test]
fn unreadable_or_absent_input_is_not_called_tampering() {
    assert!(matches!(
        verify::verify_files(&[]),
        Err(VerifyError::NoFiles)
    ));
    let missing = PathBuf::from("/nonexistent/audit.jsonl");
    assert!(matches!(
        verify::verify_files(std::slice::from_ref(&missing)),
        Err(VerifyError::Io { .. })
    ));
    assert_eq!(verify::run_verify(&[missing]), ExitCode::from(2));
}
