//! [`AuditLog`]: the handle the Check pipeline appends through, and the single writer thread
//! behind it that group-commits records.
//!
//! Why a dedicated OS thread rather than a tokio task: every step of a commit is blocking file
//! I/O (`write(2)`, `fdatasync(2)`, `rename(2)`). Callers wait on a oneshot channel, so no tokio
//! worker blocks on a batch.
//!
//! Group commit: the thread sleeps until one record is queued, then takes everything else
//! already queued (up to the queue capacity), stamps and hashes them in order, writes them with
//! one `write(2)`, syncs once, and answers every caller. While it syncs, new records queue up
//! and form the next batch, so under load one `fdatasync` serves many checks.
//!
//! Alone, a check commits its own record: when no other append is in flight and the writer is
//! free, the calling thread writes and syncs the one record itself instead of waking the writer
//! thread and being woken back (two thread hand-offs, measured by `make bench` at c=1). Only on
//! a multi-thread runtime with at least two workers, so the other worker keeps answering while
//! this one waits on the disk; at most one caller commits inline at a time (it holds the writer
//! lock), and every other append takes the queue. Durability is the same on both paths: the
//! answer comes after the record is synced.

use std::{
    io::Write,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use tokio::sync::{mpsc, oneshot};

mod checkpointing;
mod lifecycle;

use checkpointing::{Checkpointer, spawn_ticker};

use std::time::{Duration, Instant};

use super::{
    AuditConfig, AuditError, AuditEvent, AuditMetrics, AuditRecord, HeaderRecord, chain,
    checkpoint::{CheckpointRecord, CheckpointSigner},
    config::CheckpointConfig,
    record::{self, GENESIS_HASH, KIND_CHECKPOINT, KIND_HEADER, SCHEMA_VERSION},
    sink::{FileSink, Resume, StreamSink},
    witness::{SharedStatus, WitnessStatus, Witnesses},
};

/// Where a record's answer goes.
type Reply = oneshot::Sender<Result<AuditRecord, AuditError>>;

/// `writer` field of header records.
const WRITER_NAME: &str = concat!("authz/", env!("CARGO_PKG_VERSION"));

/// What the writer thread is asked to do.
// Every queue slot holds a record anyway; boxing it would cost an allocation per decision.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// One queued record and where its answer goes.
    Record {
        event: AuditEvent,
        /// Answers the waiting check once the record's batch is written (and synced, per
        /// durability).
        reply: oneshot::Sender<Result<AuditRecord, AuditError>>,
    },
    /// Sent by the ticker thread: write a checkpoint if one is due by time (the writer would
    /// otherwise sleep on an idle queue with records not yet covered).
    Tick,
    /// Sent by [`AuditLog::close`]: write what is queued, the closing checkpoint, hand it to
    /// the witnesses and wait for their last delivery, then stop (later appends fail `Closed`).
    Close,
}

/// A handle to the audit log; cheap to clone, shared by every request.
///
/// The writer thread stops once every handle is dropped, or [`AuditLog::close`] is called,
/// after answering what was queued.
/// Records acknowledged with `Ok` are already durable, so no explicit flush is needed on
/// shutdown.
#[derive(Clone)]
pub struct AuditLog {
    /// Bounded queue to the writer thread: `try_send` fails fast when full.
    queue: mpsc::Sender<Job>,
    /// Queue capacity, for the error message.
    capacity: usize,
    metrics: AuditMetrics,
    /// The writer thread, joined by [`AuditLog::shutdown`].
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Set by the writer while its last batch failed; cleared by the next success.
    failing: Arc<AtomicU64>,
    /// Written by the witness thread, read by `/readyz`.
    witness_status: SharedStatus,
    /// The sinks and chain tip: locked by the writer thread for each batch, and by a caller
    /// committing its own record inline (see the module docs).
    writer: Arc<Mutex<Writer>>,
    /// Appends in progress on every handle; an append that finds none other may commit inline.
    appending: Arc<AtomicUsize>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer thread for a validated `config`, with stdout as the stream sink when
    /// `config.stdout` is on. The file is opened lazily by the first batch, so an unwritable
    /// path shows as `append` errors (and 503s), and heals by itself once writable.
    ///
    /// # Errors
    /// When the configuration is invalid or the thread cannot be spawned.
    pub fn start(config: &AuditConfig, metrics: AuditMetrics) -> Result<Self, AuditError> {
        let stream: Option<Box<dyn Write + Send>> = if config.stdout {
            Some(Box::new(std::io::stdout()))
        } else {
            None
        };
        Self::start_with_stream(config, metrics, stream)
    }

