//! A model version's session pool: one session per instance, a semaphore as the wait line, and
//! the reservation a request (or a batch) holds while it runs.
//!
//! Where a run happens: a session whose last run took under [`INLINE_RUN_MAX`] runs on the
//! calling tokio worker itself, as the rest of the request's handling does (parsing, encoding);
//! a slower one, one not yet measured, and any run on a runtime with fewer than two workers go to
//! the blocking pool. The hop to the blocking pool and back is two thread wake-ups, which for a
//! model that computes in a few microseconds costs more than the model (issue 22's profile); for
//! a model that computes for milliseconds it keeps the worker free for other requests. At most
//! one run per session blocks a worker at a time (the permit), so a pool smaller than the
//! runtime always leaves workers free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::Instance;
use crate::error::ServerError;

/// A model version's sessions; each request borrows one.
pub struct SessionPool {
    /// The sessions. Each mutex is only ever locked by the holder of the matching free-list index,
    /// so it is never contended; it exists to hand out `&mut Session` safely.
    sessions: Vec<Mutex<Instance>>,
    /// Indexes of sessions not in use.
    free: Mutex<Vec<usize>>,
    /// One permit per free session: waiting here is the request's queue time.
    permits: Arc<Semaphore>,
    /// How long the last run took, in nanoseconds (`u64::MAX` before the first): whether the next
    /// one may run on the calling worker.
    last_run_ns: AtomicU64,
}

/// The longest last run after which the next run of the same pool still happens on the calling
/// tokio worker instead of the blocking pool.
pub const INLINE_RUN_MAX: Duration = Duration::from_micros(100);

/// Whether blocking the current thread for one short run leaves the runtime able to go on: a
/// multi-thread tokio runtime with at least two workers (a current-thread runtime, or a single
/// worker, would stall every other task for the run).
fn may_run_inline() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && h.metrics().num_workers() >= 2
    })
}

impl SessionPool {
    /// Wraps built sessions.
    pub fn new(sessions: Vec<Instance>) -> Self {
        let n = sessions.len();
        SessionPool {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            free: Mutex::new((0..n).collect()),
            permits: Arc::new(Semaphore::new(n)),
            last_run_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether the next run may happen on the calling worker (see the module docs).
    fn runs_inline(&self) -> bool {
        u128::from(self.last_run_ns.load(Ordering::Relaxed)) < INLINE_RUN_MAX.as_nanos()
            && may_run_inline()
    }

    /// A free session reserved now, or `None` when every session is in use.
    pub fn try_reserve(self: &Arc<Self>) -> Option<Reservation> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some(Reservation {
            pool: Arc::clone(self),
            permit,
        })
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the pool has no sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Waits for a free session, then runs `f` with it on the blocking thread pool.
    ///
    /// # Errors
    /// [`ServerError::Internal`] if the pool was closed or the blocking task panicked.
    pub async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Instance) -> R + Send + 'static,
    ) -> Result<R, ServerError> {
        self.reserve().await?.run(f).await
    }

    /// Waits for a free session and reserves it; the session is used by [`Reservation::run`] and
    /// freed when the reservation is dropped. Dropping this future while it waits gives up its
    /// place in line.
    ///
    /// # Errors
    /// [`ServerError::Internal`] if the pool was closed.
    pub async fn reserve(self: &Arc<Self>) -> Result<Reservation, ServerError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServerError::Internal("session pool closed".into()))?;
        Ok(Reservation {
            pool: Arc::clone(self),
            permit,
        })
    }

    fn take_free(&self) -> usize {
        // Holding a permit guarantees a free index: permits == free indexes at all times.
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or(0)
    }
}

/// A session reserved for one run: holding it is holding one of the pool's permits.
pub struct Reservation {
    /// The pool the session is returned to.
    pool: Arc<SessionPool>,
    /// Released on drop, which lets the next waiter in.
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Reservation {
    /// Runs `f` with the reserved session: on the calling worker when the pool's last run was
    /// short, else on the blocking thread pool (module docs).
    ///
    /// # Errors
    /// [`ServerError::Internal`] if `f` panicked.
    pub async fn run<R: Send + 'static>(
        self,
        f: impl FnOnce(&mut Instance) -> R + Send + 'static,
    ) -> Result<R, ServerError> {
        let Reservation { pool, permit } = self;
        if pool.runs_inline() {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run_reserved(f)));
            drop(permit);
            return result.map_err(|_| ServerError::Internal("inference run panicked".into()));
        }
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.run_reserved(f)
        })
        .await
        .map_err(|e| ServerError::Internal(format!("inference task failed: {e}")))
    }
}

impl SessionPool {
    /// Runs `f` on a free session; the caller holds a permit. Records how long it took. The
    /// session goes back to the free list even if `f` panics.
    fn run_reserved<R>(&self, f: impl FnOnce(&mut Instance) -> R) -> R {
        let index = Returned {
            pool: self,
            index: self.take_free(),
        };
        let started = Instant::now();
        // A poisoned mutex means an earlier run panicked inside ONNX Runtime's caller; the
        // session itself holds no Rust invariants, so keep using it.
        let result = f(&mut self.sessions[index.index]
            .lock()
            .unwrap_or_else(|p| p.into_inner()));
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_run_ns.store(took, Ordering::Relaxed);
        result
    }
}

/// A session index taken from the free list, put back when dropped.
struct Returned<'a> {
    pool: &'a SessionPool,
    index: usize,
}

impl Drop for Returned<'_> {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.index);
    }
}
