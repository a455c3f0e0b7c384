//! Overload: the real `modelserver` binary is offered ten times what one compute-bound model can
//! serve, for a bounded time, over loopback REST.
//!
//! What a user must see (issue #8): the process survives, its memory stays bounded, every refused
//! request is a quick 503 with `Retry-After`, and the requests it accepts keep their p99 latency
//! within twice the p99 of the same model unloaded.
//!
//! The 2x bound is not free: an accepted request waits for the run in progress and then runs, so
//! its latency is its queue time plus one service time. The model is configured the way an
//! operator with a latency target would configure it: `max_queue_size` equal to the instance count
//! (one waiter per session) and a `default_timeout_microseconds` of half the unloaded median
//! service time, so no accepted request queues longer than that and the rest are refused at once
//! (queue full) or at their deadline (timed out) instead of piling up.
//!
//! The load generator shares the machine with the server, and on a 2-core box shared with other
//! work the latency percentiles are noisy. So the measurement (unloaded, then flood) runs up to
//! [`ATTEMPTS`] times against the same server: every attempt must show no crash, only 200 or 503 +
//! `Retry-After`, a real overload and bounded memory; the latency bounds and the goodput floor must
//! hold in one attempt.
//! A server that queues without bound or refuses slowly fails every attempt.
//!
//! Duration: `MODELSERVER_FLOOD_SECS` (default 5, the issue's full run is 30):
//! `MODELSERVER_FLOOD_SECS=30 cargo test -p modelserver --release --test flood -- --nocapture`.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::Process;

/// Flood length unless `MODELSERVER_FLOOD_SECS` says otherwise: long enough for thousands of
/// requests, short enough for the default test run.
const DEFAULT_FLOOD_SECS: f64 = 5.0;
/// Measurements before the latency bounds count as failed (see the module comment).
const ATTEMPTS: usize = 2;
/// Offered load as a multiple of the measured capacity.
const FLOOD_FACTOR: f64 = 10.0;
/// Unloaded measurement (closed loop, one request at a time).
const UNLOADED_SECS: f64 = 2.0;
/// The RSS the server may grow by during the flood, over its size after warm-up. The queue holds
/// one request of 1 KiB, so any real growth beyond allocator noise would be a leak.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// Refusals must come fast: a queue-full refusal is immediate (median under this), a timed-out one
/// waits the configured queue timeout, so the p99 may take that plus this much scheduling slack.
const REJECTION_SLACK: Duration = Duration::from_millis(25);

fn flood_secs() -> f64 {
    std::env::var("MODELSERVER_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0 && *s <= 600.0)
        .unwrap_or(DEFAULT_FLOOD_SECS)
}

/// The model's config: one CPU instance, one waiter, and (once measured) a queue timeout.
fn model_config(timeout_us: u64) -> String {
    format!(
        r#"name: "flood"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1, 256 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1, 256 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ default_queue_policy {{ max_queue_size: 1 default_timeout_microseconds: {timeout_us} }} }}
"#
    )
}

fn write_repository(root: &Path) {
    let version = root.join("flood/1");
    std::fs::create_dir_all(&version).expect("model directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_flood_model.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(version.join("model.onnx"))
        .output()
        .expect("python3 (run scripts/bootstrap.sh and `source .tools/env`)");
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(root.join("flood/config.pbtxt"), model_config(0)).expect("config");
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn request_body() -> bytes::Bytes {
    let data: Vec<f32> = (0..256).map(|i| (i % 7) as f32 * 0.25).collect();
    serde_json::json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256], "data": data}]
    })
    .to_string()
    .into()
}

/// One request's outcome.
struct Outcome {
    status: u16,
    latency: Duration,
    retry_after: bool,
    body: String,
}

