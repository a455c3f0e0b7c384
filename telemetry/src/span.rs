//! Spans: what one step of a request did, when, and how it ended.
//!
//! A [`Tracer`] hands out [`Span`]s. When export is off (or the parent was not sampled) a span is
//! an empty `Option`: starting, annotating and ending it allocates nothing and reads no clock, so
//! the services' hot paths pay a branch. A recording span is sent to the exporter's bounded queue
//! when it ends (explicitly or on drop).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::export::Exporter;
use crate::traceparent::{SpanId, TraceContext, TraceId};

/// Most attributes one span keeps; later ones are dropped (spans stay bounded whatever a caller
/// does).
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest string attribute value, in bytes; longer values are cut at a character boundary.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// OTLP's span kinds (the numbers are the protocol's enum values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A step inside the service.
    Internal = 1,
    /// The service handling a request from a remote caller.
    Server = 2,
}

/// How a span ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    /// Nothing said (the default: success is not asserted).
    Unset,
    /// Failed, with a short bounded description (an error code, never user input).
    Error(Cow<'static, str>),
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// Text, at most [`MAX_ATTRIBUTE_BYTES`].
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl From<&'static str> for AttributeValue {
    fn from(s: &'static str) -> Self {
        AttributeValue::Str(Cow::Borrowed(s))
    }
}

impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::Str(Cow::Owned(s))
    }
}

impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::Int(v)
    }
}

impl From<usize> for AttributeValue {
    fn from(v: usize) -> Self {
        AttributeValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        AttributeValue::Bool(v)
    }
}

/// A finished (or finishing) span, as exported.
#[derive(Clone, Debug)]
pub struct SpanData {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// The span that caused it: a local one, or the remote caller's from `traceparent`.
    pub parent_span_id: Option<SpanId>,
    /// A fixed, dotted name such as `authz.check`.
    pub name: &'static str,
    /// Server or internal.
    pub kind: SpanKind,
    /// Wall-clock start.
    pub start: SystemTime,
    /// Wall-clock end.
    pub end: SystemTime,
    /// How it ended.
    pub status: SpanStatus,
    /// Dotted keys (`decision.reason`, `model.name`), at most [`MAX_ATTRIBUTES`].
    pub attributes: Vec<(&'static str, AttributeValue)>,
}

/// Starts spans and sends finished ones to the exporter. Cloning shares the exporter.
/// [`Tracer::disabled`] (also the `Default`) records nothing.
#[derive(Clone, Default)]
pub struct Tracer {
    /// `None` when export is off.
    pub(crate) exporter: Option<Arc<Exporter>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.exporter.is_some())
            .finish()
    }
}

impl Tracer {
    /// A tracer that records nothing.
    pub fn disabled() -> Self {
        Tracer { exporter: None }
    }

    /// Whether spans are exported.
    pub fn is_enabled(&self) -> bool {
        self.exporter.is_some()
    }

    /// Starts the server span of one incoming request. With a `remote` parent (the caller's
    /// `traceparent`) the span joins that trace and is recorded only if the parent was sampled;
    /// without one it starts a new, sampled trace.
    pub fn server_span(&self, name: &'static str, remote: Option<TraceContext>) -> Span {
        let Some(exporter) = &self.exporter else {
            return Span::none();
        };
        let (trace_id, parent) = match remote {
            Some(p) if !p.sampled => return Span::none(),
            Some(p) => (p.trace_id, Some(p.span_id)),
            None => (TraceId::random(), None),
        };
        Span::start(exporter, trace_id, parent, name, SpanKind::Server)
    }
}

/// One span; records nothing when empty (export off or unsampled). Ends when dropped, or
/// explicitly with [`Span::end`] / [`Span::end_at`].
#[derive(Default)]
pub struct Span {
    inner: Option<Box<Recording>>,
}

struct Recording {
    data: SpanData,
    exporter: Arc<Exporter>,
}

impl Span {
    /// A span that records nothing.
    pub fn none() -> Self {
        Span { inner: None }
    }

    fn start(
        exporter: &Arc<Exporter>,
        trace_id: TraceId,
        parent_span_id: Option<SpanId>,
        name: &'static str,
        kind: SpanKind,
    ) -> Self {
        let now = SystemTime::now();
        Span {
            inner: Some(Box::new(Recording {
                data: SpanData {
                    trace_id,
                    span_id: SpanId::random(),
                    parent_span_id,
                    name,
                    kind,
                    start: now,
                    end: now,
                    status: SpanStatus::Unset,
                    attributes: Vec::new(),
                },
                exporter: Arc::clone(exporter),
            })),
        }
    }

