//! The batching thread of a model with `dynamic_batching`: it waits for a free session, forms a
//! batch from the queue (same non-batch dimensions, up to the target size, within the delay window
//! when [`BatchWait::Always`]), runs it once on the runtime and answers each member, re-running
//! members alone when a merged run fails.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak, mpsc};
use std::time::Instant;

use tokio::sync::oneshot;

use super::merge::{merge, split};
use super::{Abandon, BatchPolicy, BatchWait, Batching, Pending, STARTED, TIMED_OUT, cas};
use crate::error::ServerError;
use crate::repository::LoadedModel;
use crate::runtime::Reservation;
use crate::tensor::Tensor;

impl Batching {
    /// Queues `pending` for the batching thread and waits for its answer or its deadline.
    pub(super) async fn submit(
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
        let reservation = match runtime.block_on(model.pool.reserve()) {
            Ok(r) => r,
            Err(e) => {
                let _ = first.reply.send(Err(e));
                continue;
            }
        };
        let window_end = first.enqueued + policy.max_queue_delay;
        let mut batch = Batch::default();
        if !batch.join(first, &model) {
            // Cancelled or past its deadline: the session goes back (requests that find the
            // model idle may run on it directly).
            continue;
        }
        carry = fill(&mut batch, queue, policy, window_end, &model);
        runtime.spawn(run_batch(model, reservation, batch));
    }
}

/// Adds queued requests to `batch` until it reaches the policy's target size, nothing more is
/// worth waiting for (see [`BatchWait`]), or a request does not fit: that one is returned, to start
/// the next batch.
fn fill(
    batch: &mut Batch,
    queue: &mpsc::Receiver<Pending>,
    policy: &BatchPolicy,
    window_end: Instant,
    model: &LoadedModel,
) -> Option<Pending> {
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
            return Some(next);
        }
        batch.join(next, model);
    }
    None
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
    use std::sync::atomic::{AtomicU8, AtomicU32};

    use super::super::merge::tests::raw;
    use super::super::{QUEUED, QueueSlot};
    use super::*;
    use crate::tensor::DataType;

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
