//! Several replicas' chains and their signed checkpoints, checked together:
//! `authz audit verify [--checkpoints SOURCE]... [--public-key KEY]... PATH...`.
//!
//! Files are grouped by the `replica` of their headers (schema version 2; files without one
//! belong to the only replica given, or form their own group) and each group is verified as one
//! chain. With `--public-key`, every checkpoint line in a chain must carry a valid signature by
//! one of the keys. With `--checkpoints`, every checkpoint found in the sources (a witness file,
//! a `redis-cli --raw XRANGE` dump, shipped stdout lines: any line that is a checkpoint's JSON)
//! must be signed, and for its replica:
//! - a checkpoint beyond the chain's last line: **truncated** (records missing after it);
//! - the chain's line at the checkpoint's seq has another hash: **rewritten**;
//! - checkpoints in the chain after the last one the witness holds: a **gap** (the witness
//!   stopped getting this replica's checkpoints, so a rewrite after that point could hide);
//! - a replica with witnessed checkpoints but no files: **missing**.
//!
//! Each is reported as tampering (exit 1) naming the chain's line (and the witness's line).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde_json::Value;

use super::{
    ChainFacts, ChainFile, Location, VerifyError, VerifySummary, WalkOptions, expand, order,
    print_summary, read_headers, read_line, tampered, verify_chain,
};
use crate::audit::{chain, checkpoint::PublicKeys, record::KIND_CHECKPOINT};

/// A checkpoint as a witness holds it.
#[derive(Debug, Clone)]
struct Witnessed {
    replica: String,
    seq: u64,
    hash: String,
    at: Location,
}

/// How one replica's chain compares with the witnessed checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessCheck {
    /// Witnessed checkpoints found in the chain with the same hash.
    pub matched: u64,
    /// Witnessed checkpoints older than the first file given (removed by retention).
    pub before_files: u64,
    /// The highest witnessed seq found in the chain.
    pub last_witnessed: Option<u64>,
}

/// The result for one replica.
#[derive(Debug)]
pub struct ReplicaReport {
    /// The replica id (`None`: files without one, schema version 1).
    pub replica: Option<String>,
    /// The chain's summary, or why it failed.
    pub result: Result<VerifySummary, VerifyError>,
    /// The witness comparison, when checkpoint sources were given and the chain is intact.
    pub witness: Option<WitnessCheck>,
}

/// Verifies the chains in `paths` (grouped by replica) and, with `sources`, their checkpoints
/// against the witnessed ones. `keys` checks every signature (required with `sources`).
///
/// # Errors
/// [`VerifyError::NoFiles`], [`VerifyError::Io`], or [`VerifyError::Tampered`] for a file
/// whose first line is not a header or for a witness line that was edited or is not signed.
pub fn verify_replicas(
    paths: &[PathBuf],
    sources: &[PathBuf],
    keys: Option<&PublicKeys>,
) -> Result<Vec<ReplicaReport>, VerifyError> {
    let files = read_headers(&expand(paths)?)?;
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut witnessed: BTreeMap<String, Vec<Witnessed>> = BTreeMap::new();
    for source in sources {
        for checkpoint in read_source(source, keys)? {
            witnessed
                .entry(checkpoint.replica.clone())
                .or_default()
                .push(checkpoint);
        }
    }
    let mut reports = Vec::new();
    for (replica, files) in group(files) {
        let mut list = replica
            .as_ref()
            .and_then(|r| witnessed.remove(r))
            .unwrap_or_default();
        list.sort_by_key(|c| c.seq);
        let options = WalkOptions {
            keys,
            wanted: list.iter().map(|c| c.seq).collect(),
        };
        let mut witness = None;
        let result = order(files)
            .and_then(|files| verify_chain(&files, &options))
            .and_then(|(summary, facts)| {
                if !sources.is_empty() {
                    witness = Some(compare(&summary, &facts, &list)?);
                }
                Ok(summary)
            });
        reports.push(ReplicaReport {
            replica,
            result,
            witness,
        });
    }
    for (replica, list) in witnessed {
        let Some(last) = list.iter().max_by_key(|c| c.seq) else {
            continue;
        };
        reports.push(ReplicaReport {
            replica: Some(replica.clone()),
            result: Err(VerifyError::Tampered {
                at: last.at.clone(),
                problem: format!(
                    "missing: replica {replica} has witnessed checkpoints through seq {}, but \
                     none of its audit files were given (deleted, or not collected)",
                    last.seq
                ),
            }),
            witness: None,
        });
    }
    Ok(reports)
}