    /// Like [`AuditLog::start`], with `stream` in place of stdout (for tests and embedding); the
    /// `stdout` flag of `config` is ignored.
    ///
    /// # Errors
    /// When the configuration is invalid or the thread cannot be spawned.
    pub fn start_with_stream(
        config: &AuditConfig,
        metrics: AuditMetrics,
        stream: Option<Box<dyn Write + Send>>,
    ) -> Result<Self, AuditError> {
        let mut check = config.clone();
        check.stdout = stream.is_some();
        if let Err(problems) = check.validate("audit") {
            return Err(AuditError::Config(crate::config::problem::join(&problems)));
        }
        let file = config.file.then(|| {
            FileSink::new(
                config.active_file(),
                config.directory(),
                config.durability,
                config.max_file_bytes,
                config.retention,
            )
        });
        let mut writer = Writer::new(
            file,
            stream.map(StreamSink::new),
            config.max_reason_bytes,
            metrics.clone(),
        );
        writer.replica = Some(config.replica_id());
        let witness_status = SharedStatus::default();
        if let Some(checkpoint) = &config.checkpoint {
            writer.checkpoints = Some(Checkpointer::start(
                checkpoint,
                metrics.clone(),
                Arc::clone(&witness_status),
            )?);
        }
        let mut log = Self::spawn(writer, config.queue_capacity, metrics)?;
        log.witness_status = witness_status;
        Ok(log)
    }

    /// Like [`AuditLog::start_discarding_for_benchmarks`], with signed checkpoints per
    /// `checkpoint` (witnesses included): the cost of checkpointing without the cost of I/O.
    /// For benchmarks only.
    ///
    /// # Errors
    /// When the signing key cannot be loaded or a thread cannot be spawned.
    #[doc(hidden)]
    pub fn start_discarding_with_checkpoints_for_benchmarks(
        queue_capacity: usize,
        metrics: AuditMetrics,
        checkpoint: &CheckpointConfig,
    ) -> Result<Self, AuditError> {
        let mut writer = Writer::new(
            None,
            Some(StreamSink::new(Box::new(std::io::sink()))),
            super::config::DEFAULT_MAX_REASON_BYTES,
            metrics.clone(),
        );
        writer.replica = Some("bench".to_owned());
        writer.checkpoints = Some(Checkpointer::start(
            checkpoint,
            metrics.clone(),
            SharedStatus::default(),
        )?);
        Self::spawn(writer, queue_capacity.max(1), metrics)
    }

    /// A log that stamps and hashes records exactly like a real one but writes them nowhere.
    /// For benchmarks only (measuring the cost of the audit I/O): not reachable from config,
    /// because a decision without evidence must never be served.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    #[doc(hidden)]
    pub fn start_discarding_for_benchmarks(
        queue_capacity: usize,
        metrics: AuditMetrics,
    ) -> Result<Self, AuditError> {
        let writer = Writer::new(
            None,
            Some(StreamSink::new(Box::new(std::io::sink()))),
            super::config::DEFAULT_MAX_REASON_BYTES,
            metrics.clone(),
        );
        Self::spawn(writer, queue_capacity.max(1), metrics)
    }

