//! Scheduling requests onto a model's session pool: dynamic batching and the queue policy.
//!
//! Every request is first *admitted* to its model's queue: at most `max_queue_size` requests may
//! wait (admitted, not started) at once, so memory stays bounded under any request rate; beyond
//! that the answer is an immediate [`ServerError::Overloaded`] (503 with `Retry-After` /
//! `UNAVAILABLE`). A request may carry a deadline (its `timeout` parameter, or the model's
//! `default_timeout_microseconds`): if it is still queued when the deadline passes it is answered
//! [`ServerError::TimedOut`] (503 / `UNAVAILABLE`, as Triton) and never runs. A request whose
//! client went away (its future dropped) before it started is skipped, never computed.
//!
//! Models without `dynamic_batching` run each request by itself on a free session. Models with it
//! get a batching thread (started on first use): it waits for a free session, takes the oldest
//! queued request, and adds the requests behind it whose inputs have the same non-batch
//! dimensions until the batch reaches the largest `preferred_batch_size` (or `max_batch_size`), or
//! nothing else is queued. What happens then depends on [`BatchWait`]: with `busy` (the default)
//! the batch runs at once — a request that finds an instance free and nobody queued runs at once on
//! its own task (it never visits the batching thread), and requests that arrive while every
//! instance is busy are batched when one frees; with `always` (Triton's
//! semantics) it waits for more until a smaller preferred size is reached or
//! `max_queue_delay_microseconds` has passed since the oldest request arrived. The merged inputs (concatenated
//! along dimension 0; BYTES too) run once and the outputs are split back to each request in order.
//! If a merged run fails, each request is re-run alone so one bad request cannot fail its
//! neighbours.
//!
//! Callers only see [`Scheduler::submit`]. `policy` turns a model's `config.pbtxt` into the
//! queue and batch policies; `merge` concatenates inputs and splits outputs along the batch
//! dimension; `batching` is the batching thread; this file owns admission, the per-request state
//! machine and dispatch (alone, or to the batching thread).

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::error::ServerError;
use crate::repository::LoadedModel;
use crate::runtime::Reservation;
use crate::tensor::Tensor;

mod batching;
mod merge;
mod policy;

pub use policy::{BATCH_WAIT_PARAMETER, BatchPolicy, BatchWait, QueuePolicy, policies};

/// A request's place in the line, as seen by both the caller and the batching thread; whoever
/// moves it out of `QUEUED` first decides its fate.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const TIMED_OUT: u8 = 2;
const CANCELLED: u8 = 3;

/// Per-model request scheduler.
pub struct Scheduler {
    /// Requests admitted and not started; shared with the slots that release it.
    queued: Arc<AtomicU32>,
    /// Queue bound and deadlines.
    queue: QueuePolicy,
    /// Dynamic batching, for models configured with it.
    batching: Option<Batching>,
}

/// The batching side of a scheduler.
struct Batching {
    policy: BatchPolicy,
    /// Sender to the batching thread, created with the thread on first use (it needs the tokio
    /// runtime's handle and the model's `Arc`). Unbounded because admission already bounds what is
    /// in it. Dropping it (with the model) ends the thread.
    sender: OnceLock<mpsc::Sender<Pending>>,
}

