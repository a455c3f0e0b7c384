//! Scheduling requests onto a model's session pool.
//!
//! Today every request runs on its own ([`Scheduler::direct`]): it is admitted if the model's queue
//! has room, waits for a free session, and runs. The queue bound is what keeps memory bounded under
//! a flood: beyond `max_queue_size` waiting requests the answer is an immediate
//! [`ServerError::Overloaded`] (503 / `UNAVAILABLE`).
//!
//! This is the seam for dynamic batching: a batching scheduler gathers admitted requests for up to
//! `max_queue_delay_microseconds`, concatenates them along the batch dimension, runs once, and
//! splits the outputs back. Callers only see [`Scheduler::submit`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::error::ServerError;
use crate::repository::LoadedModel;
use crate::tensor::Tensor;

/// Per-model request scheduler.
pub struct Scheduler {
    /// Requests admitted and not yet finished (waiting or running).
    in_flight: AtomicU32,
    /// Most requests that may wait for a session at once.
    max_queue: u32,
}

/// Decrements the in-flight count however the request ends (success, error, client gone).
struct Admission<'a>(&'a AtomicU32);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Scheduler {
    /// A scheduler that runs each request by itself, with a queue of `max_queue` waiting requests.
    pub fn direct(max_queue: u32) -> Self {
        Scheduler {
            in_flight: AtomicU32::new(0),
            max_queue,
        }
    }

    /// Requests admitted and not finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admits one request if fewer than `capacity` are in flight; the returned guard releases the
    /// slot when dropped.
    ///
    /// # Errors
    /// [`ServerError::Overloaded`] when `capacity` requests are already in flight.
    fn admit(&self, capacity: u32, model: &str) -> Result<Admission<'_>, ServerError> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map(|_| Admission(&self.in_flight))
            .map_err(|_| ServerError::Overloaded(model.to_string()))
    }

    /// Runs validated `inputs` on `model`, returning the `outputs` asked for, in order.
    ///
    /// If the caller's future is dropped while the request waits for a session (a client that
    /// disconnected), the request never runs.
    ///
    /// # Errors
    /// [`ServerError::Overloaded`] when the queue is full; errors of [`crate::runtime::execute`].
    pub async fn submit(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
        batch: u64,
    ) -> Result<Vec<Tensor>, ServerError> {
        let capacity = self
            .max_queue
            .saturating_add(u32::try_from(model.pool.len()).unwrap_or(u32::MAX));
        let _admission = self.admit(capacity, &model.name)?;
        let queued_at = Instant::now();
        let m = Arc::clone(model);
        let result = model
            .pool
            .run(move |session| {
                m.stats.queue.record(queued_at.elapsed());
                let result = crate::runtime::execute(session, &inputs, &outputs);
                if let Ok((_, times)) = &result {
                    m.stats.compute_input.record(times.input);
                    m.stats.compute_infer.record(times.infer);
                    m.stats.compute_output.record(times.output);
                    m.stats.record_execution(batch);
                }
                result
            })
            .await??;
        Ok(result.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_bounded_and_released_on_drop() {
        let s = Scheduler::direct(1);
        let first = s.admit(2, "m").unwrap();
        let second = s.admit(2, "m").unwrap();
        let e = s.admit(2, "m").err().unwrap();
        assert_eq!(e.to_string(), "model 'm' is overloaded: queue is full");
        assert_eq!(e.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s.in_flight(), 2);
        drop(first);
        let _third = s.admit(2, "m").unwrap();
        drop(second);
        assert_eq!(s.in_flight(), 1);
    }
}