    /// Whether this span records (callers skip computing attribute values when it does not).
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// The span's trace id, when recording.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.inner.as_ref().map(|r| r.data.trace_id)
    }

    /// A handle that starts children of this span, cheap to clone and to move to another task or
    /// thread.
    pub fn handle(&self) -> SpanHandle {
        SpanHandle {
            inner: self
                .inner
                .as_ref()
                .map(|r| (r.data.trace_id, r.data.span_id, Arc::clone(&r.exporter))),
        }
    }

    /// Starts an internal child span now.
    pub fn child(&self, name: &'static str) -> Span {
        match &self.inner {
            None => Span::none(),
            Some(r) => Span::start(
                &r.exporter,
                r.data.trace_id,
                Some(r.data.span_id),
                name,
                SpanKind::Internal,
            ),
        }
    }

    /// Moves the start back to when the step really began (e.g. a request's admission to a
    /// queue, measured with a monotonic clock).
    pub fn set_start(&mut self, at: Instant) {
        if let Some(r) = &mut self.inner {
            r.data.start = wall_clock(at);
        }
    }

    /// Sets an attribute; beyond [`MAX_ATTRIBUTES`] it is ignored, and long text is cut.
    pub fn set_attribute(&mut self, key: &'static str, value: impl Into<AttributeValue>) {
        let Some(r) = &mut self.inner else { return };
        if r.data.attributes.len() >= MAX_ATTRIBUTES {
            return;
        }
        let value = match value.into() {
            AttributeValue::Str(s) if s.len() > MAX_ATTRIBUTE_BYTES => {
                AttributeValue::Str(Cow::Owned(truncate(&s, MAX_ATTRIBUTE_BYTES).to_owned()))
            }
            v => v,
        };
        r.data.attributes.push((key, value));
    }

    /// Marks the span failed with a short, bounded description (an error kind or reason code).
    pub fn set_error(&mut self, description: impl Into<Cow<'static, str>>) {
        if let Some(r) = &mut self.inner {
            let d: Cow<'static, str> = description.into();
            r.data.status = SpanStatus::Error(if d.len() > MAX_ATTRIBUTE_BYTES {
                Cow::Owned(truncate(&d, MAX_ATTRIBUTE_BYTES).to_owned())
            } else {
                d
            });
        }
    }

    /// Ends the span now and hands it to the exporter.
    pub fn end(self) {
        drop(self);
    }

    /// Ends the span at `at` (a monotonic instant already past) and hands it to the exporter.
    pub fn end_at(mut self, at: Instant) {
        if let Some(mut r) = self.inner.take() {
            r.data.end = wall_clock(at);
            r.exporter.submit(r.data);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut r) = self.inner.take() {
            r.data.end = SystemTime::now();
            r.exporter.submit(r.data);
        }
    }
}

/// Starts children of a span from anywhere (another task, a batching thread); empty when the span
/// does not record.
#[derive(Clone, Default)]
pub struct SpanHandle {
    inner: Option<(TraceId, SpanId, Arc<Exporter>)>,
}

impl SpanHandle {
    /// A handle whose children record nothing.
    pub fn none() -> Self {
        SpanHandle { inner: None }
    }

    /// Whether children of this handle record.
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts an internal child span now.
    pub fn child(&self, name: &'static str) -> Span {
        match &self.inner {
            None => Span::none(),
            Some((trace, span, exporter)) => {
                Span::start(exporter, *trace, Some(*span), name, SpanKind::Internal)
            }
        }
    }
}

tokio::task_local! {
    /// The span whose children the current task's deeper layers start (see [`in_span`]).
    static CURRENT: SpanHandle;
}

/// Runs `f` with `handle` as the current span of the task, so code below it (a scheduler, a
/// batcher) starts children with [`current_span`] without every signature in between carrying it.
pub async fn in_span<F: std::future::Future>(handle: SpanHandle, f: F) -> F::Output {
    CURRENT.scope(handle, f).await
}

/// The current task's span set by [`in_span`]; an empty handle outside one.
pub fn current_span() -> SpanHandle {
    CURRENT.try_with(SpanHandle::clone).unwrap_or_default()
}

/// The wall-clock time of a monotonic instant (now minus how long ago it was).
fn wall_clock(at: Instant) -> SystemTime {
    let now = Instant::now();
    let ago = now.saturating_duration_since(at);
    let ahead = at.saturating_duration_since(now);
    (SystemTime::now() - ago) + ahead
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_tracer_spans_record_nothing() {
        let t = Tracer::disabled();
        let mut s = t.server_span("x", None);
        assert!(!s.is_recording());
        s.set_attribute("a", "b");
        assert!(!s.child("y").is_recording());
        assert!(!s.handle().child("z").is_recording());
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
