//! One stream's filter: Envoy's request becomes the `CheckRequest` Envoy's ext_authz filter would
//! have sent, the pipeline decides it, and its `CheckResponse` is applied exactly as ext_authz
//! applies it (allow: set the `x-authz-*` headers, remove credentials, add the `RateLimit-*`
//! headers to the response; deny: answer with its status, headers and JSON body).
//!
//! # Deciding on the worker, waiting elsewhere
//!
//! The decision is a future ([`Decide`]) the filter owns and polls on the stream's worker thread,
//! inside the pipeline's runtime context and marked [`MustNotBlock`]: authentication, policy and
//! in-process limits run right there, in the hook; the audit append only queues its record for
//! the writer thread (never an inline `fdatasync` on an Envoy worker), and a Redis round trip
//! only sends. The stream pauses. Whatever the future waits on wakes it through its waker, which
//! commits a scheduler event; Envoy then calls `on_scheduled` on the worker, which polls again.
//! So a check costs two thread hand-offs (worker → audit writer → worker), with no thread of the
//! module's own in between.
//!
//! # Pausing and resuming safely
//!
//! While the pipeline decides, the stream is paused and the filter is owned by Envoy (it may be
//! destroyed at any time: the client disconnects, the stream is reset). The future is polled
//! only by the filter, on the worker, in a hook; its waker holds only an `Arc<Pending>` and
//! wakes the worker through the scheduler. When the filter is dropped first it marks the
//! `Pending` gone (the waker then does not even wake the worker) and drops the future, as a
//! gRPC server drops a cancelled call's handler: a record already queued is still written.
//! Nothing the waker holds is freed under it (it is all reference-counted), and nothing the
//! filter owns is reachable from it. A decision that is ready at its first poll (inside the
//! hook that pauses) is stored in the `Pending` and applied from `on_scheduled`, so the stream is
//! always resumed from outside the hook that paused it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use authz::audit::MustNotBlock;

use authz::decision::ReasonCode;
use authz::request::first_frame_len;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, HeaderValueOption, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

use crate::abi::{self, body_status, headers_status};
use crate::engine::{Checker, Decide, unavailable};
use crate::host::{Host, Wake};

/// The path prefix of OIP gRPC calls, whose model is named in the message, not the path.
const GRPC_SERVICE_PREFIX: &str = "/inference.GRPCInferenceService/";

/// The scheduler event that says "poll the decision again" (or "its answer is in `Pending`").
pub const EVENT_DECIDED: u64 = 1;

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// A gRPC call: headers held, body frames collected until the whole first message is here
    /// (or the body ends).
    CollectingBody,
    /// Paused; the pipeline is deciding.
    Deciding,
    /// Allowed and resumed.
    Allowed,
    /// Answered locally (denied, or failed closed).
    Answered,
}

/// What the filter shares with its decision's waker.
pub struct Pending {
    /// A decision that was ready at its first poll, applied from `on_scheduled`.
    answer: Mutex<Option<CheckResponse>>,
    /// Set when the filter is dropped: the stream is gone, waking it is pointless.
    gone: AtomicBool,
    /// Wakes the stream's worker thread; safe after the stream is gone (Envoy drops the event).
    wake: Arc<dyn Wake>,
}

impl Pending {
    fn new(wake: Arc<dyn Wake>) -> Self {
        Pending {
            answer: Mutex::new(None),
            gone: AtomicBool::new(false),
            wake,
        }
    }

