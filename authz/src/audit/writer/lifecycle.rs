//! The writer's files: starting or resuming the chain (a new file's header, the chain tip read
//! back from disk after a restart or a failure, a file moved away behind the writer) and
//! rotation with retention. Part of [`super::Writer`], run under the writer lock.

use super::*;

impl Writer {
    /// Makes sure the sinks are ready for records: (re)opens the file and resumes the chain
    /// from disk after a start or a failure, and writes a header where a new file or stream
    /// begins.
    pub(super) fn ensure_started(&mut self) -> Result<(), AuditError> {
        if let Some(file) = &mut self.file {
            match file.check_in_place() {
                Ok(()) if file.is_open() => return Ok(()),
                Ok(()) => {}
                Err(next_file) => {
                    tracing::warn!(
                        "the audit file was moved or deleted behind the writer; starting a new one"
                    );
                    if let Some(file_seq) = next_file {
                        return self.start_file(file_seq);
                    }
                }
            }
            let Some(file) = &mut self.file else {
                return Ok(());
            };
            let Resume {
                next_seq,
                last_hash,
                new_file,
            } = file.open()?;
            self.next_seq = next_seq;
            self.last_hash = last_hash;
            if let Some(file_seq) = new_file {
                self.start_file(file_seq)?;
            }
            return Ok(());
        }
        if self.stream.as_ref().is_some_and(|stream| !stream.started) {
            let (header, hash) = self.header(0)?;
            if let Some(stream) = &mut self.stream {
                stream.write(&header)?;
                stream.started = true;
            }
            self.next_seq += 1;
            self.last_hash = hash;
        }
        Ok(())
    }

    /// Creates the active file `file_seq` with its header, and sends the header to the stream.
    pub(super) fn start_file(&mut self, file_seq: u64) -> Result<(), AuditError> {
        let (header, hash) = self.header(file_seq)?;
        if let Some(file) = &mut self.file {
            file.create(&header, file_seq)?;
        }
        if let Some(stream) = &mut self.stream {
            if let Err(error) = stream.write(&header) {
                // Retry the whole start next batch, so the stream does not miss the header.
                if let Some(file) = &mut self.file {
                    file.rollback_last(header.len() as u64);
                }
                return Err(error);
            }
            stream.started = true;
        }
        self.next_seq += 1;
        self.last_hash = hash;
        Ok(())
    }

    pub(super) fn header(&self, file_seq: u64) -> Result<(Vec<u8>, String), AuditError> {
        let mut header = HeaderRecord {
            v: SCHEMA_VERSION,
            kind: KIND_HEADER.to_owned(),
            seq: self.next_seq,
            time: record::now_rfc3339(),
            replica: self.replica.clone(),
            file_seq,
            writer: WRITER_NAME.to_owned(),
            prev_hash: self.last_hash.clone(),
            hash: String::new(),
        };
        let line = chain::seal(&mut header).map_err(|e| AuditError::Encode(e.to_string()))?;
        Ok((line, header.hash))
    }

    /// Rotates after a batch when the file is full. A failure is counted and logged; the file
    /// is then closed, and the next batch resumes from disk (which completes the rotation).
    pub(super) fn rotate_if_due(&mut self) {
        let Some(file) = &mut self.file else { return };
        if !file.needs_rotation() {
            return;
        }
        let result = file
            .rotate_away()
            .and_then(|file_seq| self.start_file(file_seq));
        match result {
            Ok(()) => {
                self.metrics.rotations.inc();
                if let Some(file) = &self.file
                    && let Err(error) = file.apply_retention()
                {
                    tracing::warn!(error = %error, "audit retention failed");
                    self.metrics.failed(error.kind(), 1);
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "audit rotation failed");
                self.metrics.failed(error.kind(), 1);
            }
        }
    }
}
