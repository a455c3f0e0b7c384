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

use bytes::Bytes;
use e2e::raw_grpc::{self, GrpcAnswer, field, fields, infer_inputs, padding, string_field};
use e2e::stack::{SharedStack, Stack, StackBuilder};

const SVC: &str = "/inference.GRPCInferenceService";
const REASON: &str = "triage of the overnight field reports";
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
    raw_grpc::frame(&m)
}

/// One case on the shared connection, as `caller`, with forged trailers when the case says so.
async fn send(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    caller: &Caller,
    case: &Case,
) -> GrpcAnswer {
    let mut headers = vec![
        ("user-agent", case.agent.as_str()),
        (caller.credential.0, caller.credential.1.as_str()),
    ];
    if case.reason {
        headers.push(("x-access-reason", REASON));
    }
    let forged = [
        ("x-authz-model", "threat-triage"),
        ("x-authz-model-version", ""),
        ("x-authz-action", case.action),
        ("x-authz-principal", "admin-1"),
    ];
    let trailers: &[(&str, &str)] = if case.forged_trailers { &forged } else { &[] };
    let path = format!("{SVC}/{}", case.method);
    raw_grpc::call(client, addr, &path, &headers, message(case), trailers).await
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

/// The table's stack: limits high enough that no case is answered 429 (the table is about who
/// may call what).
fn table_stack() -> StackBuilder {
    let mut builder = Stack::builder().redis(false);
    for model in ["mission-summarizer", "threat-triage", "benchmark-echo"] {
        builder = builder
            .authz_setting(&format!("models.{model}.rate_limit.rate"), 1_000_000)
            .authz_setting(&format!("models.{model}.rate_limit.period"), "1s");
    }
    builder
}

static SERVICE: SharedStack = SharedStack::new(table_stack);
static EMBEDDED: SharedStack = SharedStack::new(|| table_stack().embedded(e2e::workspace_module()));

e2e::both_modes! {
    service: SERVICE, embedded: EMBEDDED;

fn hundreds_of_grpc_attack_cases_allow_nothing_unexpected(stack: &Stack) {
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
    let answers: Vec<GrpcAnswer> = rt.block_on(async {
        let mut client = raw_grpc::connect(addr).await;
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
    let policies = oracle(stack);

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
                answer.status
            )
        };
        let should_pass = matches!(case.layout, Layout::Plain)
            && permitted(&policies, caller, case.first, case.action, case.reason);
        if answer.status != Some(0) {
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
}
