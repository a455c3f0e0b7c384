//! The `[audit]` configuration section and its validation.

use std::path::PathBuf;

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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
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