/// Files grouped by replica: one group when at most one replica id appears (files without an
/// id are that replica's older, version 1, files), else one group per id.
fn group(files: Vec<ChainFile>) -> Vec<(Option<String>, Vec<ChainFile>)> {
    let ids: BTreeSet<&String> = files.iter().filter_map(|f| f.replica.as_ref()).collect();
    if ids.len() <= 1 {
        let id = ids.first().map(|id| (*id).clone());
        return vec![(id, files)];
    }
    let mut groups: BTreeMap<Option<String>, Vec<ChainFile>> = BTreeMap::new();
    for file in files {
        groups.entry(file.replica.clone()).or_default().push(file);
    }
    groups.into_iter().collect()
}

/// The checkpoints in one source: every line that is a JSON object with
/// `"kind": "checkpoint"` (other lines, such as decision records in shipped stdout or the ids
/// and field names of a `redis-cli --raw XRANGE` dump, are skipped). Each must match its own
/// hash and, with `keys`, carry a valid signature.
fn read_source(path: &Path, keys: Option<&PublicKeys>) -> Result<Vec<Witnessed>, VerifyError> {
    let io_error = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut found = Vec::new();
    while let Some(complete) = read_line(&mut reader, &mut buf).map_err(io_error)? {
        line_no += 1;
        let text = buf.trim_ascii();
        if !complete && buf.len() as u64 > super::MAX_LINE_BYTES {
            return Err(tampered(path, line_no, "line longer than 1 MiB"));
        }
        let Ok(value) = serde_json::from_slice::<Value>(text) else {
            continue;
        };
        if value.get("kind").and_then(Value::as_str) != Some(KIND_CHECKPOINT) {
            continue;
        }
        let bad = |problem: String| tampered(path, line_no, problem);
        let hash = value
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if chain::line_hash(&value) != hash {
            return Err(bad(
                "the witnessed checkpoint does not match its own hash: it was edited".into(),
            ));
        }
        if let Some(keys) = keys {
            keys.verify(&value)
                .map_err(|e| bad(format!("witnessed checkpoint {e}")))?;
        }
        let (Some(replica), Some(seq)) = (
            value.get("replica").and_then(Value::as_str),
            value.get("seq").and_then(Value::as_u64),
        ) else {
            return Err(bad("a checkpoint without replica or seq".into()));
        };
        found.push(Witnessed {
            replica: replica.to_owned(),
            seq,
            hash: hash.to_owned(),
            at: Location {
                path: path.to_owned(),
                line: line_no,
            },
        });
    }
    Ok(found)
}

/// Compares one intact chain with its replica's witnessed checkpoints (sorted by seq).
fn compare(
    summary: &VerifySummary,
    facts: &ChainFacts,
    witnessed: &[Witnessed],
) -> Result<WitnessCheck, VerifyError> {
    let mut check = WitnessCheck::default();
    let (first_seq, last_seq) = summary.seqs;
    let last_at = facts.last_at.clone().unwrap_or(Location {
        path: PathBuf::new(),
        line: 0,
    });
    for checkpoint in witnessed {
        if checkpoint.seq < first_seq {
            check.before_files += 1;
            continue;
        }
        if checkpoint.seq > last_seq {
            return Err(VerifyError::Tampered {
                at: last_at,
                problem: format!(
                    "truncated: the chain ends at seq {last_seq}, but the checkpoint witnessed \
                     at {} attests seq {}: at least {} line(s) after this one are missing",
                    checkpoint.at,
                    checkpoint.seq,
                    checkpoint.seq - last_seq
                ),
            });
        }
        match facts.found.get(&checkpoint.seq) {
            Some((hash, _)) if *hash == checkpoint.hash => {
                check.matched += 1;
                check.last_witnessed = Some(checkpoint.seq);
            }
            Some((hash, at)) => {
                return Err(VerifyError::Tampered {
                    at: at.clone(),
                    problem: format!(
                        "rewritten: this line (seq {}) has hash {hash}, but the checkpoint \
                         witnessed at {} has hash {}: the chain was rewritten at or before \
                         this line",
                        checkpoint.seq, checkpoint.at, checkpoint.hash
                    ),
                });
            }
            None => {
                return Err(VerifyError::Tampered {
                    at: checkpoint.at.clone(),
                    problem: format!(
                        "rewritten: the chain has no complete line at seq {}",
                        checkpoint.seq
                    ),
                });
            }
        }
    }
    let unwitnessed: Vec<&(u64, String, Location)> = facts
        .checkpoints
        .iter()
        .filter(|(seq, _, _)| check.last_witnessed.is_none_or(|w| *seq > w))
        .collect();
    if let Some((seq, _, at)) = unwitnessed.first() {
        return Err(VerifyError::Tampered {
            at: at.clone(),
            problem: format!(
                "gap: this checkpoint (seq {seq}) and {} later one(s) in the chain are not in \
                 the witness{}: the witness stopped getting this replica's checkpoints, so \
                 what follows is not attested",
                unwitnessed.len() - 1,
                match check.last_witnessed {
                    Some(w) => format!(" (last witnessed: seq {w})"),
                    None => " (it has none of this replica)".to_owned(),
                }
            ),
        });
    }
    Ok(check)
}