    /// Stores an answer for `on_scheduled` and wakes the stream unless it is already gone.
    fn deliver(&self, answer: CheckResponse) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
        self.wake_stream();
    }

    fn wake_stream(&self) {
        if !self.gone.load(Ordering::Acquire) {
            self.wake.wake(EVENT_DECIDED);
        }
    }

    fn take(&self) -> Option<CheckResponse> {
        self.answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The decision's waker: called from whatever thread the awaited event completes on (the audit
/// writer, a Redis client task), it schedules `on_scheduled` on the stream's worker.
impl std::task::Wake for Pending {
    fn wake(self: Arc<Self>) {
        self.wake_stream();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_stream();
    }
}

/// A decision that panicked while polled (caught at the boundary).
struct Panicked;

/// Why a stream whose decision panicked is refused.
const PIPELINE_FAILED: &str = "the decision pipeline failed";

/// The filter of one stream.
pub struct Filter {
    checker: Arc<dyn Checker>,
    phase: Phase,
    /// Built from the headers; completed with the body for gRPC calls.
    check: Option<CheckRequest>,
    /// The check in flight: what its waker shares.
    pending: Option<Arc<Pending>>,
    /// The check in flight: its decision, polled on this stream's worker.
    decide: Option<Decide>,
    /// `response_headers_to_add` of an allow (`RateLimit-*`), set on the upstream's response.
    response_headers: Vec<(String, String)>,
    /// A gRPC request (`content-type: application/grpc...`): a denial then carries its own
    /// `grpc-status` (see [`grpc_status_of`]).
    grpc: bool,
    /// The decision panicked once: the stream is being refused (audited) instead; a second
    /// panic answers 503 without a record.
    panicked: bool,
}

impl Drop for Filter {
    fn drop(&mut self) {
        if let Some(p) = &self.pending {
            p.gone.store(true, Ordering::Release);
        }
        // Dropped inside the runtime's context: its timers and channels belong to it.
        let _runtime = self.checker.enter();
        self.decide = None;
    }
}

impl Filter {
    /// A filter for a new stream.
    pub fn new(checker: Arc<dyn Checker>) -> Self {
        Filter {
            checker,
            phase: Phase::Start,
            check: None,
            pending: None,
            decide: None,
            response_headers: Vec::new(),
            grpc: false,
            panicked: false,
        }
    }

    /// The request headers: decide now, or (gRPC with a body) once the body's start is here.
    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool) -> i32 {
        let check = check_request(host);
        let path = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map_or("", |h| h.path.as_str());
        self.grpc = host.request_headers().iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(b"content-type") && v.starts_with(b"application/grpc")
        });
        if path.starts_with(GRPC_SERVICE_PREFIX) && !end_of_stream {
            self.check = Some(check);
            self.phase = Phase::CollectingBody;
            return headers_status::STOP_ITERATION;
        }
        self.start(host, check);
        headers_status::STOP_ALL_ITERATION_AND_WATERMARK
    }

    /// A request body frame: collected while a gRPC call's model is still unknown, held while
    /// deciding, passed on after an allow.
    pub fn on_request_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> i32 {
        match self.phase {
            Phase::CollectingBody => {
                let Some(check) = self.check.take() else {
                    self.fail(host, "request state lost");
                    return body_status::STOP_ITERATION_AND_WATERMARK;
                };
                self.collect_first_message(host, check, end_of_stream);
                body_status::STOP_ITERATION_AND_WATERMARK
            }
            Phase::Deciding | Phase::Answered => body_status::STOP_ITERATION_AND_WATERMARK,
            Phase::Start | Phase::Allowed => body_status::CONTINUE,
        }
    }

    /// Adds the frame just received to a gRPC call's body and, once the whole first message is
    /// here, decides on it: the model authz reads is then the one the model server decodes (a
    /// duplicated `model_name` anywhere in the message is refused as malformed, not resolved by
    /// protobuf's last-wins). A message declared larger than the configured limit is refused
    /// before it is read; a body that ends early is decided on what arrived (the model server
    /// rejects the cut frame).
    fn collect_first_message(
        &mut self,
        host: &mut impl Host,
        mut check: CheckRequest,
        end_of_stream: bool,
    ) {
        let limit = self.checker.max_grpc_message_bytes();
        let Some(http) = http_of(&mut check) else {
            self.fail(host, "request state lost");
            return;
        };
        let frame = host.received_body();
        let want = first_frame_len(&http.raw_body).unwrap_or(usize::MAX);
        let room = want.saturating_sub(http.raw_body.len());
        http.raw_body
            .extend_from_slice(&frame[..room.min(frame.len())]);
        match first_frame_len(&http.raw_body) {
            Some(len) if len - 5 > limit => {
                http.raw_body.truncate(5);
                let why = format!("gRPC message larger than the {limit} bytes authz reads");
                self.refuse(host, check, ReasonCode::MalformedRequest, why);
                return;
            }
            Some(len) if http.raw_body.len() >= len => {
                http.raw_body.truncate(len);
                self.start(host, check);
                return;
            }
            _ => {}
        }
        if end_of_stream {
            self.start(host, check);
        } else {
            self.check = Some(check);
        }
    }

    /// Request trailers: a gRPC call whose body ended before its first message did is decided now.
    pub fn on_request_trailers(&mut self, host: &mut impl Host) -> i32 {
        if self.phase == Phase::CollectingBody
            && let Some(check) = self.check.take()
        {
            self.start(host, check);
        }
        match self.phase {
            Phase::Deciding | Phase::Answered | Phase::CollectingBody => {
                abi::trailers_status::STOP_ITERATION
            }
            Phase::Start | Phase::Allowed => abi::CONTINUE,
        }
    }

    /// The response headers: an allow's `RateLimit-*` headers go to the client.
    pub fn on_response_headers(&mut self, host: &mut impl Host) -> i32 {
        for (name, value) in &self.response_headers {
            host.set_response_header(name, value);
        }
        abi::CONTINUE
    }

    /// The worker thread, woken by the decision's waker: poll it again (or apply the answer it
    /// had at its first poll).
    pub fn on_scheduled(&mut self, host: &mut impl Host, event_id: u64) {
        if event_id != EVENT_DECIDED || self.phase != Phase::Deciding {
            return;
        }
        if let Some(answer) = self.pending.as_ref().and_then(|p| p.take()) {
            self.apply(host, answer);
            return;
        }
        if let Some(answer) = self.poll_answer(host) {
            self.apply(host, answer);
        }
    }

    /// Polls the decision in flight; its answer once there is one. A decision that panicked is
    /// replaced by the audited refusal ([`Filter::refuse_after_panic`]), polled in its turn.
    fn poll_answer(&mut self, host: &mut impl Host) -> Option<CheckResponse> {
        match self.poll_decision()? {
            Ok(answer) => Some(answer),
            Err(Panicked) => self.refuse_after_panic(host),
        }
    }

    /// After the decision panicked: the stream is refused `unavailable` (503) through the
    /// pipeline's refusal, so the failure has an audit record like any decision, and resumes
    /// when that record is durable. If the refusal panics too, the answer is a 503 at once,
    /// without a record. Never an allow.
    fn refuse_after_panic(&mut self, host: &mut impl Host) -> Option<CheckResponse> {
        self.decide = None;
        if std::mem::replace(&mut self.panicked, true) {
            return Some(unavailable(PIPELINE_FAILED));
        }
        let check = check_request(host);
        self.refuse(
            host,
            check,
            ReasonCode::Unavailable,
            PIPELINE_FAILED.to_owned(),
        );
        None
    }

    /// Polls the decision in flight on this thread, in the pipeline's runtime context, never
    /// waiting on the disk here; its answer once it has one, or that it panicked.
    fn poll_decision(&mut self) -> Option<Result<CheckResponse, Panicked>> {
        let pending = Arc::clone(self.pending.as_ref()?);
        let decide = self.decide.as_mut()?;
        let waker = Waker::from(pending);
        let mut cx = Context::from_waker(&waker);
        let polled = {
            let _runtime = self.checker.enter();
            let _no_disk = MustNotBlock::enter();
            catch_unwind(AssertUnwindSafe(|| decide.as_mut().poll(&mut cx)))
        };
        let answer = match polled {
            Ok(Poll::Pending) => return None,
            Ok(Poll::Ready(answer)) => Ok(answer),
            Err(_) => Err(Panicked),
        };
        self.decide = None;
        Some(answer)
    }

    /// Answers 503 in the pipeline's error shape (never allows): for any failure of the module.
    pub fn fail(&mut self, host: &mut impl Host, why: &str) {
        if matches!(self.phase, Phase::Answered | Phase::Allowed) {
            return;
        }
        self.apply(host, unavailable(why));
    }

    fn start(&mut self, host: &mut impl Host, check: CheckRequest) {
        let traceparent = envoy_traceparent(host, &check);
        let decide = self.checker.check(check, traceparent);
        self.pause(host, decide);
    }

    fn refuse(
        &mut self,
        host: &mut impl Host,
        check: CheckRequest,
        reason: ReasonCode,
        why: String,
    ) {
        let decide = self.checker.refusal(check, reason, why);
        self.pause(host, decide);
    }

    /// Pauses the stream on `decide` and polls it once, here in the hook. An answer it has
    /// already goes through the scheduler, so the stream resumes outside this hook.
    fn pause(&mut self, host: &mut impl Host, decide: Decide) {
        let pending = Arc::new(Pending::new(host.scheduler()));
        self.pending = Some(Arc::clone(&pending));
        self.decide = Some(decide);
        self.phase = Phase::Deciding;
        if let Some(answer) = self.poll_answer(host) {
            pending.deliver(answer);
        }
    }

    /// Applies a `CheckResponse` the way Envoy's ext_authz filter does.
    fn apply(&mut self, host: &mut impl Host, answer: CheckResponse) {
        match answer.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                for (name, value) in pairs(&ok.headers) {
                    // The ABI cannot set an empty value (it removes the header). The only empty
                    // one authz sets is `x-authz-model-version` of an unversioned request, and
                    // the model server reads its absence as that same "no version"
                    // (modelserver/src/access.rs).
                    if value.is_empty() {
                        host.remove_request_header(&name);
                    } else {
                        host.set_request_header(&name, &value);
                    }
                }
                for name in &ok.headers_to_remove {
                    host.remove_request_header(name);
                }
                self.response_headers = pairs(&ok.response_headers_to_add);
                self.phase = Phase::Allowed;
                host.continue_decoding();
            }
            Some(HttpResponse::DeniedResponse(denied)) => {
                self.phase = Phase::Answered;
                let status = denied
                    .status
                    .map_or(403, |s| u32::try_from(s.code).unwrap_or(403));
                let mut headers = pairs(&denied.headers);
                if self.grpc {
                    headers.push(("grpc-status".to_owned(), grpc_status_of(status).to_string()));
                }
                host.send_response(status, &headers, &denied.body);
            }
            // The pipeline always answers allow or deny; anything else fails closed.
            Some(HttpResponse::ErrorResponse(_)) | None => {
                self.phase = Phase::Deciding;
                let denied = unavailable("the decision had no answer");
                self.apply(host, denied);
            }
        }
    }
}

