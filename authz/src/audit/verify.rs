//! Verification of an audit chain across files: `authz audit verify FILE...`.
//!
//! Files are put in order by the `file_seq` of their headers (so a shell glob in any order
//! works), then every line is checked in turn:
//! 1. it is JSON and its `hash` matches its content (else: the line was *edited*);
//! 2. its `seq` is one more than the previous line's (else: lines were *deleted*, *inserted* or
//!    *reordered*), and a file's header has the next `file_seq` (else: a *file is missing*);
//! 3. its `prev_hash` is the previous line's `hash`;
//! 4. a decision or checkpoint line names the `replica` of its file's header (else: a record
//!    was *moved* from another replica's chain, even with the hashes recomputed).
//!
//! The first failure is reported with its `file:line` and stops the check. A final line without
//! its newline is a *torn* line left by a crash in the middle of `write(2)`: it is reported
//! separately and is not tampering (its record was never acknowledged), and the chain continues
//! from the line before it.
//!
//! What cannot be detected without an external anchor: removal of whole files at the *start* of
//! the sequence (that is what retention does) or records cut from the *end*. Compare the printed
//! last hash with one kept elsewhere (the stdout sink, a previous run) for that.

mod replicas;

pub use replicas::{ReplicaReport, run_verify_with, verify_replicas};

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde_json::Value;

use super::{
    AuditRecord, CheckpointRecord, HeaderRecord, chain,
    checkpoint::PublicKeys,
    config::ACTIVE_FILE_NAME,
    record::{GENESIS_HASH, KIND_CHECKPOINT, KIND_DECISION, KIND_HEADER},
};

/// Longest line accepted; audit lines are around a kilobyte, so anything longer is not ours.
const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// A line in a file (1-based), printed as `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line number.
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// What an intact chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Files checked.
    pub files: usize,
    /// `file_seq` of the first and last file.
    pub file_seqs: (u64, u64),
    /// Decision records.
    pub records: u64,
    /// Header records.
    pub headers: u64,
    /// `time` of the first and last line.
    pub time_span: (String, String),
    /// `prev_hash` of the first line: the genesis hash, or the last hash of a file not given
    /// (one removed by retention).
    pub anchor: String,
    /// `hash` of the first line.
    pub first_hash: String,
    /// `hash` of the last complete line.
    pub last_hash: String,
    /// Torn final lines found (interrupted writes, not tampering).
    pub torn: Vec<Location>,
    /// The replica named in the headers (`None` for schema version 1 files).
    pub replica: Option<String>,
    /// Signed checkpoint lines in the chain.
    pub checkpoints: u64,
    /// `seq` of the first and last complete line.
    pub seqs: (u64, u64),
    /// Decision records after the last checkpoint in the chain (all of them when it has none):
    /// not yet attested by any signature.
    pub uncovered: u64,
}

/// What the chain walk noted for the checkpoint checks (see `replicas.rs`).
#[derive(Debug, Default)]
pub(crate) struct ChainFacts {
    /// Every checkpoint line in the chain: seq, hash, where.
    pub checkpoints: Vec<(u64, String, Location)>,
    /// The lines at the asked-for seqs: hash, where.
    pub found: HashMap<u64, (String, Location)>,
    /// The last complete line.
    pub last_at: Option<Location>,
}

/// What the chain walk checks besides the chain itself.
#[derive(Debug, Default)]
pub(crate) struct WalkOptions<'a> {
    /// Check every checkpoint line's signature against these keys.
    pub keys: Option<&'a PublicKeys>,
    /// Note the hash and place of the lines at these seqs.
    pub wanted: HashSet<u64>,
}

/// Why verification did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken: the first bad line and what is wrong with it.
    #[error("{at}: {problem}")]
    Tampered {
        /// The first bad line.
        at: Location,
        /// What is wrong.
        problem: String,
    },
    /// A file could not be read (this says nothing about tampering).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// No files were given.
    #[error("no audit files given")]
    NoFiles,
}

fn tampered(path: &Path, line: u64, problem: impl Into<String>) -> VerifyError {
    VerifyError::Tampered {
        at: Location {
            path: path.to_owned(),
            line,
        },
        problem: problem.into(),
    }
}

/// Expands directories to the audit files in them (`audit.jsonl` and `audit.jsonl.NNNNNN`),
/// and in their subdirectories (one per replica), one level deep.
pub(crate) fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        expand_dir(path, true, &mut files)?;
    }
    Ok(files)
}