/// One admitted request's place in the queue; releases it when dropped.
struct QueueSlot(Arc<AtomicU32>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request waiting for the batching thread.
struct Pending {
    /// Inputs sorted by name, so the requests of one batch line up.
    inputs: Vec<Tensor>,
    /// Outputs the client asked for, in its order.
    outputs: Vec<String>,
    /// Its batch dimension.
    batch: usize,
    /// Admission time, for the queue statistics and the delay window.
    enqueued: Instant,
    /// When it must have started.
    deadline: Option<Instant>,
    /// QUEUED / STARTED / TIMED_OUT / CANCELLED, shared with the waiting caller.
    state: Arc<AtomicU8>,
    /// Where the answer goes.
    reply: oneshot::Sender<Result<Vec<Tensor>, ServerError>>,
    /// Counted in the queue until started or dropped.
    slot: QueueSlot,
    /// The request's span, for its queue, batch and compute spans ([`crate::trace`]).
    trace: telemetry::SpanHandle,
}

/// Marks a request cancelled if its caller goes away while it is still queued.
struct Abandon<'a> {
    state: &'a AtomicU8,
    model: &'a LoadedModel,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if cas(self.state, CANCELLED) {
            self.model.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Moves `state` from QUEUED to `to`; false if someone else moved it first.
fn cas(state: &AtomicU8, to: u8) -> bool {
    state
        .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

impl Scheduler {
    /// A scheduler with `queue` policy that batches with `batch` when given.
    pub fn new(queue: QueuePolicy, batch: Option<BatchPolicy>) -> Self {
        Scheduler {
            queued: Arc::new(AtomicU32::new(0)),
            queue,
            batching: batch.map(|policy| Batching {
                policy,
                sender: OnceLock::new(),
            }),
        }
    }

    /// A scheduler that runs each request by itself, with room for `max_queue` waiting requests.
    pub fn direct(max_queue: u32) -> Self {
        Self::new(
            QueuePolicy {
                max_queue_size: max_queue,
                default_timeout: None,
                allow_timeout_override: false,
            },
            None,
        )
    }

    /// Requests admitted and not yet started (`nv_inference_queue_size`).
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Acquire)
    }

    /// The batch policy, for models that batch.
    pub fn batch_policy(&self) -> Option<&BatchPolicy> {
        self.batching.as_ref().map(|b| &b.policy)
    }

    /// Refuses at once, before the request is decoded, when the queue is already full: under a
    /// flood most requests are refused, and refusing them before parsing their tensors keeps the
    /// CPU for the requests that run. Admission proper still happens in [`Scheduler::submit`].
    ///
    /// # Errors
    /// [`ServerError::Overloaded`], counted in `nv_inference_rejected_overload`.
    pub fn shed_if_full(&self, model: &LoadedModel) -> Result<(), ServerError> {
        if self.queued() < self.queue.max_queue_size {
            return Ok(());
        }
        model
            .stats
            .rejected_overload
            .fetch_add(1, Ordering::Relaxed);
        Err(ServerError::Overloaded(model.name.clone()))
    }

    /// Admits one request if the queue has room.
    ///
    /// # Errors
    /// [`ServerError::Overloaded`] when `max_queue_size` requests are already waiting.
    fn admit(&self, model: &str) -> Result<QueueSlot, ServerError> {
        let capacity = self.queue.max_queue_size;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map(|_| QueueSlot(Arc::clone(&self.queued)))
            .map_err(|_| ServerError::Overloaded(model.to_string()))
    }

    /// Runs validated `inputs` (of batch dimension `batch`) on `model`, returning the `outputs`
    /// asked for, in order. `timeout` is the request's own `timeout` parameter.
    ///
    /// If the caller's future is dropped while the request is queued (a client that
    /// disconnected), the request never runs.
    ///
    /// # Errors
    /// [`ServerError::Overloaded`] when the queue is full, [`ServerError::TimedOut`] when the
    /// deadline passed while queued; errors of [`crate::runtime::execute`].
    pub async fn submit(
        &self,
        model: &Arc<LoadedModel>,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
        batch: u64,
        timeout: Option<Duration>,
    ) -> Result<Vec<Tensor>, ServerError> {
        // Batching `busy` with nobody waiting and a session free: run now, without the hop to the
        // batching thread and back (the batcher would only run it alone, at once, anyway).
        if self.queued() == 0
            && let Some(b) = &self.batching
            && b.policy.wait == BatchWait::Busy
            && let Some(reservation) = model.pool.try_reserve()
        {
            let enqueued = Instant::now();
            return run_reserved(model, reservation, inputs, outputs, batch, enqueued).await;
        }
        let slot = self.admit(&model.name).inspect_err(|_| {
            model
                .stats
                .rejected_overload
                .fetch_add(1, Ordering::Relaxed);
        })?;
        let enqueued = Instant::now();
        let deadline = self.queue.timeout(timeout).map(|d| enqueued + d);
        match &self.batching {
            None => run_alone(model, inputs, outputs, batch, slot, enqueued, deadline).await,
            Some(b) => {
                let pending = Pending {
                    inputs,
                    outputs,
                    batch: usize::try_from(batch).unwrap_or(usize::MAX),
                    enqueued,
                    deadline,
                    state: Arc::new(AtomicU8::new(QUEUED)),
                    reply: oneshot::channel().0,
                    slot,
                    trace: telemetry::current_span(),
                };
                b.submit(model, pending).await
            }
        }
    }
}

/// Runs one request by itself on the next free session.
async fn run_alone(
    model: &Arc<LoadedModel>,
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
    batch: u64,
    slot: QueueSlot,
    enqueued: Instant,
    deadline: Option<Instant>,
) -> Result<Vec<Tensor>, ServerError> {
    let reserve = model.pool.reserve();
    let reservation = match deadline {
        None => reserve.await?,
        Some(d) => match tokio::time::timeout_at(d.into(), reserve).await {
            Ok(r) => r?,
            Err(_) => {
                model.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(ServerError::TimedOut(model.name.clone()));
            }
        },
    };
    drop(slot);
    run_reserved(model, reservation, inputs, outputs, batch, enqueued).await
}

/// Runs one request by itself on the session `reservation` holds.
async fn run_reserved(
    model: &Arc<LoadedModel>,
    reservation: Reservation,
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
    batch: u64,
    enqueued: Instant,
) -> Result<Vec<Tensor>, ServerError> {
    model.stats.queue.record(enqueued.elapsed());
    let trace = telemetry::current_span();
    crate::trace::record_queue(&trace, enqueued);
    let started = Instant::now();
    let m = Arc::clone(model);
    let (result, compute) = reservation
        .run(move |session| {
            let compute_start = Instant::now();
            let result = crate::runtime::execute(session, &inputs, &outputs);
            (result, (compute_start, Instant::now()))
        })
        .await?;
    let size = usize::try_from(batch).unwrap_or(usize::MAX);
    crate::trace::record_batch(&trace, started, compute, size, 1);
    let (tensors, times) = result?;
    m.stats.record_batch(batch, &times);
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_bounded_and_released_on_drop() {
        let s = Scheduler::direct(2);
        let first = s.admit("m").unwrap();
        let second = s.admit("m").unwrap();
        let e = s.admit("m").err().unwrap();
        assert_eq!(e.to_string(), "model 'm' is overloaded: queue is full");
        assert_eq!(e.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s.queued(), 2);
        drop(first);
        let _third = s.admit("m").unwrap();
        drop(second);
        assert_eq!(s.queued(), 1);
    }
}
