//! A table of several hundred gRPC attack cases through real Envoy: every model-scoped method,
//! four principals (two JWTs, two API keys), configured, restricted and unconfigured models,
//! and the message layouts an attacker controls (a second `model_name` or `model_version` past
//! the inspected prefix, a trailing empty name, a name hidden behind padding, a duplicate within
//! the prefix) with and without forged request trailers.
//!
//! The invariant, for every answer that is OK: the model the message makes the server act on
//! (the last `model_name`) is the model authz audited for that request's decision id, the policy
//! permits that principal that model and action (an oracle computed from the stack's own config),
//! and every model the answer names is that model. Zero unexpected allows. So that the table
//! cannot pass by refusing everything, the plain layouts that the oracle permits must all
//! succeed.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use e2e::stack::Stack;
use http::{HeaderMap, HeaderValue, Request};

const SVC: &str = "/inference.GRPCInferenceService";
const REASON: &str = "triage of the overnight field reports";
/// Longer than the 1 KiB of body Envoy hands authz.
const PAST_THE_PREFIX: usize = 1500;
const MODELS: [&str; 4] = [
    "mission-summarizer",
    "threat-triage",
    "benchmark-echo",
    "simple-fp32", // in the repository, not in authz's config
];
const METHODS: [(&str, &str); 5] = [
    ("ModelInfer", "infer"),
    ("ModelReady", "ready"),
    ("ModelMetadata", "metadata"),
    ("ModelConfig", "config"),
    ("ModelStatistics", "statistics"),
];

#[derive(Clone)]
struct Caller {
    name: &'static str,
    /// `authorization` or `x-api-key`, and its value.
    credential: (&'static str, String),
    roles: Vec<&'static str>,
    api_key: bool,
}

/// How the message names its model.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// `name=A`: the plain call.
    Plain,
    /// `name=A, padding, name=B`.
    SecondNamePastPrefix,
    /// `name=A, padding, name=""`.
    EmptyNamePastPrefix,
    /// `name=A, name=B`, both within the prefix.
    DuplicateInPrefix,
    /// `padding, name=A`: the name beyond what authz sees.
    NameBeyondPrefix,
    /// `name=A, padding, version="1"`.
    VersionPastPrefix,
}

struct Case {
    caller: usize,
    method: &'static str,
    action: &'static str,
    layout: Layout,
    first: &'static str,
    second: &'static str,
    reason: bool,
    forged_trailers: bool,
    agent: String,
}

impl Case {
    /// The model the server decodes: protobuf keeps the last `model_name`.
    fn decoded(&self) -> &'static str {
        match self.layout {
            Layout::SecondNamePastPrefix | Layout::DuplicateInPrefix => self.second,
            Layout::EmptyNamePastPrefix => "",
            _ => self.first,
        }
    }
}

// ---- protobuf by hand --------------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(number << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn padding(out: &mut Vec<u8>) {
    field(out, 1000, &vec![b'p'; PAST_THE_PREFIX]);
}

/// Inputs (field 5) and raw contents (field 7) of `model`'s demo request.
fn infer_inputs(model: &str, out: &mut Vec<u8>) {
    let mut input = Vec::new();
    let raw: Vec<u8> = match model {
        "threat-triage" => {
            field(&mut input, 1, b"FEATURES");
            field(&mut input, 2, b"FP32");
            field(&mut input, 3, &[1, 8]);
            [0.0f32, 0.0, 0.0, 1.0, 1.0, 0.5, 1.0, 0.0]
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect()
        }
        _ => {
            field(&mut input, 1, b"TEXT");
            field(&mut input, 2, b"BYTES");
            field(&mut input, 3, &[1, 1]);
            let text = b"urgent medevac";
            let mut raw = (text.len() as u32).to_le_bytes().to_vec();
            raw.extend_from_slice(text);
            raw
        }
    };
    field(out, 5, &input);
    field(out, 7, &raw);
}

