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
//! the batch runs at once — a request that finds an instance free never waits, and requests that
//! arrive while every instance is busy are batched when one frees; with `always` (Triton's
//! semantics) it waits for more until a smaller preferred size is reached or
//! `max_queue_delay_microseconds` has passed since the oldest request arrived. The merged inputs (concatenated
//! along dimension 0; BYTES too) run once and the outputs are split back to each request in order.
//! If a merged run fails, each request is re-run alone so one bad request cannot fail its
//! neighbours.
//!
//! Callers only see [`Scheduler::submit`]. [`policy`] turns a model's `config.pbtxt` into the
//! queue and batch policies; [`merge`] concatenates inputs and splits outputs along the batch
//! dimension; this file owns admission, the per-request state machine and dispatch (alone, or
//! through the batching thread).

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::error::ServerError;
use crate::repository::LoadedModel;
use crate::runtime::Reservation;
use crate::tensor::Tensor;

mod merge;
mod policy;

use merge::{merge, split};
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

impl Batching {
    /// Queues `pending` for the batching thread and waits for its answer or its deadline.
    async fn submit(
        &self,
        model: &Arc<LoadedModel>,
        mut pending: Pending,
    ) -> Result<Vec<Tensor>, ServerError> {
        let (reply, mut answer) = oneshot::channel();
        pending.reply = reply;
        pending.inputs.sort_by(|a, b| a.name.cmp(&b.name));
        let state = Arc::clone(&pending.state);
        let deadline = pending.deadline;
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let (handle, weak, policy) = (
                tokio::runtime::Handle::current(),
                Arc::downgrade(model),
                self.policy.clone(),
            );
            // If the thread cannot start, `rx` is dropped and every send below fails with an
            // internal error naming the batcher: the model keeps answering, never hangs.
            let spawned = std::thread::Builder::new()
                .name(format!("batcher-{}", model.name))
                .spawn(move || batch_loop(&handle, &weak, &rx, &policy));
            if let Err(e) = spawned {
                tracing::error!(model.name = %model.name, error = %e, "cannot start the batching thread");
            }
            tx
        });
        sender
            .send(pending)
            .map_err(|_| ServerError::Internal("the model's batching thread stopped".into()))?;
        let _abandon = Abandon {
            state: &state,
            model,
        };
        let answer = match deadline {
            None => answer.await,
            Some(d) => {
                tokio::select! {
                    a = &mut answer => a,
                    () = tokio::time::sleep_until(d.into()) => {
                        if cas(&state, TIMED_OUT) {
                            model.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                            return Err(ServerError::TimedOut(model.name.clone()));
                        }
                        // Already started (or timed out by the batcher, which answers): wait.
                        answer.await
                    }
                }
            }
        };
        answer
            .map_err(|_| ServerError::Internal("the batching thread dropped the request".into()))?
    }
}

/// Requests merged into one execution.
#[derive(Default)]
struct Batch {
    /// Each member's inputs, sorted by name.
    inputs: Vec<Vec<Tensor>>,
    /// Each member's reply, requested outputs and batch dimension.
    members: Vec<Member>,
    /// Sum of the members' batch dimensions.
    size: usize,
}

struct Member {
    reply: oneshot::Sender<Result<Vec<Tensor>, ServerError>>,
    outputs: Vec<String>,
    batch: usize,
    trace: telemetry::SpanHandle,
}

impl Batch {
    /// Whether `p` may join: room left and the same non-batch dimensions for every input.
    fn fits(&self, p: &Pending, max: usize) -> bool {
        let Some(first) = self.inputs.first() else {
            return true;
        };
        self.size.saturating_add(p.batch) <= max
            && first.len() == p.inputs.len()
            && first.iter().zip(&p.inputs).all(|(a, b)| {
                a.name == b.name && a.datatype == b.datatype && a.shape.get(1..) == b.shape.get(1..)
            })
    }

    /// Starts `p` as a member unless its client is gone or its deadline has passed (answered
    /// here). Returns whether it joined.
    fn join(&mut self, p: Pending, model: &LoadedModel) -> bool {
        if p.deadline.is_some_and(|d| Instant::now() >= d) {
            if cas(&p.state, TIMED_OUT) {
                model.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                let _ = p.reply.send(Err(ServerError::TimedOut(model.name.clone())));
            }
            return false;
        }
        if p.reply.is_closed() || !cas(&p.state, STARTED) {
            return false;
        }
        model.stats.queue.record(p.enqueued.elapsed());
        crate::trace::record_queue(&p.trace, p.enqueued);
        drop(p.slot);
        self.size += p.batch;
        self.inputs.push(p.inputs);
        self.members.push(Member {
            reply: p.reply,
            outputs: p.outputs,
            batch: p.batch,
            trace: p.trace,
        });
        true
    }
}

