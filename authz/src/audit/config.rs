//! The `[audit]` configuration section and its validation.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::config::ConfigProblem;

/// Default audit location: a directory, so rotated files sit beside the active one.
pub const DEFAULT_PATH: &str = "audit/";
/// 64 MiB per file keeps one file quick to verify and to ship, yet rotates rarely (a record is
/// about 600 bytes, so roughly 100 000 decisions per file).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Rotated files kept besides the active one; older ones are deleted after rotation.
pub const DEFAULT_RETENTION: u32 = 10;
/// Records that may wait for the writer. Large enough to absorb a burst during one `fsync`
/// (a few milliseconds at tens of thousands of checks per second), small enough that a stuck
/// disk turns into fast 503s rather than memory growth.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// The access reason is free text from the caller: cap it so one request cannot bloat the log.
pub const DEFAULT_MAX_REASON_BYTES: usize = 500;

/// Smallest accepted rotation size: a file must hold its header and at least a few records.
pub const MIN_MAX_FILE_BYTES: u64 = 4096;
/// Largest accepted queue: a bound on the memory the queue may hold.
pub const MAX_QUEUE_CAPACITY: usize = 1_000_000;
/// Largest accepted access-reason cap.
pub const MAX_REASON_BYTES_LIMIT: usize = 64 * 1024;

/// A checkpoint every 1000 decision records: at ~600 bytes a record, a checkpoint per ~600 KB of
/// log, so a truncation can hide at most that much, while signing (tens of microseconds) stays
/// far below 0.1% of the writer's time.
pub const DEFAULT_CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// ...or every second when fewer records come: an attacker who cuts the tail can hide at most
/// about a second of decisions from a verifier holding the witness.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Bounds of `every_records`: one checkpoint per record at most (tests), one per million at
/// least (beyond that a truncation could hide too much).
pub const CHECKPOINT_EVERY_RECORDS_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
/// Bounds of `every`.
pub const CHECKPOINT_EVERY_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(3600);
/// Redis stream holding the checkpoints of every replica.
pub const DEFAULT_REDIS_STREAM: &str = "authz:audit:checkpoints";
/// Approximate length the Redis stream is trimmed to (`XADD ... MAXLEN ~ n`): a day of one
/// checkpoint per second from one replica is 86 400 entries of ~400 bytes.
pub const DEFAULT_REDIS_MAXLEN: u64 = 1_000_000;

/// When [`crate::audit::AuditLog::append`] may return `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After `fdatasync(2)` of the file: the record survives a power loss. Group commit makes
    /// one sync serve every record queued meanwhile.
    #[default]
    Fsync,
    /// After `write(2)`: the record survives a crash of authz, not of the machine.
    Write,
}

/// The `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A directory (the active file is `audit.jsonl` inside it) or the path of the active file.
    /// A path that exists as a directory or ends with `/` is a directory, and is created when
    /// missing; the parent of a file path must exist. Rotated files are the active file's name
    /// with `.NNNNNN` (the file sequence number) appended.
    pub path: PathBuf,
    /// When a record counts as written.
    pub durability: Durability,
    /// Rotate the file once it reaches this size.
    pub max_file_bytes: u64,
    /// Rotated files to keep (0 keeps only the active file).
    pub retention: u32,
    /// Write records to the file sink.
    pub file: bool,
    /// Also write every line to stdout (for log shipping in containers).
    pub stdout: bool,
    /// Records that may wait for the writer before `append` fails fast.
    pub queue_capacity: usize,
    /// Longest access reason kept, in bytes; longer reasons are cut at a character boundary and
    /// marked `access_reason_truncated`.
    pub max_reason_bytes: usize,
    /// This replica's id, written into every line (`replica`) so that the chains of several
    /// replicas can be told apart and verified together. Empty: `$HOSTNAME`, else the host name
    /// (the pod name in Kubernetes).
    pub replica: String,
    /// `[audit.checkpoint]`: signed checkpoints and their witnesses; off when absent.
    pub checkpoint: Option<CheckpointConfig>,
}

