use std::sync::atomic::AtomicUsize;

use authz::decision::{AuthMethod, Decision, Principal, ReasonCode};
use authz::response::to_check_response;

use super::*;

/// A local reply: status, headers, body.
type LocalReply = (u32, Vec<(String, String)>, String);

/// Records what the filter asked of Envoy.
#[derive(Default)]
struct FakeHost {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    set: Vec<(String, String)>,
    removed: Vec<String>,
    response_set: Vec<(String, String)>,
    sent: Option<LocalReply>,
    continued: usize,
    wake: Arc<FakeWake>,
    /// Envoy's span for the stream (trace id, span id), when it traces it.
    span: Option<(String, String)>,
}

#[derive(Default)]
struct FakeWake {
    wakes: AtomicUsize,
}

impl Wake for FakeWake {
    fn wake(&self, _event_id: u64) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

impl Host for FakeHost {
    fn request_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.headers.clone()
    }
    fn received_body(&self) -> Vec<u8> {
        self.body.clone()
    }
    fn source_address(&self) -> Option<String> {
        Some("10.1.2.3:5555".into())
    }
    fn peer_uri_san(&self) -> Option<String> {
        None
    }
    fn active_span(&self) -> Option<(String, String)> {
        self.span.clone()
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.set.push((name.into(), value.into()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.removed.push(name.into());
    }
    fn set_response_header(&mut self, name: &str, value: &str) {
        self.response_set.push((name.into(), value.into()));
    }
    fn send_response(&mut self, status: u32, headers: &[(String, String)], body: &str) {
        self.sent = Some((status, headers.to_vec(), body.into()));
    }
    fn continue_decoding(&mut self) {
        self.continued += 1;
    }
    fn scheduler(&mut self) -> Arc<dyn Wake> {
        Arc::clone(&self.wake) as Arc<dyn Wake>
    }
}

/// The fake's gRPC message limit.
const LIMIT: usize = 2048;

/// The answer a test gives a check in flight.
type Answer = futures::channel::oneshot::Sender<CheckResponse>;

/// Holds each check until the test answers it, as the audit writer or Redis would later (the
/// answer wakes the decision's waker, from the test's thread).
#[derive(Default)]
struct FakeChecker {
    checks: Mutex<Vec<(CheckRequest, Answer)>>,
    refusals: Mutex<Vec<(ReasonCode, String)>>,
    /// The `traceparent` each check was started in.
    traceparents: Mutex<Vec<Option<String>>>,
    /// Answers every later check at its first poll.
    at_once: Mutex<Option<CheckResponse>>,
    /// Checks (and, with `refusals_panic`, refusals too) panic when polled, as a bug in the
    /// pipeline would.
    checks_panic: AtomicBool,
    refusals_panic: AtomicBool,
}

impl FakeChecker {
    fn decide(&self, req: CheckRequest) -> Decide {
        if let Some(answer) = self.at_once.lock().unwrap().clone() {
            return Box::pin(async move { answer });
        }
        let (answer, answered) = futures::channel::oneshot::channel();
        self.checks.lock().unwrap().push((req, answer));
        Box::pin(async move {
            answered
                .await
                .unwrap_or_else(|_| unavailable("the test dropped the check"))
        })
    }
}

impl Checker for FakeChecker {
    fn check(&self, req: CheckRequest, envoy_traceparent: Option<String>) -> Decide {
        self.traceparents.lock().unwrap().push(envoy_traceparent);
        if self.checks_panic.load(Ordering::SeqCst) {
            return Box::pin(async { panic!("boom") });
        }
        self.decide(req)
    }
    fn refusal(&self, req: CheckRequest, reason: ReasonCode, why: String) -> Decide {
        self.refusals.lock().unwrap().push((reason, why));
        if self.refusals_panic.load(Ordering::SeqCst) {
            return Box::pin(async { panic!("boom") });
        }
        self.decide(req)
    }
    fn max_grpc_message_bytes(&self) -> usize {
        LIMIT
    }
    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        None
    }
}

impl FakeChecker {
    fn answer(&self, answer: CheckResponse) -> CheckRequest {
        let (req, reply) = self.checks.lock().unwrap().remove(0);
        let _ = reply.send(answer);
        req
    }
}

fn rest_headers() -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":path", "/v2/models/m/infer"),
        (":authority", "gw"),
        ("authorization", "Bearer t"),
        ("x-access-reason", "a"),
        ("x-access-reason", "b"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn allow() -> CheckResponse {
    let mut d = Decision::new(ReasonCode::Allowed, "ok");
    d.principal = Some(Principal {
        id: "analyst-1".into(),
        auth_method: AuthMethod::Jwt,
        roles: vec![],
    });
    d.model = Some("m".into());
    d.response_headers
        .push(("ratelimit-remaining".into(), "4".into()));
    to_check_response(&d)
}

fn setup() -> (Arc<FakeChecker>, Filter, FakeHost) {
    let checker = Arc::new(FakeChecker::default());
    let filter = Filter::new(Arc::clone(&checker) as Arc<dyn Checker>);
    let host = FakeHost {
        headers: rest_headers(),
        ..FakeHost::default()
    };
    (checker, filter, host)
}

#[test]
fn an_allow_resumes_with_the_services_headers_and_without_credentials() {
    let (checker, mut filter, mut host) = setup();
    assert_eq!(
        filter.on_request_headers(&mut host, false),
        headers_status::STOP_ALL_ITERATION_AND_WATERMARK
    );
    // Paused: body frames are held, nothing applied yet.
    assert_eq!(
        filter.on_request_body(&mut host, false),
        body_status::STOP_ITERATION_AND_WATERMARK
    );
    let req = checker.answer(allow());
    // The check carries every header line as received (the repeat included) and the peer.
    let attrs = req.attributes.unwrap();
    let http = attrs.request.unwrap().http.unwrap();
    assert_eq!(http.path, "/v2/models/m/infer");
    assert_eq!(http.header_map.unwrap().headers.len(), 6);
    assert!(format!("{:?}", attrs.source).contains("10.1.2.3"));
    assert_eq!(host.wake.wakes.load(Ordering::SeqCst), 1);

    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.continued, 1);
    let set: Vec<&str> = host.set.iter().map(|(k, _)| k.as_str()).collect();
    assert!(set.contains(&"x-authz-principal") && set.contains(&"x-authz-decision-id"));
    // The unversioned model's empty `x-authz-model-version` is left out (the ABI cannot set an
    // empty value; the model server reads its absence as "no version"), never set empty.
    assert!(!set.contains(&"x-authz-model-version"), "{set:?}");
    assert_eq!(
        host.removed,
        ["x-authz-model-version", "authorization", "x-api-key"]
    );
    assert!(host.sent.is_none());
    // The rate-limit headers go on the upstream's response.
    filter.on_response_headers(&mut host);
    assert_eq!(
        host.response_set,
        [("ratelimit-remaining".into(), "4".into())]
    );
    assert_eq!(
        filter.on_request_body(&mut host, true),
        body_status::CONTINUE
    );
}