    fn spawn(writer: Writer, capacity: usize, metrics: AuditMetrics) -> Result<Self, AuditError> {
        let (queue, receiver) = mpsc::channel(capacity);
        let failing = Arc::clone(&writer.failing);
        if let Some(checkpoints) = &writer.checkpoints {
            spawn_ticker(queue.downgrade(), checkpoints.every)?;
        }
        let writer = Arc::new(Mutex::new(writer));
        let shared = Arc::clone(&writer);
        let thread = std::thread::Builder::new()
            .name("authz-audit-writer".into())
            .spawn(move || Writer::run(&shared, receiver, capacity))
            .map_err(|e| AuditError::Spawn(e.to_string()))?;
        Ok(AuditLog {
            queue,
            capacity,
            metrics,
            thread: Arc::new(Mutex::new(Some(thread))),
            failing,
            witness_status: SharedStatus::default(),
            writer,
            appending: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The writer, locked, when the calling append may commit its record inline: it is the only
    /// append in flight, the writer is free, and blocking here cannot stall the runtime (module
    /// docs).
    fn inline_writer(&self) -> Option<std::sync::MutexGuard<'_, Writer>> {
        if self.appending.load(Ordering::Acquire) != 1 || !may_block_here() {
            return None;
        }
        let writer = self.writer.try_lock().ok()?;
        // A closed log (the writer thread has written its closing checkpoint) takes no record.
        (!self.queue.is_closed()).then_some(writer)
    }

    /// Queues `event` and waits until its record is durable in every enabled sink, per the
    /// durability mode; returns the stamped record.
    ///
    /// If the future is dropped after the event was queued, the record is still written.
    ///
    /// # Errors
    /// [`AuditError::QueueFull`] at once when the queue is full, [`AuditError::Closed`] when
    /// the writer is gone, or the write error of the batch the record was in. On any error the
    /// record is not in the chain and the caller must deny (503 `audit_unavailable`).
    pub async fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        let _appending = InFlight::enter(&self.appending);
        if let Some(mut writer) = self.inline_writer() {
            let (reply, mut answer) = oneshot::channel();
            writer.commit(vec![(event, reply)]);
            drop(writer);
            self.metrics.inline_commits.inc();
            return answer.try_recv().unwrap_or(Err(AuditError::Closed));
        }
        let (reply, answer) = oneshot::channel();
        // Counted before sending so the writer's decrement never runs first.
        self.metrics.queue_depth.inc();
        if let Err(error) = self.queue.try_send(Job::Record { event, reply }) {
            self.metrics.queue_depth.dec();
            let error = match error {
                mpsc::error::TrySendError::Full(_) => AuditError::QueueFull {
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => AuditError::Closed,
            };
            self.metrics.failed(error.kind(), 1);
            return Err(error);
        }
        answer.await.unwrap_or_else(|_| {
            self.metrics.failed(super::FailureKind::Closed, 1);
            Err(AuditError::Closed)
        })
    }

    /// The state of every configured witness (empty without checkpoints or witnesses).
    pub fn witness_status(&self) -> Vec<WitnessStatus> {
        self.witness_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the last batch the writer attempted failed (for readiness reporting): true from
    /// a failed write until the next successful one.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed) != 0
    }

    /// Whether the last batch failed, less than `window` ago. Readiness uses this rather than
    /// [`AuditLog::is_failing`]: a replica taken out of rotation gets no checks, so no batch
    /// would ever clear the flag; after `window` it is offered traffic again (half-open), and
    /// the next failed batch takes it out for another `window`.
    pub fn failed_within(&self, window: std::time::Duration) -> bool {
        let last = self.failing.load(Ordering::Relaxed);
        last != 0 && u128::from(unix_millis().saturating_sub(last)) < window.as_millis()
    }

    /// Closes the log for every handle, at the end of a drain: the writer answers what is
    /// queued, writes the closing checkpoint, waits for the witness thread's last delivery and
    /// exits; appends after that fail with [`AuditError::Closed`]. Waits at most `timeout` for
    /// all of it (a blocking call: run it off the async workers); returns whether the writer
    /// finished in time.
    pub fn close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut job = Job::Close;
        // A full queue drains at the writer's pace; the deadline bounds the wait for a slot.
        loop {
            match self.queue.try_send(job) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(back)) => job = back,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match thread.as_ref() {
                None => return true,
                Some(handle) if handle.is_finished() => {
                    if let Some(handle) = thread.take() {
                        let _ = handle.join();
                    }
                    return true;
                }
                Some(_) if Instant::now() >= deadline => return false,
                Some(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Stops accepting records from this handle and, if it is the last one, waits for the
    /// writer thread to answer what is queued and exit.
    pub fn shutdown(self) {
        let thread = Arc::clone(&self.thread);
        drop(self);
        if Arc::strong_count(&thread) == 1
            && let Some(handle) = thread.lock().unwrap_or_else(PoisonError::into_inner).take()
        {
            let _ = handle.join();
        }
    }
}

/// Counts one append in flight until dropped (also when the append's future is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    /// Set while a [`MustNotBlock`] guard lives on this thread.
    static MUST_NOT_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread, while the guard lives, as one that must never wait on the disk:
/// an append made on it always hands its record to the writer thread, even where it would
/// otherwise commit inline. For callers that poll the pipeline on threads that are not theirs
/// (the Envoy module polls decisions on Envoy's worker threads, inside the module's runtime
/// context, so the runtime checks alone would allow an inline commit there).
#[derive(Debug)]
pub struct MustNotBlock {
    previous: bool,
    /// Thread-bound: never held across an `.await` that may resume on another thread.
    _thread: std::marker::PhantomData<*const ()>,
}

impl MustNotBlock {
    /// Marks the current thread until the guard is dropped.
    #[must_use]
    pub fn enter() -> Self {
        MustNotBlock {
            previous: MUST_NOT_BLOCK.with(|flag| flag.replace(true)),
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for MustNotBlock {
    fn drop(&mut self) {
        MUST_NOT_BLOCK.with(|flag| flag.set(self.previous));
    }
}

/// Whether this thread is a worker of a multi-thread runtime with another worker to keep
/// serving while it waits on the disk, and not marked [`MustNotBlock`].
fn may_block_here() -> bool {
    if MUST_NOT_BLOCK.with(std::cell::Cell::get) {
        return false;
    }
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && h.metrics().num_workers() >= 2
    })
}

/// The log's state: the sinks and the chain tip, behind the [`AuditLog`]'s writer lock.
struct Writer {
    file: Option<FileSink>,
    stream: Option<StreamSink>,
    /// `seq` of the next line.
    next_seq: u64,
    /// `hash` of the last durable line.
    last_hash: String,
    max_reason_bytes: usize,
    metrics: AuditMetrics,
    /// Shared with the handles: Unix milliseconds of the last failed batch, 0 once a batch
    /// succeeds. Also used to log only the transitions, not every failed batch of an outage.
    failing: Arc<AtomicU64>,
    /// The `replica` member of every line (`None` only in unit tests of the v1 format).
    replica: Option<String>,
    /// Signed checkpoints, when configured.
    checkpoints: Option<Checkpointer>,
}

impl Writer {
    fn new(
        file: Option<FileSink>,
        stream: Option<StreamSink>,
        max_reason_bytes: usize,
        metrics: AuditMetrics,
    ) -> Self {
        Writer {
            file,
            stream,
            next_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            max_reason_bytes,
            metrics,
            failing: Arc::new(AtomicU64::new(0)),
            replica: None,
            checkpoints: None,
        }
    }

    fn run(writer: &Mutex<Writer>, mut receiver: mpsc::Receiver<Job>, max_batch: usize) {
        let lock = || writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut closing = false;
        while !closing && let Some(first) = receiver.blocking_recv() {
            // Locked before the rest of the batch is taken: records that queue while a check
            // commits inline join this batch instead of forming small ones.
            let mut this = lock();
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Record { event, reply } => batch.push((event, reply)),
                    Job::Tick => {}
                    Job::Close => closing = true,
                }
                if batch.len() < max_batch {
                    next = receiver.try_recv().ok();
                }
            }
            this.metrics.queue_depth.dec_by(batch.len() as i64);
            if batch.is_empty() {
                this.checkpoint_if_due();
            } else {
                this.commit(batch);
            }
        }
        // Appends from now on fail at once instead of waiting for a writer that is gone.
        receiver.close();
        let mut queued = Vec::new();
        while let Ok(job) = receiver.try_recv() {
            if let Job::Record { event, reply } = job {
                queued.push((event, reply));
            }
        }
        let mut this = lock();
        if !queued.is_empty() {
            this.metrics.queue_depth.dec_by(queued.len() as i64);
            this.commit(queued);
        }
        // The last records get their checkpoint before the log closes.
        if this.checkpoints.as_ref().is_some_and(|c| c.uncovered > 0)
            && let Err(error) = this.write_checkpoint()
        {
            tracing::warn!(error = %error, "the final audit checkpoint could not be written");
        }
    }

    /// Writes one batch and answers every job in it.
    fn commit(&mut self, batch: Vec<(AuditEvent, Reply)>) {
        let count = batch.len();
        let (events, replies): (Vec<AuditEvent>, Vec<_>) = batch.into_iter().unzip();
        match self.write_batch(events) {
            Ok(records) => {
                if self.failing.swap(0, Ordering::Relaxed) != 0 {
                    tracing::info!("audit writing resumed");
                }
                self.metrics.records.inc_by(count as u64);
                self.metrics.batch_records.observe(count as f64);
                for (reply, record) in replies.into_iter().zip(records) {
                    // The caller may have gone away; its record is written regardless.
                    let _ = reply.send(Ok(record));
                }
                self.rotate_if_due();
            }
            Err(error) => {
                if self.failing.swap(unix_millis().max(1), Ordering::Relaxed) == 0 {
                    tracing::error!(
                        error = %error,
                        records = count,
                        "audit write failed: checks are denied until it succeeds again"
                    );
                }
                self.metrics.failed(error.kind(), count as u64);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn write_batch(&mut self, events: Vec<AuditEvent>) -> Result<Vec<AuditRecord>, AuditError> {
        self.ensure_started()?;
        let mut seq = self.next_seq;
        let mut prev_hash = self.last_hash.clone();
        let mut bytes = Vec::with_capacity(events.len() * 640);
        let mut records = Vec::with_capacity(events.len());
        let time = record::now_rfc3339();
        let count = events.len() as u64;
        for event in events {
            let mut record = AuditRecord::stamp(
                event,
                seq,
                time.clone(),
                self.replica.clone(),
                prev_hash,
                self.max_reason_bytes,
            );
            let line = chain::seal(&mut record).map_err(|e| AuditError::Encode(e.to_string()))?;
            bytes.extend_from_slice(&line);
            prev_hash = record.hash.clone();
            seq += 1;
            records.push(record);
        }
        // A due checkpoint rides in the same write and sync as the records it covers, so it
        // costs no extra disk flush.
        let now = Instant::now();
        let mut checkpoint = None;
        if self.checkpoints.as_ref().is_some_and(|c| c.due(count, now))
            && let Some((line, hash)) = self.checkpoint_line(seq, prev_hash.clone())?
        {
            bytes.extend_from_slice(&line);
            prev_hash = hash;
            seq += 1;
            checkpoint = Some(line);
        }
        self.emit(&bytes)?;
        self.next_seq = seq;
        self.last_hash = prev_hash;
        match checkpoint {
            Some(line) => self.checkpoint_written(line),
            None => {
                if let Some(checkpoints) = &mut self.checkpoints {
                    checkpoints.add_uncovered(count, now);
                }
            }
        }
        Ok(records)
    }

    /// Writes whole lines to every sink: the file first (it can be rolled back), then the
    /// stream; if the stream fails, the file's copy is rolled back so no sink holds a record
    /// whose caller was told it failed.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        let mut write_seconds = 0.0;
        if let Some(file) = &mut self.file {
            let timings = file.append(bytes)?;
            write_seconds += timings.write.as_secs_f64();
            if let Some(sync) = timings.sync {
                self.metrics.fsync_seconds.observe(sync.as_secs_f64());
            }
        }
        if let Some(stream) = &mut self.stream {
            let started = std::time::Instant::now();
            if let Err(error) = stream.write(bytes) {
                if let Some(file) = &mut self.file {
                    file.rollback_last(bytes.len() as u64);
                }
                return Err(error);
            }
            write_seconds += started.elapsed().as_secs_f64();
        }
        self.metrics.write_seconds.observe(write_seconds);
        Ok(())
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
