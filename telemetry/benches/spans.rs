//! What a request pays for its spans (`cargo bench -p telemetry --bench spans`): one server span
//! with five children and a few attributes (authz's shape), with export off and with export on
//! (the collector stalled, so spans only queue: the request path alone, no encoding).

use std::time::{Duration, Instant};

use telemetry::{ExportConfig, ExportMetrics, Span, Tracer};

const ROUNDS: u32 = 20_000;

fn one_request(tracer: &Tracer) {
    let mut span = tracer.server_span("authz.check", None);
    for step in ["a.facts", "a.authn", "a.policy", "a.ratelimit", "a.audit"] {
        let mut s = span.child(step);
        s.set_attribute("auth.method", "jwt");
        s.end();
    }
    if span.is_recording() {
        span.set_attribute("decision.reason", "allowed".to_owned());
        span.set_attribute("model.name", "mission-summarizer".to_owned());
    }
    std::hint::black_box(&span);
    drop::<Span>(span);
}

fn time(name: &str, tracer: &Tracer) {
    for _ in 0..1000 {
        one_request(tracer);
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        one_request(tracer);
    }
    let per = start.elapsed() / ROUNDS;
    println!(
        "{name:<40} {:>8.2} µs per request (6 spans)",
        per.as_secs_f64() * 1e6
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    rt.block_on(async {
        time("export off", &Tracer::disabled());
        let mut config = ExportConfig::new(
            format!("http://{}/v1/traces", stalled.local_addr().unwrap()),
            "bench",
        );
        config.max_queue_size = 1 << 18;
        config.schedule_delay = Duration::from_secs(60);
        config.max_batch_size = 1 << 18;
        let tracer = Tracer::start(config, ExportMetrics::default()).unwrap();
        time("export on, spans queued", &tracer);
        println!("dropped: {}", tracer.metrics().unwrap().dropped.get());
    });
}
