//! Stopping through `modelserver::serve`, as SIGTERM does: readiness (REST and gRPC health) turns
//! off first while requests are still served, the listeners close after the grace, and whatever
//! is still open when the drain deadline passes is abandoned.

mod common;

use std::time::{Duration, Instant};

use common::{config, start};
use modelserver::Stopped;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 2] = ["", "inference.GRPCInferenceService"];

async fn health(url: &str) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(
        tonic::transport::Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .expect("connect"),
    )
}

async fn grpc_status(url: &str, service: &str) -> i32 {
    health(url)
        .await
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

async fn ready_status(http: &str) -> u16 {
    // A fresh client: a new connection must still be accepted during the grace.
    reqwest::Client::new()
        .get(format!("{http}/v2/health/ready"))
        .send()
        .await
        .expect("REST server accepts")
        .status()
        .as_u16()
}

async fn infer_status(http: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{http}/v2/models/add_fp32/infer"))
        .json(&serde_json::json!({"inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]},
            {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}))
        .send()
        .await
        .expect("REST server accepts")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_off_before_listeners_close() {
    let grace = Duration::from_millis(1500);
    let s = start(config(&format!(
        "[shutdown]\nreadiness_grace_ms = {}\n",
        grace.as_millis()
    )))
    .await;
    assert_eq!(ready_status(&s.http).await, 200);
    for service in SERVICES {
        assert_eq!(
            grpc_status(&s.grpc, service).await,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    let started = Instant::now();
    s.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the grace: not ready on both protocols, yet new connections and requests are served.
    assert_eq!(ready_status(&s.http).await, 503);
    for service in SERVICES {
        assert_eq!(
            grpc_status(&s.grpc, service).await,
            ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    assert_eq!(infer_status(&s.http).await, 200);
    assert!(started.elapsed() < grace, "the checks ran within the grace");

    let http = s.http.clone();
    assert_eq!(s.shutdown().await.expect("clean drain"), Stopped::Drained);
    assert!(
        started.elapsed() >= grace,
        "listeners stayed open for the grace"
    );
    assert!(
        reqwest::get(format!("{http}/v2/health/live"))
            .await
            .is_err(),
        "the REST listener is closed after the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_abandons_calls_still_open() {
    let s = start(config(
        "[shutdown]\nreadiness_grace_ms = 0\ndrain_timeout_ms = 300\n",
    ))
    .await;
    // A health Watch stream never ends by itself: it holds the gRPC drain open.
    let mut watch = health(&s.grpc)
        .await
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("status").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let started = Instant::now();
    s.begin_shutdown();
    // Pushed to the watcher at the start of the drain.
    let next = watch.message().await.expect("status").expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    assert_eq!(s.shutdown().await.expect("serve"), Stopped::DeadlinePassed);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "serve returned {took:?} after shutdown, not at the 300 ms deadline"
    );
}
