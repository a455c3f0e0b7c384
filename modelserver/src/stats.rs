//! Per-model-version inference statistics: the numbers behind both the statistics extension
//! (`/v2/models/{m}/stats`, gRPC ModelStatistics) and Triton's `nv_inference_*` metrics, so the
//! two can never disagree.

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
}

impl ModelStats {
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
            "batch_stats": [],
        })
    }
}
