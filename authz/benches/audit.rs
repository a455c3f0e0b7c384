//! Audit appends per second at a fixed concurrency, with `fsync` durability, `write`
//! durability, and a discarding sink (the same stamping and hashing, no I/O), each also with
//! signed checkpoints every 1000 records or 1 s and a file witness (`+ckpt`), side by side in
//! one run, interleaved over several rounds; prints the median of each and the ratios.
//!
//! `cargo bench -p authz --bench audit` (release). For a quick run that reuses the dev build of
//! the dependencies (opt-level 1) with authz itself optimized:
//! `cargo --config 'profile.dev.package.authz.opt-level=3' bench -p authz --bench audit --profile dev`.
//! Environment: `AUDIT_BENCH_CONCURRENCY` (64),
//! `AUDIT_BENCH_SECONDS` per measurement (2), `AUDIT_BENCH_ROUNDS` (3), `AUDIT_BENCH_DIR`
//! (where the files go; the system temp dir by default: put it on the disk you care about).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use authz::audit::{
    AuditConfig, AuditDecision, AuditEvent, AuditLog, AuditMetrics, AuditPrincipal,
    CheckpointConfig, Durability, RateLimitState,
};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Discard,
    Write,
    Fsync,
}

/// Checkpoints as the goal states them: every 1000 records or 1 s, signed, with a file
/// witness on another directory.
fn checkpoints(dir: &std::path::Path) -> CheckpointConfig {
    let key = dir.join("checkpoint-key.pem");
    std::fs::write(&key, authz::devkeys::DevKey::generate().to_pem()).expect("write the key");
    CheckpointConfig {
        signing_key: Some(key),
        every_records: 1000,
        every: Duration::from_secs(1),
        witness_file: Some(dir.join("witness.jsonl")),
        ..CheckpointConfig::default()
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        decision_id: uuid::Uuid::now_v7(),
        request_id: Some(format!("bench-{n}")),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        principal: Some(AuditPrincipal {
            id: "alice@example.com".into(),
            auth_method: "jwt".into(),
            roles: vec!["analyst".into(), "ml-user".into()],
        }),
        model: Some("resnet50".into()),
        version: Some("1".into()),
        action: "infer".into(),
        decision: AuditDecision::Allow,
        status: 200,
        reason: "ok".into(),
        policy_ids: vec!["analysts-may-infer".into()],
        access_reason: Some("ticket INC-4242: quarterly model review".into()),
        rate_limit: Some(RateLimitState {
            outcome: "allowed".into(),
            limit: Some(100),
            remaining: Some(99),
            retry_after_ms: None,
        }),
        source_ip: Some("10.1.2.3".parse().expect("a valid literal address")),
        latency: Duration::from_micros(180),
        request_time: None,
        shadow: None,
    }
}

fn sample(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encoding to a String");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Appends/s and mean batch size for one mode.
async fn measure(
    (mode, checkpointed): (Mode, bool),
    concurrency: usize,
    seconds: f64,
    base: &PathBuf,
) -> (f64, f64) {
    let dir = tempfile::tempdir_in(base).expect("a temp dir for the bench");
    let other = tempfile::tempdir_in(base).expect("a temp dir for the key and witness");
    let checkpoint = checkpointed.then(|| checkpoints(other.path()));
    let mut registry = Registry::default();
    let metrics = AuditMetrics::new(&mut registry);
    let log = match (mode, &checkpoint) {
        (Mode::Discard, None) => AuditLog::start_discarding_for_benchmarks(8192, metrics),
        (Mode::Discard, Some(checkpoint)) => {
            AuditLog::start_discarding_with_checkpoints_for_benchmarks(8192, metrics, checkpoint)
        }
        (Mode::Write | Mode::Fsync, _) => {
            let config = AuditConfig {
                checkpoint,
                path: dir.path().to_owned(),
                durability: if mode == Mode::Fsync {
                    Durability::Fsync
                } else {
                    Durability::Write
                },
                ..AuditConfig::default()
            };
            AuditLog::start(&config, metrics)
        }
    }
    .expect("audit log starts");
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency as u64)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    log.append(event(task)).await.expect("append");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("bench task");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let batches = sample(&registry, "authz_audit_batch_records_count");
    let records = sample(&registry, "authz_audit_batch_records_sum");
    log.shutdown();
    (
        rate,
        if batches > 0.0 {
            records / batches
        } else {
            0.0
        },
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let concurrency: usize = env_or("AUDIT_BENCH_CONCURRENCY", 64);
    let seconds: f64 = env_or("AUDIT_BENCH_SECONDS", 2.0);
    let rounds: usize = env_or("AUDIT_BENCH_ROUNDS", 3);
    let base: PathBuf = env_or("AUDIT_BENCH_DIR", std::env::temp_dir());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let modes = [
        (Mode::Discard, false),
        (Mode::Discard, true),
        (Mode::Write, false),
        (Mode::Write, true),
        (Mode::Fsync, false),
        (Mode::Fsync, true),
    ];
    let mut rates = vec![Vec::new(); modes.len()];
    let mut batch = vec![Vec::new(); modes.len()];
    println!(
        "audit appends/s: concurrency {concurrency}, {seconds} s x {rounds} rounds, files in {}",
        base.display()
    );
    for round in 0..rounds {
        for (index, mode) in modes.iter().enumerate() {
            let (rate, mean_batch) = runtime.block_on(measure(*mode, concurrency, seconds, &base));
            println!(
                "  round {round} {}: {rate:.0}/s, mean batch {mean_batch:.1}",
                name(*mode)
            );
            rates[index].push(rate);
            batch[index].push(mean_batch);
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    println!(
        "{:<14} {:>12} {:>11} {:>10} {:>14}",
        "mode", "appends/s", "mean batch", "vs discard", "ckpt cost"
    );
    for (index, mode) in modes.iter().enumerate() {
        // The cost of checkpoints: this mode against the same mode without them.
        let cost = if mode.1 {
            format!(
                "{:+.2}%",
                (1.0 - medians[index] / medians[index - 1]) * 100.0
            )
        } else {
            String::new()
        };
        println!(
            "{:<14} {:>12.0} {:>11.1} {:>9.2}x {:>14}",
            name(*mode),
            medians[index],
            median(&mut batch[index]),
            medians[index] / medians[0],
            cost
        );
    }
}

fn name((mode, checkpointed): (Mode, bool)) -> String {
    let mode = format!("{mode:?}").to_lowercase();
    if checkpointed {
        format!("{mode}+ckpt")
    } else {
        mode
    }
}
