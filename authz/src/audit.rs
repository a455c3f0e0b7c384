//! Tamper-evident audit evidence: one hash-chained JSON line per decision, durable before the
//! decision leaves (DESIGN.md, step 5; the record schema is documented in `docs/audit.md`).
//!
//! How the pieces fit:
//! - [`record`]: the plain-data [`AuditEvent`] the Check pipeline fills, and the stamped
//!   [`AuditRecord`] / [`HeaderRecord`] lines the log holds. The types have no field for
//!   credentials or tensor data, so neither can reach the log.
//! - [`chain`]: the canonical encoding and SHA-256 hashing that link every line to the one before.
//! - [`writer`]: [`AuditLog`], a handle to a single writer thread fed by a bounded queue. It
//!   group-commits (drains the queue, writes once, syncs once, then answers every caller) and
//!   [`AuditLog::append`] returns only once the record is durable per [`Durability`].
//! - [`sink`]: the file sink (resume after restart, size rotation, retention) and the stdout
//!   sink; `files` holds the on-disk naming and the read-back helpers they use.
//! - [`verify`]: checks a sequence of files and names the first bad line; [`verify::run_verify`]
//!   is the `authz audit verify FILE...` entry point.
//! - [`config`]: the `[audit]` config section; [`metrics`]: the `authz_audit_*` metrics.
//!
//! What this module does *not* guarantee: a hash chain without an external anchor cannot reveal
//! that the *tail* of the log was cut off or that the whole log was rewritten; ship the stdout
//! sink (or the last hash printed by `verify`) off-node for that. A record can exist for a check
//! that was answered with an error (a write succeeded partially and the rollback failed), never
//! the reverse: an `Ok` from `append` always means the record is in every enabled sink.

pub mod chain;
pub mod checkpoint;
pub mod config;
mod files;
pub mod metrics;
pub mod record;
pub mod sink;
pub mod verify;
pub mod witness;
pub mod writer;

use std::{io, path::PathBuf, sync::Arc};

pub use checkpoint::CheckpointRecord;
pub use config::{AuditConfig, CheckpointConfig, Durability};
pub use metrics::AuditMetrics;
pub use record::{
    AuditDecision, AuditEvent, AuditPrincipal, AuditRecord, HeaderRecord, RateLimitState,
    ShadowVerdict,
};
pub use writer::{AuditLog, MustNotBlock};

/// Why a record could not be made durable. Every variant means "no evidence": the Check pipeline
/// denies the request with 503 `audit_unavailable`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The bounded queue in front of the writer is full; the caller is answered at once instead
    /// of waiting or growing memory.
    #[error("audit queue is full ({capacity} records waiting)")]
    QueueFull {
        /// The configured queue capacity.
        capacity: usize,
    },
    /// The writer thread has stopped (the log was shut down or the thread died).
    #[error("audit writer is not running")]
    Closed,
    /// Writing, syncing or opening a sink failed.
    #[error("audit {sink} sink failed ({kind}) at {path}: {source}")]
    Io {
        /// Which sink failed: `file` or `stdout`.
        sink: &'static str,
        /// The file involved (`-` for stdout).
        path: PathBuf,
        /// The failure class, also used as the metric label.
        kind: FailureKind,
        /// The operating-system error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The existing log could not be read back to continue its chain (for example its last
    /// record is unreadable or fails its own hash); nothing is appended until it can.
    #[error("cannot continue the audit chain from {path}: {message}")]
    Resume {
        /// The file that could not be resumed from.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// Another process (or another log in this one) holds the lock of this audit path: two
    /// writers must never share one chain.
    #[error("audit path is in use by another writer (lock {path} is held)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The configuration is invalid (every problem, with its field path).
    #[error("invalid audit config: {0}")]
    Config(String),
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(String),
    /// A record could not be encoded (a bug, not an environment problem).
    #[error("audit record could not be encoded: {0}")]
    Encode(String),
}

impl AuditError {
    /// The failure class, for metrics and logs.
    pub fn kind(&self) -> FailureKind {
        match self {
            AuditError::QueueFull { .. } => FailureKind::QueueFull,
            AuditError::Closed => FailureKind::Closed,
            AuditError::Io { kind, .. } => *kind,
            AuditError::Resume { .. } => FailureKind::Resume,
            AuditError::Locked { .. } => FailureKind::Locked,
            AuditError::Encode(_) | AuditError::Config(_) | AuditError::Spawn(_) => {
                FailureKind::Encode
            }
        }
    }

    /// Whether retrying later may succeed. Every write-time failure is transient: the
    /// writer reopens its sinks on the next batch, so writing resumes once the cause is gone.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            AuditError::Encode(_) | AuditError::Config(_) | AuditError::Spawn(_)
        )
    }

    pub(crate) fn io(sink: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AuditError::Io {
            sink,
            path: path.into(),
            kind: FailureKind::of(&source),
            source: Arc::new(source),
        }
    }
}

/// A bounded classification of audit failures: the `kind` label of
/// `authz_audit_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The bounded queue was full.
    QueueFull,
    /// The writer was not running.
    Closed,
    /// No space left on the device (ENOSPC), quota exceeded (EDQUOT) or file size limit
    /// reached (EFBIG).
    NoSpace,
    /// Permission denied or read-only file system.
    Permission,
    /// A path (the audit directory) does not exist.
    NotFound,
    /// Any other I/O error (EIO, a broken stdout pipe, ...).
    Io,
    /// The existing chain could not be resumed.
    Resume,
    /// Another writer holds the audit path's lock.
    Locked,
    /// A record could not be encoded.
    Encode,
}

impl FailureKind {
    fn of(error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => FailureKind::NoSpace,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => FailureKind::Permission,
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => FailureKind::NotFound,
            _ => FailureKind::Io,
        }
    }

    /// The label value as it appears in metrics and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::QueueFull => "queue_full",
            FailureKind::Closed => "closed",
            FailureKind::NoSpace => "no_space",
            FailureKind::Permission => "permission",
            FailureKind::NotFound => "not_found",
            FailureKind::Io => "io",
            FailureKind::Resume => "resume",
            FailureKind::Locked => "locked",
            FailureKind::Encode => "encode",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for FailureKind {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
