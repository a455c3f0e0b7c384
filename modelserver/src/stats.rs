//! Per-model-version inference statistics: the numbers behind both the statistics extension
//! (`/v2/models/{m}/stats`, gRPC ModelStatistics) and Triton's `nv_inference_*` metrics, so the
//! two can never disagree.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};

/// A cumulative count and total duration.
#[derive(Debug, Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    /// Adds one occurrence lasting `d`.
    pub fn record(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (count, total nanoseconds).
    pub fn get(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }

    fn json(&self) -> Json {
        let (count, ns) = self.get();
        json!({"count": count, "ns": ns})
    }
}

/// Statistics of one model version.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Successful requests, end to end.
    pub success: DurationStat,
    /// Failed requests, end to end.
    pub fail: DurationStat,
    /// Time waiting for a session.
    pub queue: DurationStat,
    /// Building ONNX Runtime inputs.
    pub compute_input: DurationStat,
    /// `Session::run`.
    pub compute_infer: DurationStat,
    /// Extracting outputs.
    pub compute_output: DurationStat,
    /// Inferences (batch elements) completed.
    pub inference_count: AtomicU64,
    /// Model executions.
    pub execution_count: AtomicU64,
    /// Requests accepted and not yet answered.
    pub pending: AtomicU64,
    /// Last inference, ms since the epoch.
    pub last_inference_ms: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected_overload: AtomicU64,
    /// Requests whose deadline passed while they were queued.
    pub timed_out: AtomicU64,
    /// Requests given up while queued because their client went away (never computed).
    pub cancelled: AtomicU64,
    /// Executions by batch size (inferences per execution); at most `max_batch_size` keys, so
    /// bounded.
    batches: Mutex<BTreeMap<u64, BatchStat>>,
}

/// Executions of one batch size: Triton's `batch_stats` entry.
#[derive(Debug, Default, Clone, Copy)]
struct BatchStat {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// Upper bounds of the `nv_inference_batch_size` histogram buckets (then `+Inf`).
pub const BATCH_SIZE_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

impl ModelStats {
    /// Records one model execution of `batch` inferences and the time of each phase.
    pub fn record_batch(&self, batch: u64, times: &crate::runtime::ExecutionTimes) {
        self.compute_input.record(times.input);
        self.compute_infer.record(times.infer);
        self.compute_output.record(times.output);
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            let b = batches.entry(batch).or_default();
            b.count += 1;
            b.input_ns += ns(times.input);
            b.infer_ns += ns(times.infer);
            b.output_ns += ns(times.output);
        }
        self.record_execution(batch);
    }

    /// Cumulative `nv_inference_batch_size` histogram: (upper bound or `None` for `+Inf`, count
    /// of executions with at most that batch size), then the sum of batch sizes.
    pub fn batch_size_histogram(&self) -> (Vec<(Option<u64>, u64)>, u64) {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let mut buckets: Vec<(Option<u64>, u64)> = BATCH_SIZE_BUCKETS
            .iter()
            .map(|&le| {
                let n = batches.range(..=le).map(|(_, b)| b.count).sum();
                (Some(le), n)
            })
            .collect();
        buckets.push((None, batches.values().map(|b| b.count).sum()));
        let sum = batches.iter().map(|(size, b)| size * b.count).sum();
        (buckets, sum)
    }

    /// Records a completed execution of `batch` inferences.
    pub fn record_execution(&self, batch: u64) {
        self.inference_count.fetch_add(batch, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_inference_ms.store(
            u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Triton's statistics JSON for one model version.
    pub fn to_json(&self, name: &str, version: &str) -> Json {
        json!({
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms.load(Ordering::Relaxed),
            "inference_count": self.inference_count.load(Ordering::Relaxed),
            "execution_count": self.execution_count.load(Ordering::Relaxed),
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
            },
            "batch_stats": self.batch_stats_json(),
        })
    }

    fn batch_stats_json(&self) -> Json {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let stat = |count: u64, ns: u64| json!({"count": count, "ns": ns});
        batches
            .iter()
            .map(|(size, b)| {
                json!({
                    "batch_size": size,
                    "compute_input": stat(b.count, b.input_ns),
                    "compute_infer": stat(b.count, b.infer_ns),
                    "compute_output": stat(b.count, b.output_ns),
                })
            })
            .collect()
    }
}
