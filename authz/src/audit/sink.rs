//! The sinks: the audit file (resume after restart, size rotation, retention) and a stream
//! (stdout) that receives the same lines.
//!
//! File layout (names and read-back helpers in `files.rs`): the *active file* `P` (see [`AuditConfig::active_file`]) and rotated files
//! `P.NNNNNN`, where `NNNNNN` is the file's sequence number from its header. A new active file
//! is created atomically (written as `.NAME.tmp` beside it, synced, renamed, directory synced),
//! so `P` always
//! starts with a complete header. Rotation renames `P` to `P.NNNNNN` and creates the next `P`.
//!
//! On start (and after any failure) the sink reads the chain's tip back from disk:
//! - `P` ends with a complete line: append to it, continuing from its last line.
//! - `P` ends with a torn line (a crash during `write(2)`): `P` is left untouched as evidence and
//!   rotated away; a new file continues the chain from the last complete line. `verify` reports
//!   the tear as such.
//! - `P` is missing or empty: continue from the newest rotated file (a crash between rotation's
//!   two renames), or start a new chain when there is none.
//! - `P` is not a regular file (a device such as `/dev/full`, a pipe): write to it as a stream,
//!   starting a new chain; it is never read, rotated or truncated.
//!
//! [`AuditConfig::active_file`]: super::AuditConfig::active_file

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    AuditError, Durability, chain,
    files::{
        hidden_sibling, list_rotated, read_header_file_seq, read_tail, rotated_path, sync_dir,
    },
    record::GENESIS_HASH,
};

/// Where the chain stands on disk, as read back by [`FileSink::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    /// `seq` for the next line.
    pub next_seq: u64,
    /// `hash` of the last line (the next line's `prev_hash`).
    pub last_hash: String,
    /// `Some(file_seq)` when a new file must be started with a header of this file number
    /// (call [`FileSink::create`]); `None` when the existing active file is open for appending.
    pub new_file: Option<u64>,
}

/// The open active file.
#[derive(Debug)]
struct Active {
    file: File,
    /// Length of the durable, complete content: where a failed write is rolled back to.
    len: u64,
    /// Its file number.
    file_seq: u64,
    /// False for a device or pipe: never read back, rotated or truncated.
    regular: bool,
}

/// The file sink.
#[derive(Debug)]
pub(crate) struct FileSink {
    path: PathBuf,
    /// The configured directory, created (mode 0750) when missing; `None` for a file path.
    directory: Option<PathBuf>,
    durability: Durability,
    max_file_bytes: u64,
    retention: u32,
    active: Option<Active>,
    /// `.NAME.lock` beside `P`, held with an exclusive `flock` for the writer's lifetime, so two processes
    /// never write one chain (two replicas sharing a volume would interleave their lines).
    lock: Option<File>,
}

/// Timings of one append, for the metrics.
pub(crate) struct AppendTimings {
    pub write: Duration,
    pub sync: Option<Duration>,
}

impl FileSink {
    pub fn new(
        path: PathBuf,
        directory: Option<PathBuf>,
        durability: Durability,
        max_file_bytes: u64,
        retention: u32,
    ) -> Self {
        FileSink {
            path,
            directory,
            durability,
            max_file_bytes,
            retention,
            active: None,
            lock: None,
        }
    }

    /// The number of the open active file.
    pub fn file_seq(&self) -> Option<u64> {
        self.active.as_ref().map(|active| active.file_seq)
    }

    /// Whether the active file is open (after a failure it is closed and reopened by
    /// [`FileSink::open`] on the next batch).
    pub fn is_open(&self) -> bool {
        self.active.is_some()
    }

    /// Checks that the open file is still the one at the active path (an operator or a log
    /// rotation tool may have moved or deleted it, and records written to it would then not be
    /// where anyone looks). If it is not, closes it and returns
    /// - `Some(file_seq + 1)` when nothing is at the path now: the chain continues from memory
    ///   in a new file (the moved file holds the records so far);
    /// - `None` otherwise (something else is at the path): the next [`FileSink::open`] reads
    ///   it back like at start.
    pub fn check_in_place(&mut self) -> Result<(), Option<u64>> {
        use std::os::unix::fs::MetadataExt;
        let Some(active) = &self.active else {
            return Ok(());
        };
        if !active.regular {
            return Ok(());
        }
        let open = active.file.metadata().ok();
        let at_path = fs::metadata(&self.path);
        let same = match (&open, &at_path) {
            (Some(open), Ok(at_path)) => {
                open.nlink() > 0 && open.ino() == at_path.ino() && open.dev() == at_path.dev()
            }
            _ => false,
        };
        if same {
            return Ok(());
        }
        let file_seq = active.file_seq;
        self.active = None;
        match at_path {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Err(Some(file_seq + 1)),
            _ => Err(None),
        }
    }

