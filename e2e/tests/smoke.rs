//! Smoke tests of the harness itself: the real dependencies the rest of the suite relies on
//! start, answer, and are the versions the project pins.

use e2e::{Envoy, RedisServer, free_port, http_get, tool};
use std::process::Command;

#[test]
fn envoy_1_40_starts_and_serves_a_direct_response() {
    let version = Command::new(tool("envoy"))
        .arg("--version")
        .output()
        .expect("envoy runs");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("/1.40."),
        "expected Envoy 1.40, got: {version}"
    );

    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: smoke
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: smoke
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "hello from envoy" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    );
    let envoy = Envoy::start(&config, admin);
    let (status, body) =
        http_get(([127, 0, 0, 1], listen).into(), "/anything").expect("envoy answers");
    assert_eq!(status, 200);
    assert_eq!(body, "hello from envoy");
    assert_eq!(envoy.stat("http.smoke.downstream_rq_2xx"), Some(1));
}

#[test]
fn redis_server_answers_and_restarts_empty() {
    fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new(tool("redis-cli"))
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    let mut redis = RedisServer::start();
    assert_eq!(cli(redis.port(), &["SET", "k", "v"]), "OK");
    assert_eq!(cli(redis.port(), &["GET", "k"]), "v");
    redis.stop();
    assert_eq!(
        cli(redis.port(), &["PING"]),
        "",
        "stopped redis no longer answers"
    );
    redis.restart();
    assert_eq!(
        cli(redis.port(), &["GET", "k"]),
        "",
        "no persistence: the key is gone"
    );
}

#[test]
fn ort_loads_the_bootstrapped_library_and_runs_a_tiny_model() {
    use ort::session::Session;
    use ort::value::Tensor;

    let lib = e2e::ort_dylib();
    let env = ort::init_from(&lib)
        .unwrap_or_else(|e| panic!("loading {}: {e}", lib.display()))
        .with_name("e2e-smoke")
        .build()
        .expect("the ONNX Runtime environment builds");
    let model = e2e::repo_root().join("e2e/tests/fixtures/add.onnx");
    let mut session = Session::builder(&env)
        .expect("a session builder")
        .commit_from_file(&model)
        .expect("add.onnx loads");
    let x = Tensor::from_array(([3usize], vec![1.0f32, 2.0, 3.0])).expect("X");
    let y = Tensor::from_array(([3usize], vec![10.0f32, 20.0, 30.0])).expect("Y");
    let outputs = session
        .run(ort::inputs!["X" => x, "Y" => y])
        .expect("the model runs");
    let (shape, z) = outputs["Z"]
        .try_extract_tensor::<f32>()
        .expect("Z is float32");
    assert_eq!(&shape[..], &[3]);
    assert_eq!(z, &[11.0, 22.0, 33.0]);
}

#[test]
fn a_missing_tool_fails_naming_it() {
    let err = std::panic::catch_unwind(|| tool("definitely-not-installed-gateway-tool"))
        .expect_err("a missing tool must fail, not skip");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("definitely-not-installed-gateway-tool"),
        "{msg}"
    );
    assert!(msg.contains("bootstrap"), "{msg}");
}

#[test]
fn redis_cluster_of_three_masters_serves_every_slot() {
    let cluster = e2e::RedisCluster::start(3);
    assert_eq!(cluster.urls().len(), 3);
    let port = cluster.urls()[0].rsplit(':').next().unwrap().to_string();
    let out = Command::new(tool("redis-cli"))
        .args(["-p", &port, "cluster", "info"])
        .output()
        .expect("redis-cli runs");
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");
}
