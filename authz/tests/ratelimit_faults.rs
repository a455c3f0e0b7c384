//! Store faults with a real redis-server: kill it under load, then restart it.
//!
//! What a user must see: no crash, no check slower than the store timeout plus a small margin,
//! decisions that follow each model's `on_store_error` while Redis is gone (and metrics saying
//! so), and limiting again within a second of Redis being back.

use authz::ratelimit::{
    LimitTable, ModelRateLimit, OnStoreError, RateLimitConfig, RateLimitOutcome, RateLimiter,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT_MS: u64 = 50;
/// Scheduling slack on a loaded 2-core CI machine; a check that waited on a dead Redis for a
/// TCP timeout (seconds) would blow far past it.
const MARGIN: Duration = Duration::from_millis(100);

const MODELS: &str = r#"
    [closed]            # on_store_error defaults to deny; never limited in this test
    rate = 1000
    period = "1s"
    burst = 1000000
    [open]
    rate = 1000
    period = "1s"
    burst = 1000000
    on_store_error = "allow"
    [tight]
    rate = 1
    period = "1h"
    burst = 3
"#;

fn metric(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

struct Record {
    started: Instant,
    took: Duration,
    model: &'static str,
    outcome: RateLimitOutcome,
}

/// The limits of [`MODELS`], as the pipeline gets them from `Runtime::limits`.
fn table() -> Arc<LimitTable> {
    let models: std::collections::BTreeMap<String, ModelRateLimit> =
        toml::from_str(MODELS).unwrap();
    Arc::new(
        LimitTable::from_models("models", models.iter().map(|(n, m)| (n.as_str(), Some(m))))
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_load_fails_fast_follows_policy_and_recovers_within_a_second() {
    let mut redis = e2e::RedisServer::start();
    let table = table();
    let config = RateLimitConfig {
        redis_url: Some(redis.url()),
        timeout_ms: TIMEOUT_MS,
        ..RateLimitConfig::default()
    };
    let mut registry = Registry::default();
    let limiter = Arc::new(RateLimiter::from_config(&config, &mut registry).unwrap());
    for model in ["closed", "open"] {
        let warm = limiter.check(&table, "warm", model, &[]).await;
        assert!(matches!(warm, RateLimitOutcome::Allowed(_)), "{warm:?}");
    }

    // Load: 4 clients checking both models in a loop, every check timed.
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (limiter, table, stop, records) = (
                limiter.clone(),
                table.clone(),
                stop.clone(),
                records.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let model = if (i + c).is_multiple_of(2) {
                        "closed"
                    } else {
                        "open"
                    };
                    let started = Instant::now();
                    let outcome = limiter
                        .check(&table, &format!("client-{c}"), model, &[])
                        .await;
                    let took = started.elapsed();
                    records.lock().unwrap().push(Record {
                        started,
                        took,
                        model,
                        outcome,
                    });
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| redis.stop());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        metric(&registry, "authz_ratelimit_store_degraded "),
        1.0,
        "degraded while Redis is down"
    );
    assert!(limiter.is_degraded());
    let restart_began = Instant::now();
    tokio::task::block_in_place(|| redis.restart());
    let restarted_at = Instant::now();

    // Limiting resumes within a second of Redis answering again.
    let recovered_at = loop {
        let outcome = limiter.check(&table, "probe", "closed", &[]).await;
        if matches!(outcome, RateLimitOutcome::Allowed(_)) {
            break Instant::now();
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(3),
            "still {outcome:?} 3 s after restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("no check panicked");
    }
    let recovery = recovered_at - restarted_at;
    assert!(
        recovery < Duration::from_secs(1),
        "limiting resumed only after {recovery:?}"
    );
    let tight: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                limiter
                    .check(&table, "after-restart", "tight", &[])
                    .await
                    .is_allowed(),
            );
        }
        v
    };
    assert_eq!(
        tight,
        [true, true, true, false],
        "limits are enforced again after recovery"
    );
    assert_eq!(metric(&registry, "authz_ratelimit_store_degraded "), 0.0);

    let records = records.lock().unwrap();
    let slowest = records.iter().map(|r| r.took).max().unwrap();
    assert!(
        slowest <= Duration::from_millis(TIMEOUT_MS) + MARGIN,
        "slowest check took {slowest:?} (timeout {TIMEOUT_MS} ms)"
    );
    // While Redis was surely down, every decision follows its model's on_store_error.
    let outage: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.started >= killed_at + Duration::from_millis(100)
                && r.started + r.took <= restart_began
        })
        .collect();
    for model in ["closed", "open"] {
        let n = outage.iter().filter(|r| r.model == model).count();
        assert!(n > 20, "only {n} checks of {model} during the outage");
    }
    for r in &outage {
        let expected = if r.model == "open" {
            OnStoreError::Allow
        } else {
            OnStoreError::Deny
        };
        assert!(
            matches!(r.outcome, RateLimitOutcome::StoreFailed { policy, .. } if policy == expected),
            "{} during outage: {:?}",
            r.model,
            r.outcome
        );
        assert_eq!(r.outcome.is_allowed(), r.model == "open");
        assert!(r.outcome.degraded());
    }
    let denied = metric(
        &registry,
        "authz_ratelimit_degraded_decisions_total{model=\"closed\",decision=\"deny\"}",
    );
    let allowed = metric(
        &registry,
        "authz_ratelimit_degraded_decisions_total{model=\"open\",decision=\"allow\"}",
    );
    assert!(
        denied >= 20.0 && allowed >= 20.0,
        "degraded decisions: deny {denied}, allow {allowed}"
    );
    let fast_fails = metric(
        &registry,
        "authz_ratelimit_store_errors_total{kind=\"circuit_open\"}",
    );
    assert!(
        fast_fails > 0.0,
        "the breaker opened and spared the dead store"
    );
    eprintln!(
        "checks: {}, during outage: {}, slowest: {slowest:?}, recovery after restart: {recovery:?}",
        records.len(),
        outage.len()
    );
}