fn expand_dir(path: &Path, nested: bool, files: &mut Vec<PathBuf>) -> Result<(), VerifyError> {
    {
        let io_error = |source| VerifyError::Io {
            path: path.to_owned(),
            source,
        };
        for entry in std::fs::read_dir(path).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if nested && !name.starts_with('.') && entry.path().is_dir() {
                expand_dir(&entry.path(), false, files)?;
                continue;
            }
            let rotated = name
                .strip_prefix(ACTIVE_FILE_NAME)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if name == ACTIVE_FILE_NAME || rotated {
                files.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; `Ok(None)` at the end of the file.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let read = reader.take(MAX_LINE_BYTES + 1).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(None);
    }
    Ok(Some(buf.last() == Some(&b'\n')))
}

/// One audit file and what its header says.
#[derive(Debug, Clone)]
pub(crate) struct ChainFile {
    pub file_seq: u64,
    pub path: PathBuf,
    pub replica: Option<String>,
}

/// The `file_seq` of each file's header, with the file, sorted.
fn order_files(paths: &[PathBuf]) -> Result<Vec<(u64, PathBuf)>, VerifyError> {
    let files = read_headers(paths)?;
    Ok(order(files)?
        .into_iter()
        .map(|f| (f.file_seq, f.path))
        .collect())
}

/// Sorts files by `file_seq` and rejects two files with the same number.
pub(crate) fn order(mut files: Vec<ChainFile>) -> Result<Vec<ChainFile>, VerifyError> {
    files.sort_by(|a, b| (a.file_seq, &a.path).cmp(&(b.file_seq, &b.path)));
    for pair in files.windows(2) {
        if pair[0].file_seq == pair[1].file_seq {
            return Err(tampered(
                &pair[1].path,
                1,
                format!(
                    "file_seq {} is also the header of {}",
                    pair[1].file_seq,
                    pair[0].path.display()
                ),
            ));
        }
    }
    Ok(files)
}

/// Every file's header.
pub(crate) fn read_headers(paths: &[PathBuf]) -> Result<Vec<ChainFile>, VerifyError> {
    let mut ordered = Vec::with_capacity(paths.len());
    for path in paths {
        let file = File::open(path).map_err(|source| VerifyError::Io {
            path: path.clone(),
            source,
        })?;
        let mut buf = Vec::new();
        let complete =
            read_line(&mut BufReader::new(file), &mut buf).map_err(|source| VerifyError::Io {
                path: path.clone(),
                source,
            })?;
        let header = match complete {
            Some(true) => serde_json::from_slice::<HeaderRecord>(&buf).ok(),
            _ => None,
        };
        let Some(header) = header.filter(|h| h.kind == KIND_HEADER) else {
            return Err(tampered(path, 1, "the first line is not a header record"));
        };
        ordered.push(ChainFile {
            file_seq: header.file_seq,
            path: path.clone(),
            replica: header.replica,
        });
    }
    Ok(ordered)
}

/// The chain walk's state: the last good line.
struct Tip {
    seq: u64,
    hash: String,
    file_seq: u64,
    at: Location,
}

/// Verifies the chain across `paths` (files, or directories holding `audit.jsonl*`).
///
/// # Errors
/// [`VerifyError::Tampered`] naming the first bad line, [`VerifyError::Io`] when a file cannot
/// be read, [`VerifyError::NoFiles`] when there is nothing to check.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifySummary, VerifyError> {
    let files = order(read_headers(&expand(paths)?)?)?;
    verify_chain(&files, &WalkOptions::default()).map(|(summary, _)| summary)
}