#[test]
fn checks_join_envoys_span_with_the_clients_sampling_when_envoy_continues_its_trace() {
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let traced = |client: Option<&str>, span: Option<(&str, &str)>| {
        let (checker, mut filter, mut host) = setup();
        if let Some(tp) = client {
            host.headers
                .push((b"traceparent".to_vec(), tp.as_bytes().to_vec()));
        }
        host.span = span.map(|(t, s)| (t.to_owned(), s.to_owned()));
        filter.on_request_headers(&mut host, false);
        checker.traceparents.lock().unwrap().clone()
    };
    // Not traced by Envoy: no parent from Envoy (the pipeline falls back to the header).
    assert_eq!(traced(None, None), [None]);
    // Envoy started the trace: its span, sampled.
    assert_eq!(
        traced(None, Some((trace, "00f067aa0ba902b7"))),
        [Some(format!("00-{trace}-00f067aa0ba902b7-01"))]
    );
    // Envoy continues the client's unsampled trace: unsampled, Envoy's span as the parent.
    assert_eq!(
        traced(
            Some(&format!("00-{trace}-b7ad6b7169203331-00")),
            Some((trace, "00f067aa0ba902b7"))
        ),
        [Some(format!("00-{trace}-00f067aa0ba902b7-00"))]
    );
    // A client flag of another trace does not count.
    assert_eq!(
        traced(
            Some("00-11111111111111111111111111111111-b7ad6b7169203331-00"),
            Some((trace, "00f067aa0ba902b7"))
        ),
        [Some(format!("00-{trace}-00f067aa0ba902b7-01"))]
    );
}