/// The batching thread of one model: forms batches and dispatches each on a reserved session.
/// Ends when the model is dropped (its sender with it).
///
/// A thread rather than a tokio task because the delay window is often well under a millisecond,
/// finer than tokio's timer wheel; a blocking `recv_timeout` waits exactly as long as asked.
fn batch_loop(
    runtime: &tokio::runtime::Handle,
    model: &Weak<LoadedModel>,
    queue: &mpsc::Receiver<Pending>,
    policy: &BatchPolicy,
) {
    let mut carry: Option<Pending> = None;
    let mut spare: Option<Reservation> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match queue.recv() {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let Some(model) = model.upgrade() else { return };
        // Wait for a session before forming the batch: requests arriving meanwhile join it.
        let reservation = match spare.take() {
            Some(r) => r,
            None => match runtime.block_on(model.pool.reserve()) {
                Ok(r) => r,
                Err(e) => {
                    let _ = first.reply.send(Err(e));
                    continue;
                }
            },
        };
        let window_end = first.enqueued + policy.max_queue_delay;
        let mut batch = Batch::default();
        if !batch.join(first, &model) {
            spare = Some(reservation);
            continue;
        }
        while batch.size < policy.target() {
            let next = match queue.try_recv() {
                Ok(p) => p,
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    // Nothing else is waiting and this batch holds a free instance: with
                    // `BatchWait::Busy` it runs now; requests arriving meanwhile form the next
                    // batch while this one runs.
                    let now = Instant::now();
                    if policy.wait == BatchWait::Busy
                        || policy.preferred.contains(&batch.size)
                        || now >= window_end
                    {
                        break;
                    }
                    match queue.recv_timeout(window_end - now) {
                        Ok(p) => p,
                        Err(_) => break,
                    }
                }
            };
            if !batch.fits(&next, policy.max_batch_size) {
                carry = Some(next);
                break;
            }
            batch.join(next, &model);
        }
        runtime.spawn(run_batch(model, reservation, batch));
    }
}

/// Runs one batch and answers its members.
async fn run_batch(model: Arc<LoadedModel>, reservation: Reservation, batch: Batch) {
    let Batch {
        inputs,
        members,
        size,
    } = batch;
    // Every output any member asked for, in model order.
    let outputs: Vec<String> = model
        .outputs
        .iter()
        .filter(|o| members.iter().any(|m| m.outputs.contains(&o.name)))
        .map(|o| o.name.clone())
        .collect();
    let batches: Vec<usize> = members.iter().map(|m| m.batch).collect();
    let m = Arc::clone(&model);
    let names = outputs.clone();
    let started = Instant::now();
    let results = reservation
        .run(move |session| {
            let compute_start = Instant::now();
            let results = execute_batch(session, &m, inputs, &names, &batches, size);
            (results, (compute_start, Instant::now()))
        })
        .await;
    let requests = members.len();
    let results = match results {
        Ok((r, compute)) => {
            for member in &members {
                crate::trace::record_batch(&member.trace, started, compute, size, requests);
            }
            r
        }
        Err(e) => vec![Err(e); members.len()],
    };
    for (member, result) in members.into_iter().zip(results) {
        let answer = result.map(|tensors| {
            member
                .outputs
                .iter()
                .filter_map(|name| {
                    outputs
                        .iter()
                        .position(|o| o == name)
                        .and_then(|i| tensors.get(i).cloned())
                })
                .collect()
        });
        let _ = member.reply.send(answer);
    }
}

/// Runs the merged batch on `session`; returns each member's outputs (all of `outputs`). If the
/// merged run fails, each member runs alone so each gets its own result or error.
fn execute_batch(
    session: &mut crate::runtime::Instance,
    model: &LoadedModel,
    inputs: Vec<Vec<Tensor>>,
    outputs: &[String],
    batches: &[usize],
    size: usize,
) -> Vec<Result<Vec<Tensor>, ServerError>> {
    let alone = |session: &mut crate::runtime::Instance, inputs: &[Tensor], batch: usize| {
        let (tensors, times) = crate::runtime::execute(session, inputs, outputs)?;
        model.stats.record_batch(batch as u64, &times);
        Ok(tensors)
    };
    if inputs.len() == 1 {
        return vec![alone(session, &inputs[0], size)];
    }
    let merged = merge(&inputs, size).and_then(|merged| {
        let (tensors, times) = crate::runtime::execute(session, &merged, outputs)?;
        let parts = split(tensors, batches, size)?;
        model.stats.record_batch(size as u64, &times);
        Ok(parts)
    });
    match merged {
        Ok(parts) => parts.into_iter().map(Ok).collect(),
        Err(_) => inputs
            .iter()
            .zip(batches)
            .map(|(i, &b)| alone(session, i, b))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::merge::tests::raw;
    use super::*;
    use crate::tensor::DataType;

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

    #[test]
    fn only_requests_with_equal_non_batch_dims_and_room_fit() {
        let pending = |shape: &[i64]| Pending {
            inputs: vec![raw(
                "x",
                shape,
                &vec![0.0; shape.iter().product::<i64>() as usize],
            )],
            outputs: Vec::new(),
            batch: shape[0] as usize,
            enqueued: Instant::now(),
            deadline: None,
            state: Arc::new(AtomicU8::new(QUEUED)),
            reply: oneshot::channel().0,
            slot: QueueSlot(Arc::new(AtomicU32::new(1))),
            trace: telemetry::SpanHandle::none(),
        };
        let mut batch = Batch::default();
        batch.inputs.push(vec![raw("x", &[2, 3], &[0.0; 6])]);
        batch.size = 2;
        assert!(batch.fits(&pending(&[1, 3]), 4));
        assert!(batch.fits(&pending(&[2, 3]), 4));
        assert!(!batch.fits(&pending(&[3, 3]), 4), "over max_batch_size");
        assert!(!batch.fits(&pending(&[1, 2]), 4), "other width");
        let mut bytes = pending(&[1, 3]);
        bytes.inputs[0].datatype = DataType::Bytes;
        assert!(!batch.fits(&bytes, 4), "other datatype");
    }
}