    fn err(&self, source: io::Error) -> AuditError {
        AuditError::io("file", &self.path, source)
    }

    fn resume_err(&self, path: &Path, message: impl Into<String>) -> AuditError {
        AuditError::Resume {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// Reads the chain's tip back from disk and opens the active file when it can be appended
    /// to (see the module docs for the cases).
    pub fn open(&mut self) -> Result<Resume, AuditError> {
        self.active = None;
        if let Some(directory) = &self.directory {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(directory)
                .map_err(|e| AuditError::io("file", directory, e))?;
        }
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => Some(metadata),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(self.err(error)),
        };
        if metadata.as_ref().is_none_or(|m| m.is_file()) {
            self.lock()?;
        }
        match metadata {
            Some(metadata) if !metadata.is_file() => Ok(Resume {
                next_seq: 0,
                last_hash: GENESIS_HASH.to_owned(),
                new_file: Some(0),
            }),
            Some(metadata) if metadata.len() > 0 => self.open_existing(metadata.len()),
            _ => self.resume_from_rotated(),
        }
    }

    /// Takes the exclusive lock on `.NAME.lock` (once; it is kept until the sink is dropped).
    fn lock(&mut self) -> Result<(), AuditError> {
        use std::os::fd::AsRawFd;
        if self.lock.is_some() {
            return Ok(());
        }
        let path = hidden_sibling(&self.path, "lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .map_err(|e| AuditError::io("file", &path, e))?;
        // SAFETY: flock on a descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(AuditError::Locked { path });
            }
            return Err(AuditError::io("file", &path, error));
        }
        self.lock = Some(file);
        Ok(())
    }

