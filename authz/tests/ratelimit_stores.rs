//! One test body, every store: the in-process store, a real redis-server and a real 3-master
//! Redis Cluster (started by the tests) must make identical decisions with identical headers.
//! Plus: the cluster key-slot layout, and exactness with several limiter instances sharing Redis.

use authz::ratelimit::keys::{hash_tag, rate_limit_key};
use authz::ratelimit::{
    LimitTable, ModelRateLimit, RateLimitConfig, RateLimitOutcome, RateLimiter, StoreErrorKind,
};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

const LIMITS: &str = r#"
    [slow]              # one per hour, burst 5: decisions do not depend on timing
    rate = 1
    period = "1h"
    burst = 5
    [slow.roles.premium]
    rate = 2
    period = "1h"
    burst = 8
    [slow.roles.trial]
    rate = 1
    period = "1h"
    burst = 1
    [fast]              # 2/s, burst 2: refills within the test; 500 ms of slack for slow CI
    rate = 2
    period = "1s"
    burst = 2
    [open]
    unlimited = true
"#;

/// The limits of [`LIMITS`], as the pipeline gets them from `Runtime::limits`.
static TABLE: std::sync::LazyLock<LimitTable> = std::sync::LazyLock::new(|| {
    let models: std::collections::BTreeMap<String, ModelRateLimit> =
        toml::from_str(LIMITS).unwrap();
    LimitTable::from_models("models", models.iter().map(|(n, m)| (n.as_str(), Some(m)))).unwrap()
});

fn limiter(config: &RateLimitConfig) -> RateLimiter {
    RateLimiter::from_config(config, &mut Registry::default()).unwrap()
}

