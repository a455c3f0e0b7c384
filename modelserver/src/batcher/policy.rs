//! The queue and batch policies of one model, from its `config.pbtxt` (`dynamic_batching`,
//! `max_batch_size`) and the server's default queue size: pure values the scheduler follows.

use std::time::Duration;

use serde::Deserialize;

use crate::repository::config::ModelConfig;

/// The `config.pbtxt` parameter that overrides the server's [`BatchWait`] for one model.
pub const BATCH_WAIT_PARAMETER: &str = "batch_wait";

/// When a batching model waits `max_queue_delay` for more requests (`[runtime] batch_wait`, or a
/// model's `parameters { key: "batch_wait" ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BatchWait {
    /// Only while every instance is busy (the default): a request that finds an instance free runs
    /// at once, alone or with whatever is already queued; requests that arrive while every instance
    /// is busy queue up and run together when one frees. No idle wait, and batches still form
    /// under load, which is when they pay.
    #[default]
    Busy,
    /// Always, as Triton does: the batch that holds a free instance still waits up to
    /// `max_queue_delay` for company (for clients whose throughput depends on full batches
    /// even at low concurrency).
    Always,
}

impl BatchWait {
    /// The name in the TOML file, the model parameter and the reported config.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchWait::Busy => "busy",
            BatchWait::Always => "always",
        }
    }

    /// Parses the model parameter's value.
    pub fn parse(value: &str) -> Option<Self> {
        [BatchWait::Busy, BatchWait::Always]
            .into_iter()
            .find(|w| w.as_str() == value)
    }
}

/// How long requests may wait, and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePolicy {
    /// Most requests admitted and not started.
    pub max_queue_size: u32,
    /// Deadline of a request that sets no `timeout` (`default_timeout_microseconds`).
    pub default_timeout: Option<Duration>,
    /// Whether a request's `timeout` may shorten the default (Triton never lets it lengthen it).
    pub allow_timeout_override: bool,
}

impl QueuePolicy {
    /// The time a request may stay queued, given its own `timeout` parameter (zero = none).
    ///
    /// Without a default the request's timeout applies; with one, the request may only shorten it
    /// and only when `allow_timeout_override` is set, as in Triton.
    pub fn timeout(&self, requested: Option<Duration>) -> Option<Duration> {
        let requested = requested.filter(|d| !d.is_zero());
        match (self.default_timeout, requested) {
            (None, r) => r,
            (Some(d), Some(r)) if self.allow_timeout_override => Some(r.min(d)),
            (Some(d), _) => Some(d),
        }
    }
}

/// When a batch is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    /// Largest batch (sum of the requests' batch dimensions).
    pub max_batch_size: usize,
    /// Sizes worth dispatching at once, ascending.
    pub preferred: Vec<usize>,
    /// Longest wait for more requests after the oldest one arrived.
    pub max_queue_delay: Duration,
    /// Whether that wait applies when an instance is free.
    pub wait: BatchWait,
}

impl BatchPolicy {
    /// The batch size at which a batch is dispatched without waiting: the largest preferred size,
    /// else `max_batch_size`.
    pub(super) fn target(&self) -> usize {
        self.preferred
            .last()
            .copied()
            .unwrap_or(self.max_batch_size)
            .min(self.max_batch_size)
    }
}

/// Builds the queue and batch policies for a model configuration; `default_queue` applies when
/// the configuration sets no `max_queue_size`, `default_wait` when it sets no `batch_wait`
/// parameter (validated when the config was parsed).
pub fn policies(
    config: &ModelConfig,
    default_queue: u32,
    default_wait: BatchWait,
) -> (QueuePolicy, Option<BatchPolicy>) {
    let d = config.dynamic_batching.as_ref();
    let micros = |us: u64| (us > 0).then(|| Duration::from_micros(us));
    let queue = QueuePolicy {
        max_queue_size: d
            .and_then(|d| d.max_queue_size)
            .filter(|&q| q > 0)
            .unwrap_or(default_queue),
        default_timeout: d.and_then(|d| micros(d.default_timeout_microseconds)),
        allow_timeout_override: d.is_some_and(|d| d.allow_timeout_override),
    };
    let batch = d.filter(|_| config.max_batch_size > 0).map(|d| {
        let max = config.max_batch_size as usize;
        let mut preferred: Vec<usize> = d
            .preferred_batch_size
            .iter()
            .map(|&p| p as usize)
            .filter(|&p| p > 0 && p <= max)
            .collect();
        preferred.sort_unstable();
        preferred.dedup();
        BatchPolicy {
            max_batch_size: max,
            preferred,
            max_queue_delay: Duration::from_micros(d.max_queue_delay_microseconds),
            wait: config
                .parameters
                .get(BATCH_WAIT_PARAMETER)
                .and_then(|v| BatchWait::parse(v))
                .unwrap_or(default_wait),
        }
    });
    (queue, batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_policy_follows_triton() {
        let mut q = QueuePolicy {
            max_queue_size: 1,
            default_timeout: None,
            allow_timeout_override: false,
        };
        let ms = Duration::from_millis;
        assert_eq!(q.timeout(None), None);
        assert_eq!(q.timeout(Some(ms(5))), Some(ms(5)));
        assert_eq!(q.timeout(Some(ms(0))), None);
        q.default_timeout = Some(ms(10));
        assert_eq!(q.timeout(None), Some(ms(10)));
        assert_eq!(q.timeout(Some(ms(5))), Some(ms(10)));
        q.allow_timeout_override = true;
        assert_eq!(q.timeout(Some(ms(5))), Some(ms(5)));
        assert_eq!(q.timeout(Some(ms(50))), Some(ms(10)));
    }
}