    fn open_existing(&mut self, len: u64) -> Result<Resume, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        let file_seq = read_header_file_seq(&file)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| self.resume_err(&self.path, "the first line is not a header record"))?;
        let tail = read_tail(&file, len).map_err(|e| self.err(e))?;
        let (next_seq, last_hash) = self.tip_of(&self.path, tail.last_line.as_deref())?;
        if tail.torn {
            // Keep the torn file as evidence and continue in a new one.
            let rotated = rotated_path(&self.path, file_seq);
            if rotated.exists() {
                return Err(self.resume_err(
                    &self.path,
                    format!(
                        "ends with a torn line, but {} already exists",
                        rotated.display()
                    ),
                ));
            }
            fs::rename(&self.path, &rotated).map_err(|e| self.err(e))?;
            sync_dir(&self.path).map_err(|e| self.err(e))?;
            return Ok(Resume {
                next_seq,
                last_hash,
                new_file: Some(file_seq + 1),
            });
        }
        self.active = Some(Active {
            file,
            len,
            file_seq,
            regular: true,
        });
        Ok(Resume {
            next_seq,
            last_hash,
            new_file: None,
        })
    }

    fn resume_from_rotated(&mut self) -> Result<Resume, AuditError> {
        let rotated = list_rotated(&self.path).map_err(|e| self.err(e))?;
        let Some((file_seq, path)) = rotated.last() else {
            return Ok(Resume {
                next_seq: 0,
                last_hash: GENESIS_HASH.to_owned(),
                new_file: Some(0),
            });
        };
        let file = File::open(path).map_err(|e| AuditError::io("file", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| AuditError::io("file", path, e))?
            .len();
        let tail = read_tail(&file, len).map_err(|e| AuditError::io("file", path, e))?;
        let (next_seq, last_hash) = self.tip_of(path, tail.last_line.as_deref())?;
        Ok(Resume {
            next_seq,
            last_hash,
            new_file: Some(file_seq + 1),
        })
    }

    /// `(next seq, last hash)` from the last complete line of `path`, which must pass its own
    /// hash: the chain is never continued from a line that was tampered with.
    fn tip_of(&self, path: &Path, last_line: Option<&[u8]>) -> Result<(u64, String), AuditError> {
        let line = last_line.ok_or_else(|| self.resume_err(path, "no complete line"))?;
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| self.resume_err(path, format!("last complete line is not JSON: {e}")))?;
        let seq = value.get("seq").and_then(Value::as_u64);
        let hash = value.get("hash").and_then(Value::as_str);
        match (seq, hash) {
            (Some(seq), Some(hash)) if chain::line_hash(&value) == hash => {
                Ok((seq + 1, hash.to_owned()))
            }
            (Some(_), Some(_)) => Err(self.resume_err(path, "last complete line fails its hash")),
            _ => Err(self.resume_err(path, "last complete line has no seq or hash")),
        }
    }

    /// Starts a new active file whose first line is `header` (file number `file_seq`).
    pub fn create(&mut self, header: &[u8], file_seq: u64) -> Result<(), AuditError> {
        self.active = None;
        let regular = match fs::metadata(&self.path) {
            Ok(metadata) => metadata.is_file(),
            Err(_) => true,
        };
        if !regular {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(|e| self.err(e))?;
            file.write_all(header).map_err(|e| self.err(e))?;
            self.active = Some(Active {
                file,
                len: 0,
                file_seq,
                regular,
            });
            return Ok(());
        }
        let tmp = hidden_sibling(&self.path, "tmp");
        let result = (|| {
            // Records name principals and addresses: readable by the owner and its group only.
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&tmp)?;
            file.write_all(header)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            sync_dir(&self.path)?;
            Ok::<_, io::Error>(file)
        })();
        match result {
            Ok(file) => {
                self.active = Some(Active {
                    file,
                    len: header.len() as u64,
                    file_seq,
                    regular,
                });
                Ok(())
            }
            Err(error) => {
                let _ = fs::remove_file(&tmp);
                Err(self.err(error))
            }
        }
    }

    /// Appends `bytes` (whole lines) and makes them durable per the durability mode. On
    /// failure the file is rolled back to its last durable length and closed.
    pub fn append(&mut self, bytes: &[u8]) -> Result<AppendTimings, AuditError> {
        let durability = self.durability;
        let Some(active) = self.active.as_mut() else {
            return Err(self.err(io::Error::other("audit file is not open")));
        };
        let started = Instant::now();
        let result = active.file.write_all(bytes);
        let write = started.elapsed();
        let result = result.and_then(|()| {
            if durability == Durability::Fsync && active.regular {
                let started = Instant::now();
                active.file.sync_data()?;
                Ok(Some(started.elapsed()))
            } else {
                Ok(None)
            }
        });
        match result {
            Ok(sync) => {
                active.len += bytes.len() as u64;
                Ok(AppendTimings { write, sync })
            }
            Err(error) => {
                let len = active.len;
                self.rollback_to(len);
                Err(self.err(error))
            }
        }
    }

    /// Removes the last `bytes` appended (used when another sink failed after the file
    /// succeeded) and closes the file, so the next batch re-reads the tip from disk.
    pub fn rollback_last(&mut self, bytes: u64) {
        if let Some(active) = &self.active {
            let len = active.len.saturating_sub(bytes);
            self.rollback_to(len);
        }
    }

    fn rollback_to(&mut self, len: u64) {
        if let Some(active) = self.active.take()
            && active.regular
        {
            // Best effort: if the truncation fails too, the partial line stays at the end of
            // the file and the next open rotates it away as a torn line.
            if active.file.set_len(len).is_ok() {
                let _ = active.file.sync_data();
            }
        }
    }

    /// Whether the active file has reached the rotation size.
    pub fn needs_rotation(&self) -> bool {
        self.active
            .as_ref()
            .is_some_and(|active| active.regular && active.len >= self.max_file_bytes)
    }

    /// Closes the active file and renames it to its rotated name; returns the file number the
    /// next file must have (then call [`FileSink::create`]).
    pub fn rotate_away(&mut self) -> Result<u64, AuditError> {
        let Some(active) = self.active.take() else {
            return Err(self.err(io::Error::other("audit file is not open")));
        };
        // In `write` mode the data is not synced yet: do it before the file is closed for good.
        active.file.sync_data().map_err(|e| self.err(e))?;
        let rotated = rotated_path(&self.path, active.file_seq);
        fs::rename(&self.path, &rotated).map_err(|e| self.err(e))?;
        sync_dir(&self.path).map_err(|e| self.err(e))?;
        Ok(active.file_seq + 1)
    }

    /// Deletes the oldest rotated files beyond the retention count.
    pub fn apply_retention(&self) -> Result<(), AuditError> {
        let rotated = list_rotated(&self.path).map_err(|e| self.err(e))?;
        let excess = rotated.len().saturating_sub(self.retention as usize);
        for (_, path) in &rotated[..excess] {
            fs::remove_file(path).map_err(|e| AuditError::io("file", path, e))?;
        }
        Ok(())
    }
}

/// The stream sink (stdout in production): receives exactly the lines the file receives.
pub(crate) struct StreamSink {
    stream: Box<dyn Write + Send>,
    /// Whether this stream has received a header yet (it gets one before its first record).
    pub started: bool,
}

impl StreamSink {
    pub fn new(stream: Box<dyn Write + Send>) -> Self {
        StreamSink {
            stream,
            started: false,
        }
    }

    /// Writes whole lines and flushes them to the underlying descriptor.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| AuditError::io("stdout", "-", e))
    }
}