/// Verifies one chain of ordered files, with the extra checks of `options`.
pub(crate) fn verify_chain(
    files: &[ChainFile],
    options: &WalkOptions<'_>,
) -> Result<(VerifySummary, ChainFacts), VerifyError> {
    let (Some(first), Some(last)) = (files.first(), files.last()) else {
        return Err(VerifyError::NoFiles);
    };
    let mut facts = ChainFacts::default();
    let mut summary = VerifySummary {
        files: files.len(),
        file_seqs: (first.file_seq, last.file_seq),
        records: 0,
        headers: 0,
        time_span: (String::new(), String::new()),
        anchor: String::new(),
        first_hash: String::new(),
        last_hash: String::new(),
        torn: Vec::new(),
        replica: files.iter().find_map(|f| f.replica.clone()),
        checkpoints: 0,
        seqs: (0, 0),
        uncovered: 0,
    };
    let mut tip: Option<Tip> = None;
    let mut buf = Vec::new();
    for ChainFile { path, replica, .. } in files {
        let io_error = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
        let mut line_no = 0u64;
        while let Some(complete) = read_line(&mut reader, &mut buf).map_err(io_error)? {
            line_no += 1;
            if !complete {
                if buf.len() as u64 > MAX_LINE_BYTES {
                    return Err(tampered(path, line_no, "line longer than 1 MiB"));
                }
                summary.torn.push(Location {
                    path: path.clone(),
                    line: line_no,
                });
                break;
            }
            let here = Location {
                path: path.clone(),
                line: line_no,
            };
            let line = check_line(&buf, &here, tip.as_ref(), options.keys)?;
            if line.file_seq.is_none() && line.replica != *replica {
                return Err(tampered(
                    path,
                    line_no,
                    format!(
                        "replica {} in a file whose header (line 1) names replica {}: the \
                         record was moved from another replica's chain",
                        replica_name(line.replica.as_deref()),
                        replica_name(replica.as_deref())
                    ),
                ));
            }
            if tip.is_none() {
                summary.anchor = line.prev_hash.clone();
                summary.first_hash = line.hash.clone();
                summary.time_span.0 = line.time.clone();
                summary.seqs.0 = line.seq;
            }
            summary.seqs.1 = line.seq;
            match (line.file_seq, line.checkpoint) {
                (Some(_), _) => summary.headers += 1,
                (None, true) => {
                    summary.checkpoints += 1;
                    summary.uncovered = 0;
                    facts
                        .checkpoints
                        .push((line.seq, line.hash.clone(), here.clone()));
                }
                (None, false) => {
                    summary.records += 1;
                    summary.uncovered += 1;
                }
            }
            if options.wanted.contains(&line.seq) {
                facts
                    .found
                    .insert(line.seq, (line.hash.clone(), here.clone()));
            }
            facts.last_at = Some(here.clone());
            summary.time_span.1 = line.time;
            summary.last_hash = line.hash.clone();
            let file_seq = line
                .file_seq
                .or(tip.as_ref().map(|t| t.file_seq))
                .unwrap_or(0);
            tip = Some(Tip {
                seq: line.seq,
                hash: line.hash,
                file_seq,
                at: here,
            });
        }
    }
    Ok((summary, facts))
}

/// The chain fields of one checked line.
struct Line {
    seq: u64,
    time: String,
    prev_hash: String,
    hash: String,
    /// `Some` for a header.
    file_seq: Option<u64>,
    /// Whether it is a checkpoint.
    checkpoint: bool,
    /// The replica it names (`None` in schema version 1 lines).
    replica: Option<String>,
}

/// A replica id as messages print it.
fn replica_name(replica: Option<&str>) -> String {
    replica.map_or_else(|| "(none)".to_owned(), |r| format!("{r:?}"))
}