/// The `[audit.checkpoint]` section: a signed statement of the chain's state (replica, file,
/// seq, head hash, time, key id) written into the chain every `every_records` records or
/// `every`, and sent to every configured witness.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The Ed25519 signing key (PKCS#8 PEM, as `authz dev-init` writes it). Must not be inside
    /// the audit directory: whoever can rewrite the log must not find the key beside it.
    pub signing_key: Option<PathBuf>,
    /// Name of an environment variable holding the PEM instead (a Kubernetes secret).
    pub signing_key_env: Option<String>,
    /// A checkpoint after at most this many decision records.
    pub every_records: u64,
    /// A checkpoint at most this long after the first record it does not cover yet.
    #[serde(deserialize_with = "crate::config::duration::deserialize")]
    pub every: Duration,
    /// Witness: an append-only file on another path (another volume), one checkpoint line each.
    pub witness_file: Option<PathBuf>,
    /// Witness: a Redis server whose stream `redis_stream` gets every checkpoint.
    pub redis_url: Option<String>,
    /// The Redis stream key.
    pub redis_stream: String,
    /// `MAXLEN ~` of the Redis stream.
    pub redis_maxlen: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            signing_key: None,
            signing_key_env: None,
            every_records: DEFAULT_CHECKPOINT_EVERY_RECORDS,
            every: DEFAULT_CHECKPOINT_EVERY,
            witness_file: None,
            redis_url: None,
            redis_stream: DEFAULT_REDIS_STREAM.to_owned(),
            redis_maxlen: DEFAULT_REDIS_MAXLEN,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from(DEFAULT_PATH),
            durability: Durability::default(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            retention: DEFAULT_RETENTION,
            file: true,
            stdout: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_reason_bytes: DEFAULT_MAX_REASON_BYTES,
            replica: String::new(),
            checkpoint: None,
        }
    }
}

impl AuditConfig {
    /// Checks every field and returns every problem at once, each with its field path under
    /// `prefix` (normally `"audit"`).
    ///
    /// # Errors
    /// The list of problems when any field is out of range.
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(ConfigProblem::new(format!("{prefix}.{field}"), message))
        };
        if self.file && self.path.as_os_str().is_empty() {
            problem("path", "must not be empty when the file sink is on".into());
        }
        if !self.file && !self.stdout {
            problem(
                "file",
                "at least one sink must be on (`file = true` or `stdout = true`): decisions \
                 need evidence"
                    .into(),
            );
        }
        if self.max_file_bytes < MIN_MAX_FILE_BYTES {
            problem(
                "max_file_bytes",
                format!(
                    "must be at least {MIN_MAX_FILE_BYTES}, got {}",
                    self.max_file_bytes
                ),
            );
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            problem(
                "queue_capacity",
                format!(
                    "must be between 1 and {MAX_QUEUE_CAPACITY}, got {}",
                    self.queue_capacity
                ),
            );
        }
        // At least 4 bytes so any single UTF-8 character fits.
        if self.max_reason_bytes < 4 || self.max_reason_bytes > MAX_REASON_BYTES_LIMIT {
            problem(
                "max_reason_bytes",
                format!(
                    "must be between 4 and {MAX_REASON_BYTES_LIMIT}, got {}",
                    self.max_reason_bytes
                ),
            );
        }
        if self.replica.len() > 253
            || !self
                .replica
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            problem(
                "replica",
                "must match [A-Za-z0-9._-]{0,253} (empty: the host name)".into(),
            );
        }
        if let Some(checkpoint) = &self.checkpoint {
            self.validate_checkpoint(checkpoint, &mut problem);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn validate_checkpoint(&self, c: &CheckpointConfig, problem: &mut impl FnMut(&str, String)) {
        match (&c.signing_key, &c.signing_key_env) {
            (None, None) => problem(
                "checkpoint.signing_key",
                "a signing key is required (`signing_key` or `signing_key_env`)".into(),
            ),
            (Some(_), Some(_)) => problem(
                "checkpoint.signing_key_env",
                "give `signing_key` or `signing_key_env`, not both".into(),
            ),
            _ => {}
        }
        let audit_dir = self
            .directory()
            .unwrap_or_else(|| super::files::parent_dir(&self.path).to_owned());
        let inside = |path: &PathBuf| {
            let dir = audit_dir
                .canonicalize()
                .unwrap_or_else(|_| audit_dir.clone());
            let parent = super::files::parent_dir(path);
            let parent = parent.canonicalize().unwrap_or_else(|_| parent.to_owned());
            self.file && parent.starts_with(&dir)
        };
        for (field, path) in [
            ("checkpoint.signing_key", &c.signing_key),
            ("checkpoint.witness_file", &c.witness_file),
        ] {
            if let Some(path) = path
                && inside(path)
            {
                problem(
                    field,
                    format!(
                        "{} is inside the audit directory {}: whoever can rewrite the log \
                         could reach it too; use another path (another volume)",
                        path.display(),
                        audit_dir.display()
                    ),
                );
            }
        }
        if !CHECKPOINT_EVERY_RECORDS_RANGE.contains(&c.every_records) {
            problem(
                "checkpoint.every_records",
                format!(
                    "must be between {} and {}, got {}",
                    CHECKPOINT_EVERY_RECORDS_RANGE.start(),
                    CHECKPOINT_EVERY_RECORDS_RANGE.end(),
                    c.every_records
                ),
            );
        }
        if !CHECKPOINT_EVERY_RANGE.contains(&c.every) {
            problem(
                "checkpoint.every",
                format!("must be between 10ms and 1h, got {:?}", c.every),
            );
        }
        if c.redis_stream.is_empty() {
            problem("checkpoint.redis_stream", "must not be empty".into());
        }
        if c.redis_maxlen == 0 {
            problem("checkpoint.redis_maxlen", "must be at least 1".into());
        }
        if let Some(url) = &c.redis_url
            && let Err(error) = redis::Client::open(url.as_str())
        {
            problem("checkpoint.redis_url", format!("not a Redis URL: {error}"));
        }
    }

    /// The replica id written into every line: `replica`, else `$HOSTNAME`, else the host name,
    /// else `authz`.
    pub fn replica_id(&self) -> String {
        if !self.replica.is_empty() {
            return self.replica.clone();
        }
        let valid = |id: &str| {
            !id.is_empty()
                && id.len() <= 253
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if let Ok(host) = std::env::var("HOSTNAME")
            && valid(&host)
        {
            return host;
        }
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into a buffer we own.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(host) = std::str::from_utf8(&buf[..end])
                && valid(host)
            {
                return host.to_owned();
            }
        }
        "authz".to_owned()
    }

    /// The active file: `path` itself, or `path/audit.jsonl` when `path` is a directory.
    pub fn active_file(&self) -> PathBuf {
        match self.directory() {
            Some(dir) => dir.join(ACTIVE_FILE_NAME),
            None => self.path.clone(),
        }
    }

    /// `path` when it names a directory (it exists as one, or ends with `/`).
    pub fn directory(&self) -> Option<PathBuf> {
        let as_text = self.path.to_string_lossy();
        (as_text.ends_with('/') || self.path.is_dir()).then(|| self.path.clone())
    }
}