#[test]
fn a_denial_is_answered_locally_with_status_headers_and_json_body() {
    let (checker, mut filter, mut host) = setup();
    filter.on_request_headers(&mut host, true);
    let mut d = Decision::new(ReasonCode::RateLimited, "slow down");
    d.response_headers = vec![("retry-after".into(), "3".into())];
    checker.answer(to_check_response(&d));
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    let (status, headers, body) = host.sent.expect("a local reply");
    assert_eq!(status, 429);
    assert!(headers.contains(&("retry-after".into(), "3".into())));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(host.continued, 0);
}

#[test]
fn a_request_cancelled_while_paused_is_never_woken_nor_touched() {
    let (checker, mut filter, mut host) = setup();
    filter.on_request_headers(&mut host, true);
    let wake = Arc::clone(&host.wake);
    // The client disconnects: Envoy destroys the filter while the check is in flight.
    drop(filter);
    drop(host);
    // The decision lands afterwards, on another thread; it only reaches reference-counted state.
    let handle = std::thread::spawn(move || {
        checker.answer(allow());
    });
    handle.join().unwrap();
    assert_eq!(
        wake.wakes.load(Ordering::SeqCst),
        0,
        "no wake for a gone stream"
    );
}

fn grpc_host(host: &mut FakeHost) {
    host.headers = vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (
            b":path".to_vec(),
            b"/inference.GRPCInferenceService/ModelInfer".to_vec(),
        ),
    ];
}

/// A gRPC frame header declaring a `len`-byte message.
fn frame_header(len: u32) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&len.to_be_bytes());
    b
}

fn raw_body(req: CheckRequest) -> Vec<u8> {
    req.attributes
        .unwrap()
        .request
        .unwrap()
        .http
        .unwrap()
        .raw_body
}

#[test]
fn grpc_calls_are_decided_on_their_whole_first_message() {
    let (checker, mut filter, mut host) = setup();
    grpc_host(&mut host);
    assert_eq!(
        filter.on_request_headers(&mut host, false),
        headers_status::STOP_ITERATION
    );
    host.body = frame_header(1500);
    host.body.extend([7; 595]);
    filter.on_request_body(&mut host, false);
    host.body = vec![7; 600];
    filter.on_request_body(&mut host, false);
    assert!(
        checker.checks.lock().unwrap().is_empty(),
        "1200 of 1505 bytes: not yet"
    );
    // The rest of the message and the start of a second one.
    host.body = vec![7; 400];
    filter.on_request_body(&mut host, false);
    let body = raw_body(checker.answer(allow()));
    assert_eq!(
        body.len(),
        1505,
        "exactly the first message, frame header included"
    );
}