fn message(case: &Case) -> Bytes {
    let mut m = Vec::new();
    match case.layout {
        Layout::Plain => field(&mut m, 1, case.first.as_bytes()),
        Layout::SecondNamePastPrefix => {
            field(&mut m, 1, case.first.as_bytes());
            padding(&mut m);
            field(&mut m, 1, case.second.as_bytes());
        }
        Layout::EmptyNamePastPrefix => {
            field(&mut m, 1, case.first.as_bytes());
            padding(&mut m);
            field(&mut m, 1, b"");
        }
        Layout::DuplicateInPrefix => {
            field(&mut m, 1, case.first.as_bytes());
            field(&mut m, 1, case.second.as_bytes());
        }
        Layout::NameBeyondPrefix => {
            padding(&mut m);
            field(&mut m, 1, case.first.as_bytes());
        }
        Layout::VersionPastPrefix => {
            field(&mut m, 1, case.first.as_bytes());
            padding(&mut m);
            field(&mut m, 2, b"1");
        }
    }
    if case.method == "ModelInfer" {
        infer_inputs(case.decoded(), &mut m);
    }
    let mut out = vec![0u8];
    out.extend_from_slice(&(m.len() as u32).to_be_bytes());
    out.extend_from_slice(&m);
    Bytes::from(out)
}

/// Every length-delimited field of a protobuf message, as (number, bytes).
fn fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn read_varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while let Some(tag) = read_varint(&mut b) {
        let skip = match tag & 7 {
            0 => {
                read_varint(&mut b);
                continue;
            }
            1 => 8,
            5 => 4,
            2 => match read_varint(&mut b) {
                Some(n) => n as usize,
                None => break,
            },
            _ => break,
        };
        if skip > b.len() {
            break;
        }
        if tag & 7 == 2 {
            out.push((tag >> 3, &b[..skip]));
        }
        b = &b[skip..];
    }
    out
}

