//! The OTLP/HTTP exporter: finished spans go into a bounded queue; one background task batches
//! them and POSTs each batch as OTLP JSON to the collector's `/v1/traces`.
//!
//! Ending a span never waits: when the queue is full the span is dropped and counted
//! (`*_trace_spans_dropped_total`), so a slow or absent collector costs the services nothing but
//! the spans. A failed or timed-out POST is counted and its spans are not retried.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::config::ExportConfig;
use crate::otlp_json;
use crate::span::{SpanData, Tracer};

/// Counters of the exporter, registered under the service's prefix by [`ExportMetrics::register`].
#[derive(Clone, Debug, Default)]
pub struct ExportMetrics {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the queue was full.
    pub dropped: Counter,
    /// Spans lost because their POST failed or timed out.
    pub failed: Counter,
}

impl ExportMetrics {
    /// Registers the counters as `<prefix>_trace_spans_{exported,dropped,failed}_total`.
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        registry.register(
            format!("{prefix}_trace_spans_exported"),
            "Spans accepted by the OTLP collector",
            self.exported.clone(),
        );
        registry.register(
            format!("{prefix}_trace_spans_dropped"),
            "Spans dropped because the export queue was full",
            self.dropped.clone(),
        );
        registry.register(
            format!("{prefix}_trace_spans_failed"),
            "Spans lost because their export request failed or timed out",
            self.failed.clone(),
        );
    }

    /// The three counters in the Prometheus text format, for services that render their metrics
    /// by hand.
    pub fn to_text(&self, prefix: &str) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            (
                "exported",
                "Spans accepted by the OTLP collector",
                &self.exported,
            ),
            (
                "dropped",
                "Spans dropped because the export queue was full",
                &self.dropped,
            ),
            (
                "failed",
                "Spans lost because their export request failed or timed out",
                &self.failed,
            ),
        ] {
            let family = format!("{prefix}_trace_spans_{name}_total");
            out.push_str(&format!(
                "# HELP {family} {help}\n# TYPE {family} counter\n{family} {}\n",
                c.get()
            ));
        }
        out
    }
}

/// What the exporter task receives.
enum Message {
    Span(SpanData),
    /// Export everything queued before this message, then answer.
    Flush(oneshot::Sender<()>),
}

/// The sending side, shared by every span of a [`Tracer`].
pub(crate) struct Exporter {
    /// Bounded by `max_queue_size`: `try_send` never waits.
    queue: mpsc::Sender<Message>,
    metrics: ExportMetrics,
}

impl Exporter {
    pub(crate) fn submit(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(span)).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

impl Tracer {
    /// Starts exporting to `config.endpoint` from a background task; must be called inside a
    /// Tokio runtime. The task ends when every clone of the tracer (and every span) is dropped,
    /// after exporting what is queued.
    ///
    /// # Errors
    /// [`reqwest::Error`] when the HTTP client cannot be built (TLS backend initialisation).
    pub fn start(config: ExportConfig, metrics: ExportMetrics) -> Result<Tracer, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        let (queue, rx) = mpsc::channel(config.max_queue_size.max(1));
        tracing::info!(
            otlp.endpoint = %config.endpoint,
            service.name = %config.service_name,
            "exporting trace spans (OTLP/HTTP JSON)"
        );
        tokio::spawn(export_loop(rx, client, config, metrics.clone()));
        Ok(Tracer {
            exporter: Some(Arc::new(Exporter { queue, metrics })),
        })
    }

    /// The exporter's counters, when exporting.
    pub fn metrics(&self) -> Option<&ExportMetrics> {
        self.exporter.as_ref().map(|e| &e.metrics)
    }

    /// Exports every span ended before this call; returns when the collector answered (or the
    /// export timed out). Use at shutdown and in tests. Does nothing when export is off.
    pub async fn flush(&self) {
        let Some(e) = &self.exporter else { return };
        let (tx, rx) = oneshot::channel();
        if e.queue.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Collects spans until a batch is full, the schedule delay passes, or a flush is asked for;
/// then posts them. One POST at a time: a slow collector backs spans up into the bounded queue
/// (where they are dropped and counted) rather than into unbounded concurrent requests.
async fn export_loop(
    mut rx: mpsc::Receiver<Message>,
    client: reqwest::Client,
    config: ExportConfig,
    metrics: ExportMetrics,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(config.max_batch_size);
    loop {
        let deadline = tokio::time::Instant::now() + config.schedule_delay;
        let mut flushed: Option<oneshot::Sender<()>> = None;
        let mut closed = false;
        while batch.len() < config.max_batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Message::Span(s))) => batch.push(s),
                Ok(Some(Message::Flush(done))) => {
                    flushed = Some(done);
                    break;
                }
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            post(&client, &config, &metrics, &batch).await;
            batch.clear();
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

async fn post(
    client: &reqwest::Client,
    config: &ExportConfig,
    metrics: &ExportMetrics,
    spans: &[SpanData],
) {
    let body = otlp_json::export_request(&config.service_name, &config.scope_name, spans);
    let count = u64::try_from(spans.len()).unwrap_or(u64::MAX);
    let result = client
        .post(&config.endpoint)
        .headers(config.headers.clone())
        .json(&body)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    match result {
        Ok(_) => {
            metrics.exported.inc_by(count);
        }
        Err(e) => {
            metrics.failed.inc_by(count);
            // Rate-limited by the counter: one warning per failed batch is bounded by the batch
            // schedule (at most a few per second).
            tracing::warn!(otlp.endpoint = %config.endpoint, error = %e, spans = count, "span export failed");
        }
    }
}

/// How long [`Tracer::flush`] may take at shutdown before the process exits anyway.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
