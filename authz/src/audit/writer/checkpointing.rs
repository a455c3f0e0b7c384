//! The writer's signed checkpoints: when one is due (every N records or T seconds, with a ticker
//! thread for an idle log), how it is signed and written into the chain, and how it reaches the
//! witnesses. Part of [`super::Writer`]'s state, run under the writer lock.

use super::*;

/// The writer's checkpoint state.
pub(super) struct Checkpointer {
    pub(super) signer: CheckpointSigner,
    pub(super) every_records: u64,
    pub(super) every: Duration,
    /// Decision records written since the last checkpoint. 1 at start: whatever the resumed
    /// chain ends with (records of a process killed before its checkpoint) gets one soon.
    pub(super) uncovered: u64,
    /// When the oldest uncovered record was written.
    pub(super) since: Instant,
    /// Where checkpoints are copied to; `None` when only the chain (and stdout) holds them.
    pub(super) witnesses: Option<Witnesses>,
}

impl Checkpointer {
    pub(super) fn start(
        config: &CheckpointConfig,
        metrics: AuditMetrics,
        status: SharedStatus,
    ) -> Result<Self, AuditError> {
        let pem = match (&config.signing_key, &config.signing_key_env) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                AuditError::Config(format!(
                    "audit.checkpoint.signing_key: cannot read {}: {e}",
                    path.display()
                ))
            })?,
            (None, Some(name)) => std::env::var(name).map_err(|_| {
                AuditError::Config(format!(
                    "audit.checkpoint.signing_key_env: environment variable {name} is not set"
                ))
            })?,
            (None, None) => {
                return Err(AuditError::Config(
                    "audit.checkpoint: a signing key is required".into(),
                ));
            }
        };
        let signer = CheckpointSigner::from_pem(&pem)
            .map_err(|e| AuditError::Config(format!("audit.checkpoint signing key: {e}")))?;
        let witnesses = Witnesses::start(config, metrics, status)
            .map_err(|e| AuditError::Config(format!("audit.checkpoint witnesses: {e}")))?;
        Ok(Checkpointer {
            signer,
            every_records: config.every_records,
            every: config.every,
            uncovered: 1,
            since: Instant::now(),
            witnesses,
        })
    }

    /// Whether a checkpoint is due with `adding` more records. By time only when records
    /// already wait (`since` is the first of them): records arriving just after a checkpoint
    /// are not `every` old, however long ago the last uncovered record was.
    pub(super) fn due(&self, adding: u64, now: Instant) -> bool {
        self.uncovered + adding >= self.every_records
            || (self.uncovered > 0 && now.saturating_duration_since(self.since) >= self.every)
    }

    /// Records that `count` records were written without a checkpoint after them.
    pub(super) fn add_uncovered(&mut self, count: u64, now: Instant) {
        if self.uncovered == 0 && count > 0 {
            self.since = now;
        }
        self.uncovered += count;
    }
}

/// Sends [`Job::Tick`] every quarter of `every` until the log is gone, so a checkpoint is never
/// later than about 1.25 x `every` after the record it covers.
pub(super) fn spawn_ticker(
    queue: mpsc::WeakSender<Job>,
    every: Duration,
) -> Result<(), AuditError> {
    let period = (every / 4).max(Duration::from_millis(5));
    std::thread::Builder::new()
        .name("authz-audit-ticker".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                let Some(queue) = queue.upgrade() else { return };
                // A full queue means a batch is coming anyway; it checks the time itself.
                let _ = queue.try_send(Job::Tick);
            }
        })
        .map(drop)
        .map_err(|e| AuditError::Spawn(e.to_string()))
}

impl Writer {
    /// Writes a checkpoint on its own when one is due by time (the queue was idle).
    pub(super) fn checkpoint_if_due(&mut self) {
        if !self
            .checkpoints
            .as_ref()
            .is_some_and(|c| c.due(0, Instant::now()))
        {
            return;
        }
        match self.write_checkpoint() {
            Ok(()) => self.rotate_if_due(),
            // Retried at the next tick; a failing file also fails (and is counted by) batches.
            Err(error) => tracing::debug!(error = %error, "audit checkpoint could not be written"),
        }
    }

    /// Writes one checkpoint line into the chain (every sink, synced per durability) and hands
    /// it to the witnesses.
    pub(super) fn write_checkpoint(&mut self) -> Result<(), AuditError> {
        self.ensure_started()?;
        let Some((line, hash)) = self.checkpoint_line(self.next_seq, self.last_hash.clone())?
        else {
            return Ok(());
        };
        self.emit(&line)?;
        self.next_seq += 1;
        self.last_hash = hash;
        self.checkpoint_written(line);
        Ok(())
    }

    /// A signed checkpoint at chain position `seq` attesting the line whose hash is
    /// `prev_hash`, and its hash; `None` without checkpoints.
    pub(super) fn checkpoint_line(
        &self,
        seq: u64,
        prev_hash: String,
    ) -> Result<Option<(Vec<u8>, String)>, AuditError> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(None);
        };
        let encode = |e: serde_json::Error| AuditError::Encode(e.to_string());
        let mut record = CheckpointRecord {
            v: SCHEMA_VERSION,
            kind: KIND_CHECKPOINT.to_owned(),
            seq,
            time: record::now_rfc3339(),
            replica: self.replica.clone().unwrap_or_default(),
            file_seq: self.file.as_ref().and_then(FileSink::file_seq).unwrap_or(0),
            key_id: String::new(),
            signature: String::new(),
            prev_hash,
            hash: String::new(),
        };
        checkpoints.signer.sign(&mut record).map_err(encode)?;
        let line = chain::seal(&mut record).map_err(encode)?;
        Ok(Some((line, record.hash)))
    }

    /// After a checkpoint line is durable: resets the count and sends it to the witnesses.
    pub(super) fn checkpoint_written(&mut self, line: Vec<u8>) {
        self.metrics.checkpoints.inc();
        if let Some(checkpoints) = &mut self.checkpoints {
            checkpoints.uncovered = 0;
            if let Some(witnesses) = &checkpoints.witnesses {
                witnesses.send(line);
            }
        }
    }
}