fn roles(r: &[&str]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

/// What a user sees from one check: the decision and its headers.
fn seen(outcome: RateLimitOutcome) -> String {
    match outcome {
        RateLimitOutcome::Allowed(s) => format!("200 {:?}", s.headers()),
        RateLimitOutcome::Limited(s) => format!("429 {:?}", s.headers()),
        RateLimitOutcome::Unlimited => "200 unlimited".into(),
        RateLimitOutcome::UnknownModel => "403 unknown model".into(),
        RateLimitOutcome::StoreFailed { policy, error } => {
            format!("store failed {error:?} -> {policy:?}")
        }
    }
}

/// The shared body: returns the transcript of everything a client would have seen.
async fn transcript(limiter: &RateLimiter) -> Vec<String> {
    let mut t = Vec::new();
    let mut check = async |principal: &str, model: &str, r: &[&str]| {
        t.push(format!(
            "{principal} {model} {r:?}: {}",
            seen(limiter.check(&TABLE, principal, model, &roles(r)).await)
        ));
    };
    // Burst of 5, then 429s with an exact Retry-After (one hour, rounded up).
    for _ in 0..7 {
        check("alice", "slow", &[]).await;
    }
    // Another principal is independent; weird ids are just ids.
    check("bob", "slow", &[]).await;
    check("spiffe://example.org/ns/x}{|%", "slow", &[]).await;
    check("spiffe://example.org/ns/x}{|%", "slow", &[]).await;
    // Role overrides: the most generous of the principal's roles.
    for _ in 0..9 {
        check("carol", "slow", &["trial", "premium"]).await;
    }
    check("dave", "slow", &["trial"]).await;
    check("dave", "slow", &["trial"]).await;
    check("erin", "open", &[]).await;
    check("erin", "nope", &[]).await;
    // Refill: burst 2 at 2/s; 550 ms later one more is admitted.
    check("frank", "fast", &[]).await;
    check("frank", "fast", &[]).await;
    check("frank", "fast", &[]).await;
    tokio::time::sleep(Duration::from_millis(550)).await;
    let after = limiter.check(&TABLE, "frank", "fast", &[]).await;
    t.push(format!(
        "frank fast after refill admitted: {}",
        after.is_allowed()
    ));
    t
}

fn expected_transcript() -> Vec<String> {
    let h = |remaining: u64, reset: u64, limit: u64| {
        format!(
            "[(\"ratelimit-limit\", \"{limit}\"), (\"ratelimit-remaining\", \"{remaining}\"), (\"ratelimit-reset\", \"{reset}\")]"
        )
    };
    let limited = |reset: u64, retry: u64, limit: u64| {
        format!(
            "429 [(\"ratelimit-limit\", \"{limit}\"), (\"ratelimit-remaining\", \"0\"), (\"ratelimit-reset\", \"{reset}\"), (\"retry-after\", \"{retry}\")]"
        )
    };
    let mut t = Vec::new();
    for k in 1..=5 {
        t.push(format!("alice slow []: 200 {}", h(5 - k, k * 3600, 5)));
    }
    for _ in 0..2 {
        t.push(format!("alice slow []: {}", limited(5 * 3600, 3600, 5)));
    }
    t.push(format!("bob slow []: 200 {}", h(4, 3600, 5)));
    let weird = "spiffe://example.org/ns/x}{|%";
    t.push(format!("{weird} slow []: 200 {}", h(4, 3600, 5)));
    t.push(format!("{weird} slow []: 200 {}", h(3, 7200, 5)));
    for k in 1..=8 {
        t.push(format!(
            "carol slow [\"trial\", \"premium\"]: 200 {}",
            h(8 - k, k * 1800, 8)
        ));
    }
    t.push(format!(
        "carol slow [\"trial\", \"premium\"]: {}",
        limited(8 * 1800, 1800, 8)
    ));
    t.push(format!("dave slow [\"trial\"]: 200 {}", h(0, 3600, 1)));
    t.push(format!("dave slow [\"trial\"]: {}", limited(3600, 3600, 1)));
    t.push("erin open []: 200 unlimited".into());
    t.push("erin nope []: 403 unknown model".into());
    t.push(format!("frank fast []: 200 {}", h(1, 1, 2)));
    t.push(format!("frank fast []: 200 {}", h(0, 1, 2)));
    t.push(format!("frank fast []: {}", limited(1, 1, 2)));
    t.push("frank fast after refill admitted: true".into());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_makes_identical_decisions() {
    let redis = e2e::RedisServer::start();
    let cluster = e2e::RedisCluster::start(3);
    let stores = [
        ("memory", RateLimitConfig::default()),
        (
            "redis",
            RateLimitConfig {
                redis_url: Some(redis.url()),
                timeout_ms: 1000,
                ..RateLimitConfig::default()
            },
        ),
        (
            "redis_cluster",
            RateLimitConfig {
                redis_cluster_nodes: cluster.urls(),
                timeout_ms: 1000,
                ..RateLimitConfig::default()
            },
        ),
    ];
    for (name, config) in stores {
        let limiter = limiter(&config);
        assert_eq!(limiter.store_name(), name);
        assert_eq!(
            transcript(&limiter).await,
            expected_transcript(),
            "store {name}"
        );
    }
}

/// The read-only peek (`GET /v1/models`' `remaining`), against one store: what a user sees in
/// the catalog next to the headers of its inference calls.
async fn peek_transcript(limiter: &RateLimiter, principal: &str) -> Vec<String> {
    let mut t = Vec::new();
    let r = |r: &[&str]| roles(r);
    t.push(format!(
        "fresh: {:?}",
        limiter.remaining(&TABLE, principal, "slow", &[]).await
    ));
    for _ in 0..3 {
        let outcome = limiter.check(&TABLE, principal, "slow", &[]).await;
        t.push(format!("header {:?}", outcome.state().map(|s| s.remaining)));
    }
    for _ in 0..2 {
        t.push(format!(
            "peek {:?}",
            limiter.remaining(&TABLE, principal, "slow", &[]).await
        ));
    }
    // The same key under the premium override (2 per hour, burst 8: a 4 h capacity): the 3 h the
    // base limit's requests put the TAT ahead leave 1 h, two of premium's half-hour intervals.
    t.push(format!(
        "premium: {:?}",
        limiter
            .remaining(&TABLE, principal, "slow", &r(&["premium"]))
            .await
    ));
    t.push(format!(
        "open: {:?}",
        limiter.remaining(&TABLE, principal, "open", &[]).await
    ));
    t.push(format!(
        "next header {:?}",
        limiter
            .check(&TABLE, principal, "slow", &[])
            .await
            .state()
            .map(|s| s.remaining)
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_peeks_the_remaining_quota_without_spending_it() {
    let redis = e2e::RedisServer::start();
    let cluster = e2e::RedisCluster::start(3);
    let expected: Vec<String> = [
        "fresh: Some(5)",
        "header Some(4)",
        "header Some(3)",
        "header Some(2)",
        "peek Some(2)",
        "peek Some(2)",
        "premium: Some(2)",
        "open: None",
        "next header Some(1)",
    ]
    .map(str::to_owned)
    .to_vec();
    let stores = [
        RateLimitConfig::default(),
        RateLimitConfig {
            redis_url: Some(redis.url()),
            timeout_ms: 1000,
            ..RateLimitConfig::default()
        },
        RateLimitConfig {
            redis_cluster_nodes: cluster.urls(),
            timeout_ms: 1000,
            ..RateLimitConfig::default()
        },
    ];
    for config in stores {
        let limiter = limiter(&config);
        assert_eq!(
            peek_transcript(&limiter, "peeker").await,
            expected,
            "store {}",
            limiter.store_name()
        );
    }

    // In Redis itself: a peek creates no key and leaves the expiry of an existing one alone.
    let config = RateLimitConfig {
        redis_url: Some(redis.url()),
        timeout_ms: 1000,
        ..RateLimitConfig::default()
    };
    let limiter = limiter(&config);
    let mut conn = sync_conn(&redis.url());
    let unseen = rate_limit_key(&config.key_prefix, "slow", "never-called");
    assert_eq!(
        limiter.remaining(&TABLE, "never-called", "slow", &[]).await,
        Some(5)
    );
    let exists: i64 = redis::cmd("EXISTS").arg(&unseen).query(&mut conn).unwrap();
    assert_eq!(exists, 0, "a peek created {unseen}");
    let key = rate_limit_key(&config.key_prefix, "slow", "peeker");
    let value_before: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    let ttl_before: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert_eq!(
        limiter.remaining(&TABLE, "peeker", "slow", &[]).await,
        Some(1)
    );
    let value_after: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    let ttl_after: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert_eq!(value_after, value_before, "a peek wrote the TAT");
    assert!(
        (0..=ttl_before).contains(&ttl_after),
        "a peek moved the expiry: {ttl_before} ms, then {ttl_after} ms"
    );
    // A key that does not hold a number: no figure, not a panic.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("tampered")
        .query(&mut conn)
        .unwrap();
    assert_eq!(limiter.remaining(&TABLE, "peeker", "slow", &[]).await, None);
}

/// With Redis down, the peek answers `None` within the store timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peek_of_an_unreachable_redis_is_none_within_the_timeout() {
    let port = e2e::free_port();
    let limiter = limiter(&RateLimitConfig {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..RateLimitConfig::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(limiter.remaining(&TABLE, "alice", "slow", &[]).await, None);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?} with a 50 ms store timeout",
        started.elapsed()
    );
}

fn sync_conn(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_live_on_the_slot_of_their_hash_tag_and_spread_over_masters() {
    let cluster = e2e::RedisCluster::start(3);
    let config = RateLimitConfig {
        redis_cluster_nodes: cluster.urls(),
        timeout_ms: 1000,
        ..RateLimitConfig::default()
    };
    let limiter = limiter(&config);
    let mut conns: Vec<redis::Connection> = cluster.urls().iter().map(|u| sync_conn(u)).collect();
    let mut keys_per_node = vec![0usize; conns.len()];
    for i in 0..60 {
        let principal = format!("user-{i}");
        assert!(
            limiter
                .check(&TABLE, &principal, "slow", &[])
                .await
                .is_allowed()
        );
        let key = rate_limit_key(&config.key_prefix, "slow", &principal);
        let tag = hash_tag(&key).unwrap();
        let key_slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut conns[0])
            .unwrap();
        let tag_slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(tag)
            .query(&mut conns[0])
            .unwrap();
        assert_eq!(key_slot, tag_slot, "{key}");
        // Exactly one master holds the key, and it is the one serving that slot.
        let mut holders = Vec::new();
        for (n, conn) in conns.iter_mut().enumerate() {
            let in_slot: i64 = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(key_slot)
                .query(conn)
                .unwrap();
            if in_slot > 0 {
                let exists: Result<i64, _> = redis::cmd("EXISTS").arg(&key).query(conn);
                assert_eq!(exists.unwrap(), 1, "{key} on node {n}");
                holders.push(n);
            }
        }
        assert_eq!(holders.len(), 1, "{key} held by {holders:?}");
        keys_per_node[holders[0]] += 1;
        // The TTL is the time until the key stops mattering (one interval = 1 h), not forever.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query(&mut conns[holders[0]])
            .unwrap();
        assert!((3_500_000..=3_600_000).contains(&ttl), "{key} ttl {ttl}");
    }
    assert!(
        keys_per_node.iter().all(|&n| n > 0),
        "keys per master: {keys_per_node:?}"
    );
}

/// 4 limiter instances (each its own connection, like 4 authz replicas) share one store; 500
/// concurrent checks for one (principal, model) with burst 100 and one request per hour admit
/// exactly 100. The timeout is raised to 1 s: this test is about atomicity, and an abandoned
/// call could have been admitted by Redis after the caller gave up.
async fn exactly_burst_admitted(config: RateLimitConfig) {
    let models: std::collections::BTreeMap<String, ModelRateLimit> =
        toml::from_str("[m]\nrate = 1\nperiod = \"1h\"\nburst = 100").unwrap();
    let table = Arc::new(
        LimitTable::from_models("models", models.iter().map(|(n, m)| (n.as_str(), Some(m))))
            .unwrap(),
    );
    let instances: Vec<Arc<RateLimiter>> = (0..4)
        .map(|_| Arc::new(RateLimiter::from_config(&config, &mut Registry::default()).unwrap()))
        .collect();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let (limiter, table) = (Arc::clone(&instances[i % 4]), Arc::clone(&table));
            tokio::spawn(async move { limiter.check(&table, "mallory", "m", &[]).await })
        })
        .collect();
    let mut admitted = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            RateLimitOutcome::Allowed(_) => admitted += 1,
            RateLimitOutcome::Limited(s) => {
                assert_eq!(
                    s.retry_after_secs, 3600,
                    "one request per hour after the burst"
                );
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, limited), (100, 400));
    let again = instances[0].check(&table, "mallory", "m", &[]).await;
    assert_eq!(
        serde_json::to_value(again).unwrap(),
        serde_json::json!({"result": "limited", "limit": 100, "remaining": 0, "reset_secs": 360000, "retry_after_secs": 3600}),
        "the audit form of a limited decision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_sharing_redis_admit_exactly_the_burst() {
    let redis = e2e::RedisServer::start();
    exactly_burst_admitted(RateLimitConfig {
        redis_url: Some(redis.url()),
        timeout_ms: 1000,
        ..RateLimitConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_sharing_a_cluster_admit_exactly_the_burst() {
    let cluster = e2e::RedisCluster::start(3);
    exactly_burst_admitted(RateLimitConfig {
        redis_cluster_nodes: cluster.urls(),
        timeout_ms: 1000,
        ..RateLimitConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_at_start_up_degrades_instead_of_failing_start_up() {
    let port = e2e::free_port();
    let config = RateLimitConfig {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        ..RateLimitConfig::default()
    };
    let limiter = limiter(&config);
    let outcome = limiter.check(&TABLE, "alice", "slow", &[]).await;
    assert!(
        matches!(
            outcome,
            RateLimitOutcome::StoreFailed {
                error: StoreErrorKind::Connection | StoreErrorKind::Timeout,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(!outcome.is_allowed(), "on_store_error defaults to deny");
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (the command-line tool) is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=authz test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ];
    ca.extend(ec);
    openssl(&ca, dir);
    let mut csr = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    csr.extend(ec);
    openssl(&csr, dir);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
        dir,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_certificate_and_limits_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls_port = e2e::free_port();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
    let _redis = e2e::RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let trusted = limiter(&RateLimitConfig {
        redis_url: Some(url.clone()),
        redis_ca_file: Some(ca.clone().into()),
        timeout_ms: 1000,
        ..RateLimitConfig::default()
    });
    let mut seen_tls = Vec::new();
    for _ in 0..2 {
        seen_tls.push(seen(
            trusted
                .check(&TABLE, "dave", "slow", &roles(&["trial"]))
                .await,
        ));
    }
    let expected: Vec<String> = expected_transcript()
        .iter()
        .filter_map(|l| l.strip_prefix("dave slow [\"trial\"]: ").map(str::to_owned))
        .collect();
    assert_eq!(seen_tls, expected, "same decisions over TLS");
    // Without the CA the certificate is not trusted: the store fails (closed), it does not
    // fall back to an unverified connection.
    let untrusted = limiter(&RateLimitConfig {
        redis_url: Some(url),
        timeout_ms: 1000,
        ..RateLimitConfig::default()
    });
    let outcome = untrusted.check(&TABLE, "dave", "slow", &[]).await;
    assert!(
        matches!(
            outcome,
            RateLimitOutcome::StoreFailed {
                error: StoreErrorKind::Connection,
                ..
            }
        ),
        "{outcome:?}"
    );
}
