//! A model version's session pool: one session per instance, a semaphore as the wait line, and
//! the reservation a request (or a batch) holds while it runs on the blocking pool.

use std::sync::{Arc, Mutex};

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
}

impl SessionPool {
    /// Wraps built sessions.
    pub fn new(sessions: Vec<Instance>) -> Self {
        let n = sessions.len();
        SessionPool {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            free: Mutex::new((0..n).collect()),
            permits: Arc::new(Semaphore::new(n)),
        }
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
    /// Runs `f` with the reserved session on the blocking thread pool.
    ///
    /// # Errors
    /// [`ServerError::Internal`] if the blocking task panicked.
    pub async fn run<R: Send + 'static>(
        self,
        f: impl FnOnce(&mut Instance) -> R + Send + 'static,
    ) -> Result<R, ServerError> {
        let Reservation { pool, permit } = self;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let index = pool.take_free();
            let result = {
                // A poisoned mutex means an earlier run panicked inside ONNX Runtime's caller; the
                // session itself holds no Rust invariants, so keep using it.
                let mut session = pool.sessions[index]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                f(&mut session)
            };
            pool.free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(index);
            result
        })
        .await
        .map_err(|e| ServerError::Internal(format!("inference task failed: {e}")))
    }
}