fn string_field(b: &[u8], number: u64) -> Vec<String> {
    fields(b)
        .into_iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The model names an OK answer of `method` mentions.
fn named_models(method: &str, body: &[u8]) -> Vec<String> {
    match method {
        "ModelInfer" | "ModelMetadata" => string_field(body, 1),
        "ModelConfig" => fields(body)
            .into_iter()
            .filter(|(n, _)| *n == 1)
            .flat_map(|(_, config)| string_field(config, 1))
            .collect(),
        "ModelStatistics" => fields(body)
            .into_iter()
            .filter(|(n, _)| *n == 1)
            .flat_map(|(_, stats)| string_field(stats, 1))
            .collect(),
        _ => Vec::new(),
    }
}

// ---- the oracle ----------------------------------------------------------------------------------

struct ModelPolicy {
    allowed_roles: Vec<String>,
    requires_reason: bool,
    restricted: bool,
}

fn oracle(stack: &Stack) -> HashMap<String, ModelPolicy> {
    let config = stack.authz_config();
    let models = config["models"].as_table().expect("[models]");
    models
        .iter()
        .map(|(name, m)| {
            let strings = |k: &str| -> Vec<String> {
                m.get(k)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            (
                name.clone(),
                ModelPolicy {
                    allowed_roles: strings("allowed_roles"),
                    requires_reason: m
                        .get("requires_reason")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false),
                    restricted: m.get("sensitivity").and_then(|v| v.as_str()) == Some("restricted"),
                },
            )
        })
        .collect()
}

fn permitted(
    policies: &HashMap<String, ModelPolicy>,
    caller: &Caller,
    model: &str,
    action: &str,
    reason: bool,
) -> bool {
    let Some(p) = policies.get(model) else {
        return false;
    };
    caller
        .roles
        .iter()
        .any(|r| p.allowed_roles.iter().any(|a| a == r))
        && !(action == "infer" && p.requires_reason && !reason)
        && !(p.restricted && caller.api_key)
}

// ---- the run -------------------------------------------------------------------------------------

struct Answer {
    grpc_status: Option<u32>,
    body: Bytes,
}

async fn send(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    caller: &Caller,
    case: &Case,
) -> Answer {
    let mut request = Request::post(format!("http://{addr}{SVC}/{}", case.method))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", case.agent.as_str())
        .header(caller.credential.0, caller.credential.1.as_str());
    if case.reason {
        request = request.header("x-access-reason", REASON);
    }
    let ready = client.clone().ready().await.expect("h2 connection ready");
    *client = ready;
    let (response, mut stream) = client
        .send_request(request.body(()).expect("a request"), false)
        .expect("the request is sent");
    let body = message(case);
    if case.forged_trailers {
        stream.send_data(body, false).expect("the body is sent");
        let mut t = HeaderMap::new();
        t.insert("x-authz-model", HeaderValue::from_static("threat-triage"));
        t.insert("x-authz-model-version", HeaderValue::from_static(""));
        t.insert(
            "x-authz-action",
            HeaderValue::from_str(case.action).unwrap(),
        );
        t.insert("x-authz-principal", HeaderValue::from_static("admin-1"));
        stream.send_trailers(t).expect("the trailers are sent");
    } else {
        stream.send_data(body, true).expect("the body is sent");
    }
    let response = response.await.expect("an HTTP/2 response");
    let head = response.headers().clone();
    let mut recv = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("body data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.ok().flatten().unwrap_or_default();
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| head.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok());
    // The message of a one-frame answer, without its 5-byte frame header.
    let body = if data.len() >= 5 {
        data.freeze().slice(5..)
    } else {
        Bytes::new()
    };
    Answer { grpc_status, body }
}

fn cases(callers: &[Caller]) -> Vec<Case> {
    let mut out = Vec::new();
    let mut push = |caller,
                    (method, action): (&'static str, &'static str),
                    layout,
                    first,
                    second,
                    reason,
                    forged| {
        let agent = format!("table-{}", out.len());
        out.push(Case {
            caller,
            method,
            action,
            layout,
            first,
            second,
            reason,
            forged_trailers: forged,
            agent,
        });
    };
    for caller in 0..callers.len() {
        for method in METHODS {
            let reasons: &[bool] = if method.0 == "ModelInfer" {
                &[true, false]
            } else {
                &[true]
            };
            for &reason in reasons {
                for first in MODELS {
                    push(caller, method, Layout::Plain, first, first, reason, false);
                    push(caller, method, Layout::Plain, first, first, reason, true);
                    push(
                        caller,
                        method,
                        Layout::EmptyNamePastPrefix,
                        first,
                        "",
                        reason,
                        true,
                    );
                    push(
                        caller,
                        method,
                        Layout::NameBeyondPrefix,
                        first,
                        first,
                        reason,
                        false,
                    );
                    push(
                        caller,
                        method,
                        Layout::VersionPastPrefix,
                        first,
                        first,
                        reason,
                        false,
                    );
                    for second in MODELS.into_iter().filter(|m| *m != first) {
                        push(
                            caller,
                            method,
                            Layout::SecondNamePastPrefix,
                            first,
                            second,
                            reason,
                            true,
                        );
                        push(
                            caller,
                            method,
                            Layout::SecondNamePastPrefix,
                            first,
                            second,
                            reason,
                            false,
                        );
                        push(
                            caller,
                            method,
                            Layout::DuplicateInPrefix,
                            first,
                            second,
                            reason,
                            false,
                        );
                    }
                }
            }
        }
    }
    out
}

#[test]
fn hundreds_of_grpc_attack_cases_allow_nothing_unexpected() {
    let mut builder = Stack::builder().redis(false);
    // Limits high enough that no case is answered 429: the table is about who may call what.
    for model in ["mission-summarizer", "threat-triage", "benchmark-echo"] {
        builder = builder
            .authz_setting(&format!("models.{model}.rate_limit.rate"), 1_000_000)
            .authz_setting(&format!("models.{model}.rate_limit.period"), "1s");
    }
    let stack = builder.start();
    let jwt = |sub, roles: &[&'static str]| Caller {
        name: sub,
        credential: (
            "authorization",
            format!("Bearer {}", stack.token(sub, roles)),
        ),
        roles: roles.to_vec(),
        api_key: false,
    };
    let key = |name, key: &str, roles: &[&'static str]| Caller {
        name,
        credential: ("x-api-key", key.to_owned()),
        roles: roles.to_vec(),
        api_key: true,
    };
    let callers = vec![
        jwt("analyst-1", &["analyst", "mission-user"]),
        jwt("security-1", &["security-engineer", "mission-user"]),
        key(
            "load-tester",
            "demo-load-tester-key-do-not-use-in-production",
            &["load-tester"],
        ),
        key("report-builder", "demo-report-builder-key", &["analyst"]),
    ];
    let cases = cases(&callers);
    assert!(cases.len() >= 500, "{} cases", cases.len());

    let addr = stack.envoy_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let answers: Vec<Answer> = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("Envoy accepts");
        let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut out = Vec::with_capacity(cases.len());
        for case in &cases {
            out.push(send(&mut client, addr, &callers[case.caller], case).await);
        }
        out
    });

    // Evidence, read once: Envoy's access log (user agent -> decision id) and the audit.
    let decisions: HashMap<String, String> = stack
        .envoy_access_log()
        .into_iter()
        .filter_map(|e| {
            Some((
                e["user_agent"].as_str()?.to_owned(),
                e["decision_id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let audit: HashMap<String, serde_json::Value> = stack
        .audit_records()
        .into_iter()
        .filter_map(|r| Some((r["decision_id"].as_str()?.to_owned(), r)))
        .collect();
    let policies = oracle(&stack);

    let mut unexpected = Vec::new();
    let mut plain_refused = Vec::new();
    let mut allowed = 0;
    for (case, answer) in cases.iter().zip(&answers) {
        let caller = &callers[case.caller];
        let decoded = case.decoded();
        let describe = || {
            format!(
                "{} {} {:?} first={} second={} reason={} trailers={} -> grpc-status {:?}",
                caller.name,
                case.method,
                case.layout,
                case.first,
                case.second,
                case.reason,
                case.forged_trailers,
                answer.grpc_status
            )
        };
        let should_pass = matches!(case.layout, Layout::Plain)
            && permitted(&policies, caller, case.first, case.action, case.reason);
        if answer.grpc_status != Some(0) {
            if should_pass {
                plain_refused.push(describe());
            }
            continue;
        }
        allowed += 1;
        let record = decisions.get(&case.agent).and_then(|id| audit.get(id));
        let Some(record) = record else {
            unexpected.push(format!("{}: no audit record for its decision", describe()));
            continue;
        };
        let audited = record["model"].as_str().unwrap_or_default();
        if record["decision"] != "allow" || audited != decoded {
            unexpected.push(format!(
                "{}: audit says {} {audited}, the server decoded {decoded}",
                describe(),
                record["decision"]
            ));
        }
        if !permitted(&policies, caller, decoded, case.action, case.reason) {
            unexpected.push(format!("{}: policy does not permit {decoded}", describe()));
        }
        for named in named_models(case.method, &answer.body) {
            if named != decoded {
                unexpected.push(format!("{}: the answer names {named}", describe()));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} unexpected allows of {} cases:\n{}\n{}",
        unexpected.len(),
        cases.len(),
        unexpected.join("\n"),
        stack.diagnostics()
    );
    assert!(
        plain_refused.is_empty(),
        "plain calls the policy permits were refused:\n{}\n{}",
        plain_refused.join("\n"),
        stack.diagnostics()
    );
    assert!(
        allowed > 50,
        "only {allowed} of {} cases were allowed",
        cases.len()
    );
    eprintln!(
        "{} cases, {allowed} allowed, 0 unexpected allows",
        cases.len()
    );
}
