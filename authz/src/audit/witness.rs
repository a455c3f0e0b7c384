//! Witnesses: places outside the audit directory that receive a copy of every signed checkpoint,
//! so that a later `authz audit verify --checkpoints` can prove the chain was not cut or
//! rewritten after it.
//!
//! - the **file** witness appends each checkpoint line to a file on another path (another
//!   volume; make it append-only with `chattr +a` where the file system allows) and syncs it;
//! - the **redis** witness adds it to a Redis stream: `XADD key MAXLEN ~ n * line <json>`;
//! - the **stdout** sink needs nothing here: checkpoint lines are chain lines, so a shipped
//!   stdout already carries them.
//!
//! A witness never blocks a decision: the writer hands a checkpoint over with a non-blocking
//! send to one witness thread, which delivers it to every witness in order. A witness that is
//! down keeps its checkpoints in a bounded backlog and is retried every `retry`; failures are
//! counted (`authz_audit_witness_failures_total`) and shown in `/readyz` detail, and when it is
//! back the backlog is delivered, so its checkpoints catch up.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::config::CheckpointConfig;
use super::metrics::{AuditMetrics, WitnessLabels};

/// Checkpoints a witness may owe before the oldest are dropped: over an hour of one checkpoint
/// per second. A later checkpoint covers everything an earlier one did, so a drop loses
/// granularity, not coverage.
const MAX_BACKLOG: usize = 4096;
/// Checkpoints in flight from the writer to the witness thread.
const CHANNEL_CAPACITY: usize = 1024;
/// Connect, read and write timeout towards Redis: the witness thread must not hang on a
/// black-holed server (the writer never waits for it anyway).
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` and the logs say about one witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessStatus {
    /// `file` or `redis`.
    pub witness: &'static str,
    /// Checkpoints it accepted since start.
    pub delivered: u64,
    /// Checkpoints waiting for it.
    pub pending: usize,
    /// Since when it fails, if it does.
    pub down_since: Option<SystemTime>,
    /// The last error, while it fails.
    pub last_error: Option<String>,
}

impl std::fmt::Display for WitnessStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.down_since, &self.last_error) {
            (Some(since), error) => write!(
                f,
                "audit witness {}: down for {}s ({} checkpoint(s) pending, retrying): {}",
                self.witness,
                since.elapsed().map_or(0, |d| d.as_secs()),
                self.pending,
                error.as_deref().unwrap_or("unknown error")
            ),
            (None, _) => write!(
                f,
                "audit witness {}: ok ({} checkpoint(s) delivered, {} pending)",
                self.witness, self.delivered, self.pending
            ),
        }
    }
}

/// One witness's way of storing a line.
trait Target: Send {
    fn name(&self) -> &'static str;
    /// Stores one checkpoint line (with its newline) durably.
    fn deliver(&mut self, line: &[u8]) -> Result<(), String>;
}

struct FileTarget {
    path: PathBuf,
    /// Open for appending; dropped after an error, or when `path` no longer names it, and
    /// reopened on the next try.
    file: Option<File>,
}

/// Whether `path` still names the open `file` (not moved, deleted or replaced): appending to
/// an unlinked file would witness nothing anyone can find.
fn still_named(path: &std::path::Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => (named.dev(), named.ino()) == (open.dev(), open.ino()),
        _ => false,
    }
}

impl Target for FileTarget {
    fn name(&self) -> &'static str {
        "file"
    }

    fn deliver(&mut self, line: &[u8]) -> Result<(), String> {
        let result = (|| {
            if self
                .file
                .as_ref()
                .is_some_and(|f| !still_named(&self.path, f))
            {
                self.file = None;
            }
            if self.file.is_none() {
                self.file = Some(
                    OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o640)
                        .open(&self.path)?,
                );
            }
            let Some(file) = self.file.as_mut() else {
                return Err(std::io::Error::other("witness file is not open"));
            };
            file.write_all(line)?;
            file.sync_data()
        })();
        result.map_err(|e| {
            self.file = None;
            format!("{}: {e}", self.path.display())
        })
    }
}

struct RedisTarget {
    client: redis::Client,
    /// Dropped after an error and reconnected on the next try.
    connection: Option<redis::Connection>,
    stream: String,
    maxlen: u64,
}

impl Target for RedisTarget {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn deliver(&mut self, line: &[u8]) -> Result<(), String> {
        let result = (|| {
            if self.connection.is_none() {
                let connection = self.client.get_connection_with_timeout(REDIS_TIMEOUT)?;
                connection.set_read_timeout(Some(REDIS_TIMEOUT))?;
                connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
                self.connection = Some(connection);
            }
            let Some(connection) = self.connection.as_mut() else {
                return Err(redis::RedisError::from(std::io::Error::other(
                    "no connection",
                )));
            };
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            redis::cmd("XADD")
                .arg(&self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg("*")
                .arg("line")
                .arg(line)
                .query::<String>(connection)
                .map(drop)
        })();
        result.map_err(|e| {
            self.connection = None;
            format!("redis stream {}: {e}", self.stream)
        })
    }
}

/// A witness with its backlog.
struct Slot {
    target: Box<dyn Target>,
    backlog: VecDeque<Arc<Vec<u8>>>,
    /// Not before this instant after a failure.
    retry_at: Option<Instant>,
    status: WitnessStatus,
}

impl Slot {
    fn labels(&self) -> WitnessLabels {
        WitnessLabels {
            witness: self.target.name(),
        }
    }

    fn push(&mut self, line: Arc<Vec<u8>>, metrics: &AuditMetrics) {
        if self.backlog.len() >= MAX_BACKLOG {
            self.backlog.pop_front();
            metrics.witness_dropped.get_or_create(&self.labels()).inc();
        }
        self.backlog.push_back(line);
    }

    /// Delivers the backlog in order until it is empty or the witness fails.
    fn flush(&mut self, metrics: &AuditMetrics, retry: Duration, now: Instant) {
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.retry_at = None;
        while let Some(line) = self.backlog.front() {
            match self.target.deliver(line) {
                Ok(()) => {
                    self.backlog.pop_front();
                    self.status.delivered += 1;
                    metrics
                        .witness_delivered
                        .get_or_create(&self.labels())
                        .inc();
                    if self.status.down_since.take().is_some() {
                        tracing::info!(witness = self.target.name(), "audit witness is back");
                    }
                    self.status.last_error = None;
                }
                Err(error) => {
                    metrics.witness_failures.get_or_create(&self.labels()).inc();
                    if self.status.down_since.is_none() {
                        tracing::warn!(
                            witness = self.target.name(),
                            error = %error,
                            "audit witness is down: checkpoints are kept and retried, decisions go on"
                        );
                        self.status.down_since = Some(SystemTime::now());
                    }
                    self.status.last_error = Some(error);
                    self.retry_at = Some(now + retry);
                    break;
                }
            }
        }
        self.status.pending = self.backlog.len();
        metrics
            .witness_pending
            .get_or_create(&self.labels())
            .set(self.backlog.len() as i64);
    }
}

/// The writer's handle to the witness thread.
pub(crate) struct Witnesses {
    /// Bounded and never waited on: a full channel drops the checkpoint (counted).
    sender: Option<SyncSender<Arc<Vec<u8>>>>,
    /// Joined when the writer stops, so the last checkpoint has its one chance to be delivered.
    thread: Option<JoinHandle<()>>,
    names: Vec<&'static str>,
    metrics: AuditMetrics,
}

/// Shared view of every witness's status (for `/readyz`).
pub(crate) type SharedStatus = Arc<Mutex<Vec<WitnessStatus>>>;

impl Witnesses {
    /// Starts the witness thread for the witnesses `config` names (none: `Ok(None)`).
    ///
    /// # Errors
    /// A message when the Redis URL is invalid or the thread cannot be spawned.
    pub fn start(
        config: &CheckpointConfig,
        metrics: AuditMetrics,
        status: SharedStatus,
    ) -> Result<Option<Self>, String> {
        let mut targets: Vec<Box<dyn Target>> = Vec::new();
        if let Some(path) = &config.witness_file {
            targets.push(Box::new(FileTarget {
                path: path.clone(),
                file: None,
            }));
        }
        if let Some(url) = &config.redis_url {
            targets.push(Box::new(RedisTarget {
                client: redis::Client::open(url.as_str()).map_err(|e| e.to_string())?,
                connection: None,
                stream: config.redis_stream.clone(),
                maxlen: config.redis_maxlen,
            }));
        }
        if targets.is_empty() {
            return Ok(None);
        }
        let names: Vec<&'static str> = targets.iter().map(|t| t.name()).collect();
        let slots: Vec<Slot> = targets
            .into_iter()
            .map(|target| Slot {
                status: WitnessStatus {
                    witness: target.name(),
                    delivered: 0,
                    pending: 0,
                    down_since: None,
                    last_error: None,
                },
                target,
                backlog: VecDeque::new(),
                retry_at: None,
            })
            .collect();
        *status.lock().unwrap_or_else(PoisonError::into_inner) =
            slots.iter().map(|s| s.status.clone()).collect();
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        // Retry about as often as checkpoints come, within [100 ms, 5 s].
        let retry = config
            .every
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let thread_metrics = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("authz-audit-witness".into())
            .spawn(move || run(receiver, slots, &thread_metrics, &status, retry))
            .map_err(|e| e.to_string())?;
        Ok(Some(Witnesses {
            sender: Some(sender),
            thread: Some(thread),
            names,
            metrics,
        }))
    }

    /// Hands a checkpoint line to every witness without waiting.
    pub fn send(&self, line: Vec<u8>) {
        let Some(sender) = &self.sender else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            sender.try_send(Arc::new(line))
        {
            for witness in &self.names {
                self.metrics
                    .witness_dropped
                    .get_or_create(&WitnessLabels { witness })
                    .inc();
            }
        }
    }
}

impl Drop for Witnesses {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    receiver: Receiver<Arc<Vec<u8>>>,
    mut slots: Vec<Slot>,
    metrics: &AuditMetrics,
    status: &SharedStatus,
    retry: Duration,
) {
    loop {
        let wait = slots
            .iter()
            .filter(|s| !s.backlog.is_empty())
            .map(|s| {
                s.retry_at.map_or(Duration::ZERO, |at| {
                    at.saturating_duration_since(Instant::now())
                })
            })
            .min();
        let received = match wait {
            Some(wait) => receiver.recv_timeout(wait),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let closed = match received {
            Ok(line) => {
                slots
                    .iter_mut()
                    .for_each(|s| s.push(Arc::clone(&line), metrics));
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        while let Ok(line) = receiver.try_recv() {
            slots
                .iter_mut()
                .for_each(|s| s.push(Arc::clone(&line), metrics));
        }
        let now = Instant::now();
        for slot in &mut slots {
            if closed {
                // One last try for what is owed, whatever the back-off says.
                slot.retry_at = None;
            }
            slot.flush(metrics, retry, now);
        }
        *status.lock().unwrap_or_else(PoisonError::into_inner) =
            slots.iter().map(|s| s.status.clone()).collect();
        if closed {
            for slot in slots.iter().filter(|s| !s.backlog.is_empty()) {
                tracing::warn!(
                    witness = slot.target.name(),
                    pending = slot.backlog.len(),
                    "stopping with checkpoints the witness never received"
                );
            }
            return;
        }
    }
}
