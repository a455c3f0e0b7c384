//! The metrics text (`/metrics`): Triton's `nv_inference_*` families, the batch-size histogram,
//! model state (provider, readiness, load failures, GPU fallback), the gateway-check refusals and
//! GPU samples.
//!
//! Rendered by hand rather than through a metrics library because Triton's counter names carry no
//! `_total` suffix, and dashboards built for Triton expect them exactly. Writing to a `String`
//! cannot fail; the `writeln!` results are ignored for that reason.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::ModelServer;
use crate::repository::{LoadedModel, ModelRepository};
use crate::runtime::Provider;

type Get = fn(&LoadedModel) -> u64;

/// Triton's per-model families: name, type, help, and the value of one model version.
const TRITON_FAMILIES: [(&str, &str, &str, Get); 14] = [
    (
        "nv_inference_request_success",
        "counter",
        "Number of successful inference requests, all batch sizes",
        |m| m.stats.success.get().0,
    ),
    (
        "nv_inference_request_failure",
        "counter",
        "Number of failed inference requests, all batch sizes",
        |m| m.stats.fail.get().0,
    ),
    (
        "nv_inference_count",
        "counter",
        "Number of inferences performed (batch elements)",
        |m| m.stats.inference_count.load(Ordering::Relaxed),
    ),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed",
        |m| m.stats.execution_count.load(Ordering::Relaxed),
    ),
    (
        "nv_inference_request_duration_us",
        "counter",
        "Cumulative inference request duration in microseconds",
        |m| (m.stats.success.get().1 + m.stats.fail.get().1) / 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "counter",
        "Cumulative inference queuing duration in microseconds",
        |m| m.stats.queue.get().1 / 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "counter",
        "Cumulative compute input duration in microseconds",
        |m| m.stats.compute_input.get().1 / 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "counter",
        "Cumulative compute inference duration in microseconds",
        |m| m.stats.compute_infer.get().1 / 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "counter",
        "Cumulative inference compute output duration in microseconds",
        |m| m.stats.compute_output.get().1 / 1000,
    ),
    (
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution",
        |m| m.stats.pending.load(Ordering::Relaxed),
    ),
    (
        "nv_inference_queue_size",
        "gauge",
        "Instantaneous number of requests admitted to the queue and not yet started",
        |m| u64::from(m.scheduler.queued()),
    ),
    (
        "nv_inference_rejected_overload",
        "counter",
        "Number of requests rejected because the model's queue was full",
        |m| m.stats.rejected_overload.load(Ordering::Relaxed),
    ),
    (
        "nv_inference_timed_out",
        "counter",
        "Number of requests whose timeout expired while they were queued",
        |m| m.stats.timed_out.load(Ordering::Relaxed),
    ),
    (
        "nv_inference_cancelled",
        "counter",
        "Number of queued requests dropped without running because their client went away",
        |m| m.stats.cancelled.load(Ordering::Relaxed),
    ),
];

impl ModelServer {
    /// The Prometheus text exposition: Triton's `nv_inference_*` families plus model state.
    pub fn metrics_text(&self) -> String {
        let models = self.repository.loaded();
        let mut out = String::new();
        write_triton_families(&mut out, &models);
        write_batch_sizes(&mut out, &models);
        write_model_state(&mut out, &models, &self.repository);
        self.access.write_metrics(&mut out);
        if let Some(nvml) = &self.gpu {
            crate::gpu::render(&nvml.sample(), &mut out);
        }
        out
    }
}

/// [`TRITON_FAMILIES`], one sample per loaded model version.
fn write_triton_families(out: &mut String, models: &[Arc<LoadedModel>]) {
    for (name, kind, help, get) in TRITON_FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in models {
            let _ = writeln!(
                out,
                "{name}{{model=\"{}\",version=\"{}\"}} {}",
                m.name,
                m.version,
                get(m)
            );
        }
    }
}

/// `nv_inference_batch_size`: the histogram of executed batch sizes.
fn write_batch_sizes(out: &mut String, models: &[Arc<LoadedModel>]) {
    let _ = writeln!(
        out,
        "# HELP nv_inference_batch_size Batch size (inferences) of each model execution\n# TYPE nv_inference_batch_size histogram"
    );
    for m in models {
        let labels = format!("model=\"{}\",version=\"{}\"", m.name, m.version);
        let (buckets, sum) = m.stats.batch_size_histogram();
        for (le, n) in &buckets {
            let le = le.map_or_else(|| "+Inf".to_string(), |l| l.to_string());
            let _ = writeln!(
                out,
                "nv_inference_batch_size_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let count = buckets.last().map_or(0, |b| b.1);
        let _ = writeln!(out, "nv_inference_batch_size_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "nv_inference_batch_size_count{{{labels}}} {count}");
    }
}

/// Where each model version runs, whether each model serves, load failures, GPU fallbacks.
fn write_model_state(out: &mut String, models: &[Arc<LoadedModel>], repository: &ModelRepository) {
    let _ = writeln!(
        out,
        "# HELP modelserver_model_execution_provider Execution provider of each loaded model version (1 = in use); cpu-fallback marks a GPU model running on CPU\n# TYPE modelserver_model_execution_provider gauge"
    );
    for m in models {
        let _ = writeln!(
            out,
            "modelserver_model_execution_provider{{model=\"{}\",version=\"{}\",provider=\"{}\"}} 1",
            m.name,
            m.version,
            m.provider.label()
        );
    }
    let _ = writeln!(
        out,
        "# HELP modelserver_model_ready Whether the model serves requests (0 = unavailable or unloaded)\n# TYPE modelserver_model_ready gauge"
    );
    for entry in repository.index(false) {
        let ready = u8::from(entry.state == Some("READY"));
        let _ = writeln!(
            out,
            "modelserver_model_ready{{model=\"{}\"}} {ready}",
            entry.name
        );
    }
    let _ = writeln!(
        out,
        "# HELP modelserver_model_load_failures_total Model loads that failed since start\n# TYPE modelserver_model_load_failures_total counter"
    );
    for (name, n) in repository.load_failures() {
        let _ = writeln!(
            out,
            "modelserver_model_load_failures_total{{model=\"{name}\"}} {n}"
        );
    }
    let fallback = models
        .iter()
        .filter(|m| matches!(m.provider, Provider::CpuFallback { .. }))
        .count();
    let _ = writeln!(
        out,
        "# HELP modelserver_gpu_fallback_models Loaded model versions configured for GPU running on CPU\n# TYPE modelserver_gpu_fallback_models gauge\nmodelserver_gpu_fallback_models {fallback}"
    );
}
