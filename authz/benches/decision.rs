//! Decision benchmarks, side by side in one run (`cargo bench -p authz --bench decision`):
//!
//! 1. the decision alone (steps 1-3 and 6: facts, authentication, Cedar, the CheckResponse)
//!    with a warm token cache (RS256 token verified once, then cached), with a cold RS256
//!    verification every time (a distinct token per check), and with an API key,
//! 2. the same three through the whole in-process check (`decide`: + rate limit, audit
//!    hand-off to the writer thread, metrics),
//! 3. the Cedar step alone, answered from the engine's memo and evaluated every time,
//! 4. gRPC `Check` over loopback with concurrent clients on the same machine,
//! 5. whole checks (64 concurrent `decide` loops) per audit durability mode, interleaved in
//!    rounds: `fsync` (the default), `write`, and a log that stamps and hashes but writes
//!    nothing (the no-audit baseline, reachable only from code).
//!
//! Sections 1-4 measure the decision itself, so they use the no-I/O audit log; section 5 adds
//! the audit I/O. The demo limits are raised far above the load (limiting is not measured).
//! Prints p50/p99 latency and checks/s for each, and ratios against the warm case.
//! `AUTHZ_BENCH_SECS` (default 3) sets the length of the gRPC run and of each section-5 round.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use authz::audit::{AuditConfig, AuditLog, AuditMetrics, Durability};
use authz::metrics::Metrics;
use authz::runtime::Runtime;
use authz::service::{AuthzService, serve_grpc};
use base64::Engine as _;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