/// A Redis that hangs (SIGSTOP: the TCP connection stays open, nothing answers) is the case the
/// timeout exists for: the first checks wait exactly the timeout, then the breaker opens and
/// checks fail at once; after SIGCONT limiting resumes within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_timeout_then_the_breaker_answers_at_once() {
    use authz::ratelimit::StoreErrorKind;
    let mut redis = e2e::RedisServer::start();
    let table = table();
    let config = RateLimitConfig {
        redis_url: Some(redis.url()),
        timeout_ms: TIMEOUT_MS,
        breaker_failures: 3,
        breaker_cooldown_ms: 250,
        ..RateLimitConfig::default()
    };
    let limiter = RateLimiter::from_config(&config, &mut Registry::default()).unwrap();
    assert!(matches!(
        limiter.check(&table, "u", "closed", &[]).await,
        RateLimitOutcome::Allowed(_)
    ));

    redis.process().signal(libc::SIGSTOP);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let outcome = limiter.check(&table, "u", "closed", &[]).await;
        let took = started.elapsed();
        assert!(
            took <= Duration::from_millis(TIMEOUT_MS) + MARGIN,
            "a check took {took:?}"
        );
        let RateLimitOutcome::StoreFailed {
            policy: OnStoreError::Deny,
            error,
        } = outcome
        else {
            panic!("{outcome:?} while Redis hangs");
        };
        seen.push((error, took));
    }
    assert_eq!(
        serde_json::to_string(&limiter.check(&table, "u", "closed", &[]).await).unwrap(),
        r#"{"result":"store_failed","policy":"deny","error":"circuit_open"}"#,
        "the audit form of a degraded decision"
    );
    let kinds: Vec<StoreErrorKind> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds[..3], [StoreErrorKind::Timeout; 3], "{seen:?}");
    assert!(
        seen[..3]
            .iter()
            .all(|(_, took)| *took >= Duration::from_millis(TIMEOUT_MS)),
        "{seen:?}"
    );
    assert!(
        kinds[3..].iter().all(|k| *k == StoreErrorKind::CircuitOpen),
        "{seen:?}"
    );
    assert!(
        seen[3..]
            .iter()
            .all(|(_, took)| *took < Duration::from_millis(5)),
        "{seen:?}"
    );

    redis.process().signal(libc::SIGCONT);
    let resumed = Instant::now();
    loop {
        if matches!(
            limiter.check(&table, "u", "closed", &[]).await,
            RateLimitOutcome::Allowed(_)
        ) {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(1),
            "not recovered 1 s after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