/// Checks one complete line against the tip of the chain.
fn check_line(
    bytes: &[u8],
    here: &Location,
    tip: Option<&Tip>,
    keys: Option<&PublicKeys>,
) -> Result<Line, VerifyError> {
    let bad = |problem: String| tampered(&here.path, here.line, problem);
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON record: {e}")))?;
    let stored_hash = value
        .get("hash")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if chain::line_hash(&value) != stored_hash {
        return Err(bad(
            "the hash does not match the content: the record was edited".into(),
        ));
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let line = match kind {
        KIND_HEADER => {
            let header: HeaderRecord = serde_json::from_value(value)
                .map_err(|e| bad(format!("not a valid header record: {e}")))?;
            Line {
                seq: header.seq,
                time: header.time,
                prev_hash: header.prev_hash,
                hash: header.hash,
                file_seq: Some(header.file_seq),
                checkpoint: false,
                replica: header.replica,
            }
        }
        KIND_CHECKPOINT if here.line > 1 => {
            if let Some(keys) = keys {
                keys.verify(&value)
                    .map_err(|e| bad(format!("checkpoint {e}")))?;
            }
            let checkpoint: CheckpointRecord = serde_json::from_value(value)
                .map_err(|e| bad(format!("not a valid checkpoint record: {e}")))?;
            Line {
                seq: checkpoint.seq,
                time: checkpoint.time,
                prev_hash: checkpoint.prev_hash,
                hash: checkpoint.hash,
                file_seq: None,
                checkpoint: true,
                replica: Some(checkpoint.replica),
            }
        }
        KIND_DECISION if here.line > 1 => {
            let record: AuditRecord = serde_json::from_value(value)
                .map_err(|e| bad(format!("not a valid decision record: {e}")))?;
            Line {
                seq: record.seq,
                time: record.time,
                prev_hash: record.prev_hash,
                hash: record.hash,
                file_seq: None,
                checkpoint: false,
                replica: record.replica,
            }
        }
        KIND_DECISION | KIND_CHECKPOINT => {
            return Err(bad("the first line is not a header record".into()));
        }
        other => return Err(bad(format!("unknown record kind {other:?}"))),
    };
    let Some(tip) = tip else {
        if line.file_seq == Some(0) && line.prev_hash != GENESIS_HASH {
            return Err(bad("file 0 does not start from the genesis hash".into()));
        }
        return Ok(line);
    };
    if let Some(file_seq) = line.file_seq {
        let expected = tip.file_seq + 1;
        if file_seq > expected {
            return Err(bad(format!(
                "file_seq {file_seq} follows file_seq {}: audit file(s) {expected}..={} are \
                 missing from the sequence",
                tip.file_seq,
                file_seq - 1
            )));
        }
        if file_seq < expected {
            return Err(bad(format!(
                "file_seq {file_seq} follows file_seq {}: headers are out of order",
                tip.file_seq
            )));
        }
    }
    let expected_seq = tip.seq + 1;
    if line.seq > expected_seq {
        return Err(bad(format!(
            "seq {} follows seq {} ({}): {} record(s) missing before this line (deleted, or moved elsewhere)",
            line.seq,
            tip.seq,
            tip.at,
            line.seq - expected_seq
        )));
    }
    if line.seq < expected_seq {
        return Err(bad(format!(
            "seq {} follows seq {} ({}): a record was inserted or records were reordered",
            line.seq, tip.seq, tip.at
        )));
    }
    if line.prev_hash != tip.hash {
        return Err(bad(format!(
            "prev_hash does not match the hash of the previous line ({}): a record was \
             replaced or inserted",
            tip.at
        )));
    }
    Ok(line)
}

/// Every decision record in `paths` (files, or directories holding `audit.jsonl*`), in chain
/// order, after verifying the chain. Torn final lines are skipped. Meant for tests and tools
/// that check that each acknowledged decision (by `decision_id`) has its record.
///
/// # Errors
/// As [`verify_files`].
pub fn read_decision_records(paths: &[PathBuf]) -> Result<Vec<AuditRecord>, VerifyError> {
    verify_files(paths)?;
    let files = order_files(&expand(paths)?)?;
    let mut records = Vec::new();
    let mut buf = Vec::new();
    for (_, path) in &files {
        let io_error = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
        while let Some(true) = read_line(&mut reader, &mut buf).map_err(io_error)? {
            if let Ok(record) = serde_json::from_slice::<AuditRecord>(&buf) {
                records.push(record);
            }
        }
    }
    Ok(records)
}

/// The `authz audit verify FILE...` command: prints a summary on stdout and exits 0 when the
/// chain is intact (torn final lines are warned about on stderr, and are not tampering); prints
/// the first bad line on stderr and exits 1 when it is not; exits 2 when a file cannot be read
/// or none is given. [`run_verify_with`] adds checkpoints, keys and several replicas.
pub fn run_verify(paths: &[PathBuf]) -> ExitCode {
    run_verify_with(paths, &[], &[])
}

/// Prints the summary of one intact chain (the output of a single-replica `verify`).
fn print_summary(summary: &VerifySummary) {
    println!(
        "intact: {} file(s) (file_seq {}..={}), {} decision record(s), {} header(s)",
        summary.files, summary.file_seqs.0, summary.file_seqs.1, summary.records, summary.headers
    );
    println!(
        "time span: {} .. {}",
        summary.time_span.0, summary.time_span.1
    );
    println!("anchor (prev_hash of the first line): {}", summary.anchor);
    println!("first hash: {}", summary.first_hash);
    println!("last hash: {}", summary.last_hash);
    for torn in &summary.torn {
        eprintln!(
            "warning: torn final line at {torn}: a write interrupted by a crash, not \
                     tampering (its record was never acknowledged)"
        );
    }
}