/// mimalloc: the glibc allocator spent a quarter of a check's CPU in malloc/free under
/// concurrent load (perf, `cargo bench -p authz --bench decision`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUER: &str = "https://issuer.bench";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn check_request(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut h: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    h.insert(":path".into(), path.into());
    h.insert("x-request-id".into(), "bench-request".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: path.into(),
                    headers: h,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

struct Stats {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn stats(name: &'static str, mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Stats {
        name,
        p50: pick(0.50),
        p99: pick(0.99),
        per_sec: samples.len() as f64 / wall.as_secs_f64(),
    }
}

async fn time_decisions(
    svc: &AuthzService,
    reqs: &[CheckRequest],
    expect_allow: bool,
) -> (Vec<Duration>, Duration) {
    let mut samples = Vec::with_capacity(reqs.len());
    let start = Instant::now();
    for r in reqs {
        let t = Instant::now();
        let d = svc.decide(r).await;
        samples.push(t.elapsed());
        assert_eq!(d.allowed(), expect_allow, "{:?} {}", d.reason, d.message);
    }
    (samples, start.elapsed())
}

/// Issue #3's "decision": steps 1-3 and 6 (facts, authentication, Cedar, the CheckResponse),
/// without the rate-limit and audit steps that `decide` adds.
async fn time_steps(rt: &Runtime, reqs: &[CheckRequest]) -> (Vec<Duration>, Duration) {
    let mut samples = Vec::with_capacity(reqs.len());
    let start = Instant::now();
    for r in reqs {
        let t = Instant::now();
        let d = authz::service::authorize(rt, r).await;
        let resp = authz::response::to_check_response(&d);
        samples.push(t.elapsed());
        assert!(d.allowed(), "{:?} {}", d.reason, d.message);
        std::hint::black_box(resp);
    }
    (samples, start.elapsed())
}

/// Gives the exporter of the last traced run time to deliver what it queued before the
/// receiver's count is printed.
async fn wait_for_delivery(receiver: &e2e::otlp::OtlpReceiver) {
    let mut last = usize::MAX;
    while receiver.count() != last {
        last = receiver.count();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let secs: u64 = std::env::var("AUTHZ_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let demo = std::fs::read_to_string(config_dir.join("authz.toml"))
        .unwrap()
        .replace("https://issuer.authz.dev", ISSUER)
        .replace("../.dev/jwks.json", "jwks.json")
        .replace(
            "\"policies/",
            &format!("\"{}/policies/", config_dir.display()),
        )
        .replace(
            "token_cache_entries = 10000",
            "token_cache_entries = 100000",
        )
        .replace(
            "rate = 30, period = \"60s\"",
            "rate = 1000000, period = \"1s\"",
        );
    let config = dir.path().join("authz.toml");
    std::fs::write(&config, demo).unwrap();
    let metrics = Arc::new(Metrics::new());
    let runtime = Arc::new(ArcSwap::from_pointee(
        Runtime::load(&config, Arc::clone(&metrics)).await.unwrap(),
    ));
    let discard = AuditLog::start_discarding_for_benchmarks(
        1 << 16,
        metrics.with_registry(AuditMetrics::new),
    )
    .unwrap();
    let svc = AuthzService::with_audit(Arc::clone(&runtime), Arc::clone(&metrics), discard)
        .expect("the decision pipeline starts");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mint = |sub: &str| {
        let claims = serde_json::json!({"iss": ISSUER, "aud": "inference-gateway", "sub": sub,
            "roles": ["analyst", "mission-user"], "iat": now, "exp": now + 3600});
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_rsa_der(&der)).unwrap()
    };
    let path = "/v2/models/mission-summarizer/infer";
    let warm_token = format!("Bearer {}", mint("analyst-1"));
    let warm_req = check_request(
        path,
        &[
            ("authorization", &warm_token),
            ("x-access-reason", "benchmark"),
        ],
    );

    let rt_now = runtime.load_full();
    let warm: Vec<CheckRequest> = std::iter::repeat_n(warm_req.clone(), 50_000).collect();
    let cold_requests = |prefix: &str| -> Vec<CheckRequest> {
        (0..3000)
            .map(|i| {
                let t = format!("Bearer {}", mint(&format!("{prefix}-{i}")));
                check_request(
                    path,
                    &[("authorization", &t), ("x-access-reason", "benchmark")],
                )
            })
            .collect()
    };
    let key_req = check_request(
        "/v2/models/benchmark-echo/infer",
        &[("x-api-key", "demo-load-tester-key-do-not-use-in-production")],
    );
    let keyed: Vec<CheckRequest> = std::iter::repeat_n(key_req, 50_000).collect();

    // 1. The decision alone (steps 1-3 and 6): warm token cache, cold RS256, API key.
    time_steps(&rt_now, &warm[..1000]).await;
    let (s, w) = time_steps(&rt_now, &warm).await;
    let steps_warm = stats("decision (steps 1-3, 6), warm token cache", s, w);
    let (s, w) = time_steps(&rt_now, &cold_requests("steps")).await;
    let steps_cold = stats("decision (steps 1-3, 6), cold RS256 verify", s, w);
    let (s, w) = time_steps(&rt_now, &keyed).await;
    let steps_key = stats("decision (steps 1-3, 6), API key", s, w);

    // 2. The whole check (`decide`: + in-process rate limit, audit hand-off, metrics).
    time_decisions(&svc, &warm[..1000], true).await;
    let (s, w) = time_decisions(&svc, &warm, true).await;
    let warm_stats = stats("whole check, warm token cache", s, w);
    let (s, w) = time_decisions(&svc, &cold_requests("whole"), true).await;
    let cold_stats = stats("whole check, cold RS256 verify", s, w);
    let (s, w) = time_decisions(&svc, &keyed, true).await;
    let key_stats = stats("whole check, API key", s, w);

    // 2b. The whole check with span export on: six spans per check (a new trace each).
    // "queued": the collector accepts the connection and never answers, so spans only pile up in
    // the (large enough) queue: the cost on the request path alone. "exported": a loopback
    // OTLP/HTTP receiver parses and counts them, so the exporter's encoding and the receiver share
    // the benchmark's cores (an upper bound). Export off is the `whole check` lines above.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = e2e::otlp::OtlpReceiver::discarding();
    let mut traced_stats = Vec::new();
    let mut export_counts = (0, 0);
    for (name, endpoint) in [
        (
            "whole check, warm, spans queued",
            format!("http://{}/v1/traces", stalled.local_addr().unwrap()),
        ),
        ("whole check, warm, spans exported", receiver.traces_url()),
    ] {
        let mut export = telemetry::ExportConfig::new(endpoint, "authz");
        export.max_queue_size = 1 << 17;
        export.schedule_delay = Duration::from_millis(50);
        let tracer = telemetry::Tracer::start(export, telemetry::ExportMetrics::default()).unwrap();
        let traced = svc.clone().with_tracer(tracer.clone());
        time_decisions(&traced, &warm[..1000], true).await;
        let (s, w) = time_decisions(&traced, &warm[..20_000], true).await;
        traced_stats.push(stats(name, s, w));
        let m = tracer.metrics().unwrap();
        export_counts = (m.exported.get(), m.dropped.get());
    }
    wait_for_delivery(&receiver).await;
    let (exported, dropped) = export_counts;

    // 3b. The Cedar step alone (same input as the warm case).
    let principal = authz::Principal {
        id: "analyst-1".into(),
        auth_method: authz::AuthMethod::Jwt,
        roles: vec!["analyst".into(), "mission-user".into()],
    };
    let input = authz::policy::PolicyInput {
        principal: &principal,
        model: "mission-summarizer",
        version: None,
        action: authz::request::Action::Infer,
        access_reason: Some("benchmark"),
        source_ip: None,
        request_time: 0,
    };
    let time_policy = |uncached: bool| {
        let mut samples = Vec::with_capacity(50_000);
        let start = Instant::now();
        for _ in 0..50_000 {
            let t = Instant::now();
            let out = if uncached {
                rt_now.policy.evaluate_uncached(&input)
            } else {
                rt_now.policy.evaluate(&input)
            };
            samples.push(t.elapsed());
            assert!(out.reason.is_allow());
        }
        (samples, start.elapsed())
    };
    let (s, w) = time_policy(false);
    let policy_stats = stats("Cedar step alone, memoized answer", s, w);
    let (s, w) = time_policy(true);
    let policy_fresh = stats("Cedar step alone, evaluated every time", s, w);

    // 3c. With a `[policy] shadow` that disagrees on this input (the costlier case: its verdict
    // is kept for the audit record and counted), the decision next to the same without one.
    let candidate = dir.path().join("candidate.cedar");
    let shipped = std::fs::read_to_string(config_dir.join("policies/gateway.cedar")).unwrap();
    std::fs::write(
        &candidate,
        format!("{shipped}\n@id(\"bench-shadow\")\n@reason(\"bench_shadow\")\nforbid (principal, action, resource == Gateway::Model::\"mission-summarizer\");\n"),
    )
    .unwrap();
    let shadow_config = dir.path().join("authz-shadow.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[policy]\n",
        &format!("[policy]\nshadow = \"{}\"\n", candidate.display()),
        1,
    );
    std::fs::write(&shadow_config, text).unwrap();
    let rt_shadow = Runtime::load(&shadow_config, Arc::clone(&metrics))
        .await
        .unwrap();
    assert!(rt_shadow.shadow.is_some(), "the shadow policy loads");
    time_steps(&rt_shadow, &warm[..1000]).await;
    let (s, w) = time_steps(&rt_now, &warm).await;
    let steps_again = stats("decision, warm, no shadow (again)", s, w);
    let (s, w) = time_steps(&rt_shadow, &warm).await;
    let steps_shadow = stats("decision, warm, disagreeing shadow", s, w);

    // 4. gRPC Check over loopback, concurrent clients.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_grpc(listener, svc.clone(), async {
        let _ = stop_rx.await;
    }));
    let concurrency = 64;
    let channels = 4;
    let mut clients = Vec::new();
    for _ in 0..channels {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(AuthorizationClient::new(ch));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = clients[i % channels].clone();
        let req = warm_req.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let resp = client.check(req.clone()).await.unwrap().into_inner();
                samples.push(t.elapsed());
                assert_eq!(resp.status.map(|s| s.code), Some(0));
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let grpc_stats = stats(
        "gRPC Check over loopback (64 in flight)",
        all,
        start.elapsed(),
    );
    let _ = stop_tx.send(());
    let _ = server.await;

    // 5. Whole checks per audit mode, 64 concurrent loops, interleaved rounds.
    let modes: Vec<(&'static str, AuthzService)> = ["discard", "write", "fsync"]
        .into_iter()
        .map(|mode| {
            let m = Arc::new(Metrics::new());
            let am = m.with_registry(AuditMetrics::new);
            let log = match mode {
                "discard" => AuditLog::start_discarding_for_benchmarks(1 << 16, am),
                _ => AuditLog::start(
                    &AuditConfig {
                        path: dir.path().join(format!("audit-{mode}/")),
                        durability: if mode == "fsync" {
                            Durability::Fsync
                        } else {
                            Durability::Write
                        },
                        ..AuditConfig::default()
                    },
                    am,
                ),
            }
            .unwrap();
            let svc = AuthzService::with_audit(Arc::clone(&runtime), m, log).unwrap();
            (mode, svc)
        })
        .collect();
    let mut audit_totals: HashMap<&'static str, (u64, Duration)> = HashMap::new();
    for _round in 0..3 {
        for (mode, svc) in &modes {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let svc = svc.clone();
                let req = warm_req.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let d = svc.decide(&req).await;
                        assert!(d.allowed(), "{:?} {}", d.reason, d.message);
                        n += 1;
                    }
                    n
                }));
            }
            let mut n = 0;
            for t in tasks {
                n += t.await.unwrap();
            }
            let e = audit_totals.entry(mode).or_default();
            e.0 += n;
            e.1 += start.elapsed();
        }
    }

    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>9}",
        "benchmark", "p50", "p99", "checks/s", "vs warm"
    );
    for s in [
        &steps_warm,
        &steps_cold,
        &steps_key,
        &warm_stats,
        &cold_stats,
        &key_stats,
        &traced_stats[0],
        &traced_stats[1],
        &policy_stats,
        &policy_fresh,
        &steps_again,
        &steps_shadow,
        &grpc_stats,
    ] {
        println!(
            "{:<44} {:>8.1}µs {:>8.1}µs {:>12.0} {:>8.2}x",
            s.name,
            s.p50.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            s.per_sec,
            s.p50.as_secs_f64() / steps_warm.p50.as_secs_f64(),
        );
    }
    let rate = |mode: &str| {
        let (n, t) = audit_totals[mode];
        n as f64 / t.as_secs_f64()
    };
    println!(
        "span export: {exported} spans accepted by the receiver ({} counted there), {dropped} dropped on a full queue",
        receiver.count()
    );
    println!("\nwhole checks, 64 concurrent, 3 interleaved rounds of {secs} s per audit mode:");
    for mode in ["discard", "write", "fsync"] {
        println!(
            "  audit {mode:<8} {:>10.0} checks/s {:>6.2}x of no-audit",
            rate(mode),
            rate(mode) / rate("discard")
        );
    }
}