/// `authz audit verify` with checkpoint sources and public keys: one summary per replica (the
/// full summary when there is one replica); exit 0 when every chain is intact, 1 when any is
/// tampered (truncated, rewritten, a gap, a missing replica, a bad signature), 2 when a file
/// cannot be read, none is given, or the keys are missing or unreadable.
pub fn run_verify_with(paths: &[PathBuf], sources: &[PathBuf], key_paths: &[PathBuf]) -> ExitCode {
    let keys = if key_paths.is_empty() {
        None
    } else {
        match PublicKeys::read(key_paths) {
            Ok(keys) => Some(keys),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    };
    if !sources.is_empty() && keys.is_none() {
        eprintln!("error: --checkpoints needs --public-key: an unsigned checkpoint proves nothing");
        return ExitCode::from(2);
    }
    let reports = match verify_replicas(paths, sources, keys.as_ref()) {
        Ok(reports) => reports,
        Err(error) => return report_error(None, &error),
    };
    let single = reports.len() == 1;
    let (mut tampered, mut unreadable) = (false, false);
    for report in &reports {
        let name = report.replica.as_deref().unwrap_or("(none)");
        match &report.result {
            Ok(summary) if single => {
                print_summary(summary);
                print_checkpoints(summary, report.witness.as_ref(), keys.is_some());
            }
            Ok(summary) => println!(
                "replica {name}: intact: {} file(s) (file_seq {}..={}), {} decision record(s), \
                 {} checkpoint(s), seq {}..={}{}",
                summary.files,
                summary.file_seqs.0,
                summary.file_seqs.1,
                summary.records,
                summary.checkpoints,
                summary.seqs.0,
                summary.seqs.1,
                witness_text(report.witness.as_ref())
            ),
            Err(error) => {
                if !single {
                    println!("replica {name}: {}", short(error));
                }
                if report_error(report.replica.as_deref(), error) == ExitCode::from(1) {
                    tampered = true;
                } else {
                    unreadable = true;
                }
            }
        }
    }
    // Tampering outranks an unreadable file.
    match (tampered, unreadable) {
        (true, _) => ExitCode::from(1),
        (false, true) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

fn short(error: &VerifyError) -> String {
    match error {
        VerifyError::Tampered { .. } => format!("TAMPERED: {error}"),
        _ => format!("error: {error}"),
    }
}

fn report_error(replica: Option<&str>, error: &VerifyError) -> ExitCode {
    let prefix = replica
        .map(|r| format!("replica {r}: "))
        .unwrap_or_default();
    match error {
        VerifyError::Tampered { .. } => {
            eprintln!("TAMPERED: {prefix}{error}");
            ExitCode::from(1)
        }
        _ => {
            eprintln!("error: {prefix}{error}");
            ExitCode::from(2)
        }
    }
}

fn witness_text(witness: Option<&WitnessCheck>) -> String {
    match witness {
        Some(WitnessCheck {
            last_witnessed: Some(seq),
            matched,
            ..
        }) => format!(", witnessed through seq {seq} ({matched} checkpoint(s) match)"),
        Some(_) => ", no witnessed checkpoint in these files".to_owned(),
        None => String::new(),
    }
}

fn print_checkpoints(summary: &VerifySummary, witness: Option<&WitnessCheck>, signed: bool) {
    if let Some(replica) = &summary.replica {
        println!("replica: {replica}");
    }
    if summary.checkpoints == 0 && witness.is_none() {
        return;
    }
    println!(
        "checkpoints: {} in the chain ({}), {} decision record(s) after the last one",
        summary.checkpoints,
        if signed {
            "signatures verified"
        } else {
            "signatures not checked: give --public-key"
        },
        summary.uncovered
    );
    if let Some(witness) = witness {
        println!(
            "witness:{} ({} older than the files given)",
            witness_text(Some(witness)).trim_start_matches(','),
            witness.before_files
        );
    }
}
