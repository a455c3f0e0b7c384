//! Rate-limit checks per second: in-process store vs Redis on loopback, side by side in one run.
//!
//! `cargo bench -p authz --bench ratelimit` (needs redis-server: scripts/bootstrap.sh). Each round
//! runs every store for the same time with the same concurrency, alternating stores so machine
//! noise hits both; the report gives checks/s per store and the Redis/in-process ratio.
//! Optional arguments: `--seconds N` per store per round (default 2), `--rounds N` (default 3),
//! `--concurrency N` (default 64).

use authz::ratelimit::{
    LimitTable, ModelRateLimit, RateLimitConfig, RateLimitOutcome, RateLimiter,
};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PRINCIPALS: usize = 1000;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generous enough that every check is admitted: the steady state of a healthy gateway.
static TABLE: std::sync::LazyLock<LimitTable> = std::sync::LazyLock::new(|| {
    let models: std::collections::BTreeMap<String, ModelRateLimit> =
        toml::from_str("[m]\nrate = 1000000\nperiod = \"1s\"\nburst = 1000000").expect("limits");
    LimitTable::from_models("models", models.iter().map(|(n, m)| (n.as_str(), Some(m))))
        .expect("valid limits")
});

fn limiter(config: &RateLimitConfig) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::from_config(config, &mut Registry::default()).expect("limiter"))
}

/// Runs `concurrency` clients against `limiter` for `duration`; returns checks per second.
async fn measure(limiter: &Arc<RateLimiter>, concurrency: usize, duration: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let principals: Arc<Vec<String>> =
        Arc::new((0..PRINCIPALS).map(|i| format!("user-{i}")).collect());
    let started = Instant::now();
    let clients: Vec<_> = (0..concurrency)
        .map(|c| {
            let (limiter, stop, done, principals) = (
                limiter.clone(),
                stop.clone(),
                done.clone(),
                principals.clone(),
            );
            tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let outcome = limiter
                        .check(&TABLE, &principals[i % PRINCIPALS], "m", &[])
                        .await;
                    assert!(
                        matches!(outcome, RateLimitOutcome::Allowed(_)),
                        "{outcome:?}"
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                    i += concurrency;
                    // An in-process check never awaits anything, so without this the clients
                    // would never let the runtime run its timers (the stop signal). Both stores
                    // pay the same.
                    if i % (16 * concurrency) < concurrency {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds = arg("--seconds", 2);
    let rounds = arg("--rounds", 3);
    let concurrency = usize::try_from(arg("--concurrency", 64)).unwrap_or(64);
    let redis = e2e::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let memory = limiter(&RateLimitConfig::default());
        let remote = limiter(&RateLimitConfig {
            redis_url: Some(redis.url()),
            timeout_ms: 1000,
            ..RateLimitConfig::default()
        });
        // Warm up: connect, load the script.
        measure(&remote, concurrency, Duration::from_millis(300)).await;
        let duration = Duration::from_secs(seconds);
        let (mut mem_total, mut redis_total) = (0.0, 0.0);
        println!("store        round  checks/s   (concurrency {concurrency}, {seconds}s per store per round)");
        for round in 1..=rounds {
            let m = measure(&memory, concurrency, duration).await;
            let r = measure(&remote, concurrency, duration).await;
            println!("in-process   {round:>5}  {m:>10.0}");
            println!("redis        {round:>5}  {r:>10.0}");
            mem_total += m;
            redis_total += r;
        }
        let (m, r) = (mem_total / rounds as f64, redis_total / rounds as f64);
        println!("mean: in-process {m:.0}/s, redis {r:.0}/s, redis/in-process = {:.3}", r / m);
    });
}