/// The `grpc-status` of a denial with HTTP `status`: Envoy's `Grpc::Utility::httpToGrpcStatus`,
/// which its local reply to a gRPC request uses under ext_authz. Through the 1.40 module ABI
/// `send_response` passes gRPC status OK instead (a denial would read as an empty success), and
/// a `grpc-status` the reply's headers carry takes precedence, so the module sets it.
fn grpc_status_of(status: u32) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

fn pairs(options: &[HeaderValueOption]) -> Vec<(String, String)> {
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

fn http_of(check: &mut CheckRequest) -> Option<&mut HttpRequest> {
    check.attributes.as_mut()?.request.as_mut()?.http.as_mut()
}

/// The W3C `traceparent` of Envoy's span for this request, so that the check's spans are its
/// children, as under ext_authz (where Envoy sends its ext_authz span's context with the call).
/// The ABI does not tell whether Envoy samples the span: the flags are those of the client's
/// `traceparent` when Envoy continues the client's trace (Envoy's sampling follows the client's),
/// else sampled (Envoy started the trace, and records it under its default sampling).
fn envoy_traceparent(host: &impl Host, check: &CheckRequest) -> Option<String> {
    let (trace_id, span_id) = host.active_span()?;
    let client = authz::request::traceparent(check)
        .filter(|c| c.trace_id.to_string().eq_ignore_ascii_case(&trace_id));
    let flags = if client.is_some_and(|c| !c.sampled) {
        "00"
    } else {
        "01"
    };
    Some(format!("00-{trace_id}-{span_id}-{flags}"))
}

/// The `CheckRequest` Envoy's ext_authz filter sends for this stream with the production
/// settings (`encode_raw_headers`: every header line as received, in `header_map`), so the
/// pipeline's request parsing sees the same facts in both modes.
fn check_request(host: &impl Host) -> CheckRequest {
    let headers = host.request_headers();
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let http = HttpRequest {
        method: pseudo(":method"),
        path: pseudo(":path"),
        host: pseudo(":authority"),
        scheme: pseudo(":scheme"),
        header_map: Some(HeaderMap {
            headers: headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: String::from_utf8_lossy(k).into_owned(),
                    raw_value: v.clone(),
                    ..Default::default()
                })
                .collect(),
        }),
        headers: HashMap::new(),
        ..Default::default()
    };
    let source = Peer {
        address: host.source_address().and_then(|a| socket_address(&a)),
        principal: host.peer_uri_san().unwrap_or_default(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// "ip:port" (IPv6 as "[ip]:port") as Envoy's socket address.
fn socket_address(addr: &str) -> Option<Address> {
    let parsed: std::net::SocketAddr = addr.parse().ok()?;
    Some(Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: parsed.ip().to_string(),
            port_specifier: Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    u32::from(parsed.port()),
                ),
            ),
            ..Default::default()
        })),
    })
}

#[cfg(test)]
mod tests;