/// Name of the active file when `path` is a directory.
pub const ACTIVE_FILE_NAME: &str = "audit.jsonl";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fsync() {
        let config: AuditConfig = toml::from_str("").unwrap();
        assert_eq!(config, AuditConfig::default());
        assert_eq!(config.durability, Durability::Fsync);
        config.validate("audit").unwrap();
    }

    #[test]
    fn parses_every_field() {
        let config: AuditConfig = toml::from_str(
            r#"path = "/var/log/authz/"
durability = "write"
max_file_bytes = 1048576
retention = 3
file = true
stdout = true
queue_capacity = 16
max_reason_bytes = 100
"#,
        )
        .unwrap();
        assert_eq!(config.durability, Durability::Write);
        assert_eq!(config.retention, 3);
        assert_eq!(
            config.active_file(),
            PathBuf::from("/var/log/authz/audit.jsonl")
        );
    }

    #[test]
    fn unknown_fields_and_modes_are_rejected() {
        let err = toml::from_str::<AuditConfig>("fsync = true").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = toml::from_str::<AuditConfig>("durability = \"none\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem_with_its_field() {
        let config = AuditConfig {
            file: false,
            stdout: false,
            max_file_bytes: 10,
            queue_capacity: 0,
            max_reason_bytes: 1,
            ..AuditConfig::default()
        };
        let problems = config.validate("audit").unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            fields,
            [
                "audit.file",
                "audit.max_file_bytes",
                "audit.queue_capacity",
                "audit.max_reason_bytes"
            ]
        );
        assert!(
            problems[1]
                .to_string()
                .starts_with("audit.max_file_bytes: must be at least")
        );
    }
}
