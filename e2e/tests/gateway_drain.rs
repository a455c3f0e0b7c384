//! Issue 21: a model server that is draining receives no new gRPC requests through Envoy.
//!
//! Two model servers sit behind Envoy's `modelserver_grpc` cluster (one host alone would not
//! show it: with every host unhealthy, Envoy's panic mode routes to them anyway). SIGTERM starts
//! the first one's drain: its gRPC health turns `NOT_SERVING` at once while, for a long grace, it
//! still accepts and serves. Once Envoy's health check marks it unhealthy, new calls through
//! Envoy all go to the replica: the draining server's `nv_inference_request_success` does not
//! move though it is still up and accepting.

use e2e::stack::Stack;
use serde_json::json;
use std::net::SocketAddr;

const ANALYST: &[&str] = &["analyst", "mission-user"];
/// Long enough that the first server is still accepting when the calls are made.
const GRACE_MS: i64 = 120_000;
const CALLS: usize = 8;

#[test]
fn a_draining_model_server_receives_no_new_grpc_requests() {
    let stack = Stack::builder()
        .redis(false)
        .audit(false)
        .modelserver_setting("shutdown.readiness_grace_ms", GRACE_MS)
        .modelserver_replica(true)
        .start();
    let token = stack.token("drain-analyst", ANALYST);
    let cases = |tag: &str| {
        json!((0..CALLS)
            .map(|i| json!({"name": format!("{tag}-{i}"), "model": "benchmark-echo", "token": token}))
            .collect::<Vec<_>>())
    };
    let served = |tag: &str| {
        let results = stack.tritonclient_grpc(cases(tag));
        for (name, r) in &results {
            assert_eq!(r["ok"], true, "{name}: {r}\n{}", stack.diagnostics());
        }
        assert_eq!(results.len(), CALLS, "{results:?}");
    };
    let success = |of_replica: bool| {
        let name = "nv_inference_request_success";
        if of_replica {
            stack.replica_metric(name, None)
        } else {
            stack.modelserver_metric(name, None)
        }
    };
    // Both servers serve before the drain (least-request balancing spreads the calls).
    served("before");

    stack.signal_modelserver(libc::SIGTERM);
    let ready = SocketAddr::from(([127, 0, 0, 1], stack.ports().modelserver_http));
    e2e::wait_until(
        "the draining server's REST readiness answers 503",
        std::time::Duration::from_secs(5),
        None,
        || e2e::http_get(ready, "/v2/health/ready").is_ok_and(|(s, _)| s == 503),
    );
    stack.wait_cluster_unhealthy("modelserver_grpc");
    let (draining, replica) = (success(false), success(true));

    served("draining");

    assert_eq!(
        success(false),
        draining,
        "the draining server ran new requests\n{}",
        stack.diagnostics()
    );
    assert_eq!(
        success(true),
        replica + CALLS as f64,
        "the replica ran every new request"
    );
    // Not refused because it was gone: the draining server still accepts, within its grace.
    let (live, _) = e2e::http_get(ready, "/v2/health/live").expect("still accepting");
    assert_eq!(live, 200);
    assert!(
        stack
            .modelserver_logs()
            .contains("shutdown requested: draining"),
        "{}",
        stack.modelserver_logs()
    );
}