#[test]
fn a_grpc_message_over_the_limit_is_refused_unread() {
    let (checker, mut filter, mut host) = setup();
    grpc_host(&mut host);
    filter.on_request_headers(&mut host, false);
    host.body = frame_header(u32::try_from(LIMIT).unwrap() + 1);
    host.body.extend([7; 100]);
    filter.on_request_body(&mut host, false);
    let (reason, why) = checker.refusals.lock().unwrap().remove(0);
    assert_eq!(reason, ReasonCode::MalformedRequest);
    assert!(why.contains("2048 bytes"), "{why}");
    let d = Decision::new(reason, why);
    assert_eq!(raw_body(checker.answer(to_check_response(&d))).len(), 5);
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.sent.as_ref().map(|s| s.0), Some(400));
    assert_eq!(host.continued, 0);
    // Exactly at the limit is read and decided.
    let (checker, mut filter, mut host) = setup();
    grpc_host(&mut host);
    filter.on_request_headers(&mut host, false);
    host.body = frame_header(u32::try_from(LIMIT).unwrap());
    host.body.extend(vec![7; LIMIT]);
    filter.on_request_body(&mut host, false);
    assert!(checker.refusals.lock().unwrap().is_empty());
    assert_eq!(raw_body(checker.answer(allow())).len(), LIMIT + 5);
}

#[test]
fn an_answer_without_a_response_fails_closed_with_503() {
    let (checker, mut filter, mut host) = setup();
    filter.on_request_headers(&mut host, true);
    checker.answer(CheckResponse::default());
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.sent.as_ref().map(|s| s.0), Some(503));
    assert_eq!(host.continued, 0);
}

#[test]
fn a_decision_ready_at_its_first_poll_is_applied_from_the_scheduler_not_the_hook() {
    let (checker, mut filter, mut host) = setup();
    *checker.at_once.lock().unwrap() = Some(allow());
    assert_eq!(
        filter.on_request_headers(&mut host, true),
        headers_status::STOP_ALL_ITERATION_AND_WATERMARK
    );
    // Not resumed inside the hook that paused the stream...
    assert_eq!(host.continued, 0);
    assert_eq!(host.wake.wakes.load(Ordering::SeqCst), 1);
    // ...but when Envoy calls back.
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.continued, 1);
}

#[test]
fn a_spurious_wake_polls_again_and_waits() {
    let (checker, mut filter, mut host) = setup();
    filter.on_request_headers(&mut host, true);
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.continued, 0);
    assert!(host.sent.is_none());
    checker.answer(allow());
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.continued, 1);
    // A late event after the answer changes nothing.
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.continued, 1);
}

/// A decision that panics becomes an audited refusal (`unavailable`, 503): the failure leaves
/// evidence like any decision, and the stream waits for that record as for any other.
#[test]
fn a_decision_that_panics_is_refused_unavailable_through_the_audited_refusal() {
    let (checker, mut filter, mut host) = setup();
    checker.checks_panic.store(true, Ordering::SeqCst);
    filter.on_request_headers(&mut host, true);
    assert_eq!(
        *checker.refusals.lock().unwrap(),
        [(
            ReasonCode::Unavailable,
            "the decision pipeline failed".to_owned()
        )]
    );
    // Nothing is answered until the refusal's record is durable (the test answers it).
    assert!(host.sent.is_none());
    let refused = checker.answer(to_check_response(&Decision::new(
        ReasonCode::Unavailable,
        "the decision pipeline failed",
    )));
    // The refusal saw the request as received.
    let http = refused.attributes.unwrap().request.unwrap().http.unwrap();
    assert_eq!(http.path, "/v2/models/m/infer");
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.sent.as_ref().map(|s| s.0), Some(503));
    assert_eq!(host.continued, 0);
}

/// If the audited refusal panics too, the answer is still a 503 (without a record), never an
/// allow and never a loop.
#[test]
fn a_decision_that_panics_answers_503() {
    let (checker, mut filter, mut host) = setup();
    checker.checks_panic.store(true, Ordering::SeqCst);
    checker.refusals_panic.store(true, Ordering::SeqCst);
    filter.on_request_headers(&mut host, true);
    filter.on_scheduled(&mut host, EVENT_DECIDED);
    assert_eq!(host.sent.as_ref().map(|s| s.0), Some(503));
    assert_eq!(host.continued, 0);
}