async fn infer(client: &reqwest::Client, url: &str, body: bytes::Bytes) -> Outcome {
    let start = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers every request");
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body = response.text().await.expect("a complete body");
    Outcome {
        status,
        latency: start.elapsed(),
        retry_after,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_at_ten_times_capacity_keeps_the_server_responsive_and_bounded() {
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH is not set: run scripts/bootstrap.sh and `source .tools/env`"
    );
    let repo = tempfile::tempdir().expect("tempdir");
    write_repository(repo.path());
    let settings = repo.path().join("modelserver.toml");
    // One intra-op thread: the other core is left to the HTTP front end and this load generator.
    std::fs::write(
        &settings,
        "[runtime]\nintra_op_threads = 1\n[authorization]\nmode = \"none\"\n",
    )
    .expect("config");
    let (http, grpc, metrics) = (e2e::free_port(), e2e::free_port(), e2e::free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelserver"));
    command
        .args(["serve", "--address", "127.0.0.1", "--model-repository"])
        .arg(repo.path())
        .args(["--http-port", &http.to_string()])
        .args(["--grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .arg("--config")
        .arg(&settings)
        .env("RUST_LOG", "warn");
    let mut server = Process::spawn("modelserver", command);
    let pid = server.pid().expect("spawned");
    let base = format!("http://127.0.0.1:{http}");
    let infer_url = format!("{base}/v2/models/flood/infer");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let started = Instant::now();
    loop {
        let ready = client
            .get(format!("{base}/v2/models/flood/ready"))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        server.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = Target {
        client,
        base,
        infer_url,
        repo: repo.path().to_path_buf(),
        pid,
        body: request_body(),
    };
    let mut reports = Vec::new();
    for _ in 0..ATTEMPTS {
        match measure(&target, &mut server).await {
            Ok(report) => {
                println!("{report}");
                return;
            }
            Err(report) => {
                println!("latency bound missed: {report}");
                reports.push(report);
            }
        }
    }
    panic!(
        "latency bounds missed in every attempt:\n{}",
        reports.join("\n")
    );
}

/// The server under test and what a client needs to reach it.
struct Target {
    client: reqwest::Client,
    base: String,
    infer_url: String,
    repo: std::path::PathBuf,
    pid: u32,
    body: bytes::Bytes,
}

/// One unloaded measurement and one flood. Panics on what must hold every time (no crash, only
/// 200 or 503 + `Retry-After`, a real overload, bounded memory); returns the report, as `Err` when
/// a latency bound or the goodput floor (half the capacity) was missed.
async fn measure(target: &Target, server: &mut Process) -> Result<String, String> {
    let Target {
        client,
        base,
        infer_url,
        repo,
        pid,
        body,
    } = target;
    let (client, base, infer_url, pid) = (client.clone(), base.as_str(), infer_url.as_str(), *pid);

    // Unloaded: one request at a time.
    for _ in 0..30 {
        assert_eq!(infer(&client, infer_url, body.clone()).await.status, 200);
    }
    let mut unloaded = Vec::new();
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < UNLOADED_SECS {
        let o = infer(&client, infer_url, body.clone()).await;
        assert_eq!(o.status, 200, "{}", o.body);
        unloaded.push(o.latency);
    }
    let capacity = unloaded.len() as f64 / t.elapsed().as_secs_f64();
    unloaded.sort_unstable();
    let (unloaded_p50, unloaded_p99) = (percentile(&unloaded, 0.5), percentile(&unloaded, 0.99));

    // What an operator with a latency target configures: queue for at most a quarter of a service
    // time, leaving the rest of the 2x budget to CPU contention from the flood itself.
    let timeout_us = (unloaded_p50.as_micros() / 4).max(100) as u64;
    std::fs::write(repo.join("flood/config.pbtxt"), model_config(timeout_us)).expect("config");
    let load = client
        .post(format!("{base}/v2/repository/models/flood/load"))
        .send()
        .await
        .expect("load");
    assert_eq!(load.status(), 200, "{:?}", load.text().await);
    let config: serde_json::Value = client
        .get(format!("{base}/v2/models/flood/config"))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("config JSON");
    assert_eq!(
        config["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"],
        timeout_us
    );
    for _ in 0..10 {
        assert_eq!(infer(&client, infer_url, body.clone()).await.status, 200);
    }
    let rss_before = rss_kib(pid).expect("server RSS");

    // The flood: open loop at FLOOD_FACTOR x capacity, in 2 ms ticks.
    let secs = flood_secs();
    let rate = capacity * FLOOD_FACTOR;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let rss_peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampler = {
        let rss_peak = Arc::clone(&rss_peak);
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    rss_peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    let flood_start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while flood_start.elapsed().as_secs_f64() < secs {
        ticker.tick().await;
        let due = (flood_start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            let (client, url, body, outcomes) = (
                client.clone(),
                infer_url.to_string(),
                body.clone(),
                Arc::clone(&outcomes),
            );
            tasks.push(tokio::spawn(async move {
                let o = infer(&client, &url, body).await;
                outcomes.lock().expect("outcomes").push(o);
            }));
        }
    }
    let offered_secs = flood_start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.expect("request task");
    }
    sampler.abort();
    let rss_peak = rss_peak.load(std::sync::atomic::Ordering::Relaxed);

    // No crash, and still serving.
    server.assert_running();
    let live = client
        .get(format!("{base}/v2/health/live"))
        .send()
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    assert_eq!(infer(&client, infer_url, body.clone()).await.status, 200);

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    assert_eq!(outcomes.len() as u64, sent);
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for o in &outcomes {
        match o.status {
            200 => accepted.push(o.latency),
            503 => {
                assert!(o.retry_after, "a 503 without Retry-After: {}", o.body);
                assert!(
                    o.body.contains("is overloaded: queue is full")
                        || o.body.contains("timed out in the queue"),
                    "unexpected 503 body: {}",
                    o.body
                );
                rejected.push(o.latency);
            }
            other => panic!("status {other} under flood: {}", o.body),
        }
    }
    accepted.sort_unstable();
    rejected.sort_unstable();
    let accepted_p99 = percentile(&accepted, 0.99);
    let rejected_p99 = percentile(&rejected, 0.99);
    let goodput = accepted.len() as f64 / offered_secs;
    let report = format!(
        "flood {secs:.0}s: capacity {capacity:.0} req/s, offered {rate:.0} req/s ({sent} requests); \
         unloaded p50 {unloaded_p50:?} p99 {unloaded_p99:?}; queue timeout {timeout_us} us; \
         accepted {} ({goodput:.0} req/s) p99 {accepted_p99:?} max {:?}; rejected {} p50 {:?} p99 \
         {rejected_p99:?} max {:?}; RSS {} KiB -> peak {rss_peak} KiB",
        accepted.len(),
        accepted.last().copied().unwrap_or_default(),
        rejected.len(),
        percentile(&rejected, 0.5),
        rejected.last().copied().unwrap_or_default(),
        rss_before,
    );

    // It really was a flood, and memory stayed put.
    assert!(
        rejected.len() as f64 >= 0.5 * outcomes.len() as f64,
        "not overloaded: {report}"
    );
    assert!(
        rss_peak <= rss_before + RSS_GROWTH_LIMIT_KIB,
        "memory grew: {report}"
    );
    // Goodput is a rate measured against a rate taken seconds earlier: noise on a shared box.
    let latency_ok = goodput >= 0.5 * capacity
        && accepted_p99 <= unloaded_p99 * 2
        && percentile(&rejected, 0.5) <= REJECTION_SLACK
        && rejected_p99 <= Duration::from_micros(timeout_us) + REJECTION_SLACK;
    if latency_ok { Ok(report) } else { Err(report) }
}
