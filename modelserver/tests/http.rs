//! The REST protocol against a real server and real ONNX Runtime, over loopback HTTP.

mod common;

use common::{config, f32_bytes, f32_values, length_prefixed, start};
use serde_json::{Value, json};

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    post_raw(url, serde_json::to_vec(&body).unwrap(), None).await
}

async fn post_raw(url: &str, body: Vec<u8>, header_len: Option<usize>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(n) = header_len {
        req = req.header("Inference-Header-Content-Length", n.to_string());
    }
    let r = req.send().await.expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A binary-extension inference: `header` as the JSON part, `tensors` after it; expects 200 and
/// returns the answer's JSON part and the binary data that follows it.
async fn post_binary(url: &str, header: &Value, tensors: &[u8]) -> (Value, Vec<u8>) {
    let mut body = serde_json::to_vec(header).unwrap();
    let n = body.len();
    body.extend_from_slice(tensors);
    let r = reqwest::Client::new()
        .post(url)
        .header("Inference-Header-Content-Length", n.to_string())
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    (
        serde_json::from_slice(&bytes[..json_len]).unwrap(),
        bytes[json_len..].to_vec(),
    )
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_health_and_metadata() {
    let s = start(common::direct()).await;
    let (status, body) = get(&format!("{}/v2", s.http)).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "modelserver");
    assert!(
        body["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    assert_eq!(get(&format!("{}/v2/health/live", s.http)).await.0, 200);
    // Broken models do not make the replica unready unless strict_readiness is set.
    assert_eq!(get(&format!("{}/v2/health/ready", s.http)).await.0, 200);
    let (status, body) = get(&format!("{}/v2/nothing/here", s.http)).await;
    assert_eq!(
        (status, error_of(&body)),
        (404, "no endpoint for /v2/nothing/here")
    );

    let strict = start(config("[limits]\nstrict_readiness = true\n")).await;
    assert_eq!(
        get(&format!("{}/v2/health/ready", strict.http)).await.0,
        503
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_and_config_are_completed_from_the_onnx_file() {
    let s = start(common::direct()).await;
    let (status, meta) = get(&format!("{}/v2/models/add_fp32", s.http)).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "a", "datatype": "FP32", "shape": [-1, 4]}, {"name": "b", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "diff", "datatype": "FP32", "shape": [-1, 4]})
    );
    let (status, cfg) = get(&format!("{}/v2/models/add_fp32/versions/1/config", s.http)).await;
    assert_eq!(status, 200);
    // Without config.pbtxt a dynamic first dimension everywhere is the batch dimension.
    assert_eq!(cfg["max_batch_size"], 4);
    assert_eq!(
        cfg["input"][0],
        json!({"name": "a", "data_type": "TYPE_FP32", "dims": [4]})
    );
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "cpu"
    );

    let (_, cfg) = get(&format!("{}/v2/models/identity_int64/config", s.http)).await;
    assert_eq!(cfg["max_batch_size"], 0);
    assert_eq!(cfg["input"][0]["dims"], json!([2, 3]));
    let (_, cfg) = get(&format!("{}/v2/models/echo_bytes/config", s.http)).await;
    assert_eq!(cfg["instance_group"][0]["count"], 2);
    assert_eq!(cfg["input"][0]["data_type"], "TYPE_STRING");
    assert_eq!(
        get(&format!("{}/v2/models/add_fp32/ready", s.http)).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_fp32_json_and_selected_outputs() {
    let s = start(common::direct()).await;
    let request = json!({
        "id": "req-1",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]},
            {"name": "b", "datatype": "FP32", "shape": [2, 4], "data": [10, 20, 30, 40, 50, 60, 70, 80]}
        ]
    });
    let (status, body) = post(
        &format!("{}/v2/models/add_fp32/infer", s.http),
        request.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "req-1");
    assert_eq!(body["model_version"], "1");
    assert_eq!(
        body["outputs"][0],
        json!({"name": "sum", "datatype": "FP32", "shape": [2, 4], "data": [11.0, 22.0, 33.0, 44.0, 55.0, 66.0, 77.0, 88.0]})
    );
    assert_eq!(
        body["outputs"][1]["data"],
        json!([-9.0, -18.0, -27.0, -36.0, -45.0, -54.0, -63.0, -72.0])
    );

    let mut only_diff = request;
    only_diff["outputs"] = json!([{"name": "diff"}]);
    let (status, body) = post(
        &format!("{}/v2/models/add_fp32/versions/1/infer", s.http),
        only_diff,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["name"], "diff");

    let (_, stats) = get(&format!("{}/v2/models/add_fp32/stats", s.http)).await;
    let st = &stats["model_stats"][0];
    assert_eq!(
        (
            st["inference_count"].as_u64(),
            st["execution_count"].as_u64()
        ),
        (Some(4), Some(2))
    );
    assert_eq!(st["inference_stats"]["success"]["count"], 2);
    let metrics = common::metrics(&s.metrics).await;
    assert!(
        metrics.contains("nv_inference_request_success{model=\"add_fp32\",version=\"1\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nv_inference_count{model=\"add_fp32\",version=\"1\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("nv_inference_exec_count{model=\"add_fp32\",version=\"1\"} 2"));
    assert!(metrics.contains("# TYPE nv_inference_compute_infer_duration_us counter"));
    assert!(
        metrics.contains("nv_inference_pending_request_count{model=\"add_fp32\",version=\"1\"} 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_binary_extension_in_and_out() {
    let s = start(common::direct()).await;
    let header = json!({
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
            {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}
        ],
        "outputs": [{"name": "sum", "parameters": {"binary_data": true}}, {"name": "diff"}]
    });
    let (head, tail) = post_binary(
        &format!("{}/v2/models/add_fp32/infer", s.http),
        &header,
        &f32_bytes(&[1.5, 2.5, 3.5, 4.5]),
    )
    .await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(head["outputs"][0].get("data").is_none());
    assert_eq!(f32_values(&tail), [2.5, 3.5, 4.5, 5.5]);
    assert_eq!(head["outputs"][1]["data"], json!([0.5, 1.5, 2.5, 3.5]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_round_trips() {
    let s = start(common::direct()).await;
    let cases = [
        ("BOOL", json!([true, false, true])),
        ("UINT8", json!([0, 7, 255])),
        ("UINT16", json!([0, 7, 65535])),
        ("UINT32", json!([0, 7, 4294967295u64])),
        ("UINT64", json!([0, 7, 18446744073709551615u64])),
        ("INT8", json!([-128, 0, 127])),
        ("INT16", json!([-32768, 0, 32767])),
        ("INT32", json!([-2147483648i64, 0, 2147483647])),
        (
            "INT64",
            json!([-9223372036854775808i64, 0, 9223372036854775807i64]),
        ),
        ("FP16", json!([0.5, -2.0, 1024.0])),
        ("BF16", json!([0.5, -2.0, 1024.0])),
        ("FP32", json!([0.25, -1.5, 3.0e10])),
        ("FP64", json!([0.1, -1.5, 1e300])),
        ("BYTES", json!(["", "héllo", "tab\there"])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(dt, data)| json!({"name": format!("in_{dt}"), "datatype": dt, "shape": [3], "data": data}))
        .collect();
    let (status, body) = post(
        &format!("{}/v2/models/identity_all/infer", s.http),
        json!({"inputs": inputs}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (dt, data) in &cases {
        let out = body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == format!("out_{dt}"))
            .unwrap();
        assert_eq!(out["datatype"], *dt);
        assert_eq!(out["shape"], json!([3]));
        assert_eq!(out["data"], *data, "{dt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_echo_over_json_and_binary() {
    let s = start(common::direct()).await;
    let (status, body) = post(
        &format!("{}/v2/models/echo_bytes/infer", s.http),
        json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["status report", "ok"]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!(["status report", "ok"]));

    let header = json!({
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 13}}],
        "parameters": {"binary_data_output": true}
    });
    let (_, tail) = post_binary(
        &format!("{}/v2/models/echo_bytes/infer", s.http),
        &header,
        &length_prefixed(&[b"abc", b"de"]),
    )
    .await;
    assert_eq!(tail, length_prefixed(&[b"abc", b"de"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_policy_and_version_routing() {
    let s = start(common::direct()).await;
    let (_, meta) = get(&format!("{}/v2/models/versioned", s.http)).await;
    assert_eq!(meta["versions"], json!(["2", "3"]));
    let req = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [10]}]});
    let (_, latest) = post(
        &format!("{}/v2/models/versioned/infer", s.http),
        req.clone(),
    )
    .await;
    assert_eq!(
        (
            latest["model_version"].clone(),
            latest["outputs"][0]["data"].clone()
        ),
        (json!("3"), json!([13.0]))
    );
    let (_, v2) = post(
        &format!("{}/v2/models/versioned/versions/2/infer", s.http),
        req.clone(),
    )
    .await;
    assert_eq!(v2["outputs"][0]["data"], json!([12.0]));
    let (status, body) = post(
        &format!("{}/v2/models/versioned/versions/1/infer", s.http),
        req,
    )
    .await;
    assert_eq!(
        (status, error_of(&body)),
        (404, "unknown version '1' of model 'versioned'")
    );
    assert_eq!(
        get(&format!("{}/v2/models/versioned/versions/1/ready", s.http))
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_loads_are_reported_and_others_serve() {
    let s = start(common::direct()).await;
    let (status, index) = post(&format!("{}/v2/repository/index", s.http), json!({})).await;
    assert_eq!(status, 200);
    let entry = |name: &str| {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("add_fp32")["state"], "READY");
    assert_eq!(entry("broken")["state"], "UNAVAILABLE");
    assert!(
        entry("broken")["reason"]
            .as_str()
            .unwrap()
            .contains("creating session from"),
        "{index}"
    );
    assert_eq!(
        entry("bad_config")["reason"],
        "config.pbtxt line 2: field 'sequence_batching': not supported: stateful sequence batching is not implemented"
    );
    let gpu_reason = entry("gpu_add")["reason"].as_str().unwrap().to_string();
    assert!(
        gpu_reason.contains("CUDA execution provider on GPU 0 could not be registered"),
        "{gpu_reason}"
    );
    assert!(
        gpu_reason.contains("CPU fallback is not allowed"),
        "{gpu_reason}"
    );

    let (status, body) = get(&format!("{}/v2/models/gpu_add", s.http)).await;
    assert_eq!(status, 503);
    assert!(
        error_of(&body)
            .starts_with("model 'gpu_add' is not ready: load failed: CUDA execution provider"),
        "{body}"
    );
    assert_eq!(
        get(&format!("{}/v2/models/broken/ready", s.http)).await.0,
        503
    );

    let (_, ready_only) = post(
        &format!("{}/v2/repository/index", s.http),
        json!({"ready": true}),
    )
    .await;
    assert!(
        ready_only
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "READY")
    );

    let metrics = common::metrics(&s.metrics).await;
    assert!(
        metrics.contains("modelserver_model_ready{model=\"gpu_add\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("modelserver_model_ready{model=\"add_fp32\"} 1"));
    assert!(metrics.contains("modelserver_model_load_failures_total{model=\"broken\"} 1"));
    assert!(metrics.contains(
        "modelserver_model_execution_provider{model=\"add_fp32\",version=\"1\",provider=\"cpu\"} 1"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nvml_the_server_serves_metrics_without_gpu_series() {
    let s = start(config(
        "[runtime]\nnvml_library = \"/nonexistent/libnvidia-ml.so.1\"\n",
    ))
    .await;
    let req = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    let (status, _) = post(&format!("{}/v2/models/add_fp32/infer", s.http), req).await;
    assert_eq!(status, 200);
    let response = reqwest::get(&s.metrics).await.unwrap();
    assert_eq!(response.status(), 200);
    let metrics = response.text().await.unwrap();
    assert!(
        metrics.contains("nv_inference_request_success{model=\"add_fp32\",version=\"1\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("nv_gpu_"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_optimization_level_comes_from_the_model_else_the_server() {
    let s = start(config(
        "[runtime]\ngraph_optimization_level = \"disable\"\n",
    ))
    .await;
    let level = |cfg: &Value| cfg["parameters"]["graph_optimization_level"]["string_value"].clone();
    let (_, cfg) = get(&format!("{}/v2/models/add_fp32/config", s.http)).await;
    assert_eq!(level(&cfg), "disable");
    assert!(cfg["optimization"].get("graph").is_none(), "{cfg}");
    // echo_bytes says `optimization { graph { level: -1 } }`: basic, as Triton's ONNX Runtime backend.
    let (_, cfg) = get(&format!("{}/v2/models/echo_bytes/config", s.http)).await;
    assert_eq!(level(&cfg), "basic");
    assert_eq!(cfg["optimization"]["graph"]["level"], -1);
    let req = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [4, 3, 2, 1]}]});
    let (status, body) = post(&format!("{}/v2/models/add_fp32/infer", s.http), req).await;
    assert_eq!(
        (status, body["outputs"][0]["data"].clone()),
        (200, json!([5.0, 5.0, 5.0, 5.0]))
    );
    let s = start(common::direct()).await;
    let (_, cfg) = get(&format!("{}/v2/models/add_fp32/config", s.http)).await;
    assert_eq!(level(&cfg), "all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_model_falls_back_to_cpu_only_when_configured_and_says_so() {
    let s = start(config("[runtime]\ncpu_fallback_models = [\"gpu_add\"]\n")).await;
    let (status, cfg) = get(&format!("{}/v2/models/gpu_add/config", s.http)).await;
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "cpu-fallback"
    );
    assert!(
        cfg["parameters"]["gpu_fallback_reason"]["string_value"]
            .as_str()
            .unwrap()
            .starts_with("GPU 0:")
    );
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_GPU");
    let (_, meta) = get(&format!("{}/v2/models/gpu_add", s.http)).await;
    assert_eq!(meta["parameters"]["execution_provider"], "cpu-fallback");
    let req = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    let (status, body) = post(&format!("{}/v2/models/gpu_add/infer", s.http), req).await;
    assert_eq!(
        (status, body["outputs"][0]["data"].clone()),
        (200, json!([2.0, 4.0, 6.0, 8.0]))
    );
    let metrics = common::metrics(&s.metrics).await;
    assert!(metrics.contains("modelserver_model_execution_provider{model=\"gpu_add\",version=\"1\",provider=\"cpu-fallback\"} 1"), "{metrics}");
    assert!(metrics.contains("modelserver_gpu_fallback_models 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = start(config("[limits]\nmax_body_bytes = 4096\n")).await;
    let infer = format!("{}/v2/models/add_fp32/infer", s.http);
    let a = |dt: &str, shape: Value, data: Value| json!({"name": "a", "datatype": dt, "shape": shape, "data": data});
    let b = json!({"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]});

    let (status, body) = post_raw(&infer, b"{\"inputs\": [".to_vec(), None).await;
    assert_eq!(status, 400);
    assert!(
        error_of(&body).starts_with("malformed inference request JSON: EOF while parsing"),
        "{body}"
    );

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"inputs": [a("FP64", json!([1, 4]), json!([1, 2, 3, 4])), b.clone()]}),
            400,
            "input 'a': datatype FP64 does not match the model's FP32",
        ),
        (
            json!({"inputs": [a("FLOAT", json!([1, 4]), json!([1, 2, 3, 4])), b.clone()]}),
            400,
            "input 'a': unknown datatype 'FLOAT'",
        ),
        (
            json!({"inputs": [a("FP32", json!([1, 4]), json!([1, 2, 3])), b.clone()]}),
            400,
            "input 'a': shape [1, 4] needs 4 elements but data has 3",
        ),
        (
            json!({"inputs": [a("FP32", json!([1, 4]), json!([1, 2, 3, 4, 5])), b.clone()]}),
            400,
            "input 'a': shape [1, 4] needs 4 elements but data has more than 4",
        ),
        (
            json!({"inputs": [a("FP32", json!([1, 3]), json!([1, 2, 3])), b.clone()]}),
            400,
            "input 'a': shape [1, 3] does not match the model's [-1, 4]",
        ),
        (
            json!({"inputs": [a("FP32", json!([4]), json!([1, 2, 3, 4])), b.clone()]}),
            400,
            "input 'a': shape [4] has rank 1 but the model expects [-1, 4]",
        ),
        (
            json!({"inputs": [a("FP32", json!([5, 4]), json!(vec![0; 20])), b.clone()]}),
            400,
            "input 'a': batch size 5 exceeds max_batch_size 4",
        ),
        (
            json!({"inputs": [a("FP32", json!([1, 4]), json!(["x", 2, 3, 4])), b.clone()]}),
            400,
            "input 'a': element 0 (\"x\") is not a valid FP32",
        ),
        (
            json!({"inputs": [b.clone()]}),
            400,
            "missing input 'a' for model 'add_fp32'",
        ),
        (
            json!({"inputs": [a("FP32", json!([1, 4]), json!([1, 2, 3, 4])), b.clone(), b.clone()]}),
            400,
            "input 'b' given more than once",
        ),
        (
            json!({"inputs": [a("FP32", json!([1, 4]), json!([1, 2, 3, 4])), b.clone()], "outputs": [{"name": "product"}]}),
            400,
            "unknown output 'product' for model 'add_fp32' (outputs: sum, diff)",
        ),
        (
            json!({"inputs": [{"name": "c", "datatype": "FP32", "shape": [1], "data": [1]}]}),
            400,
            "unexpected input 'c' for model 'add_fp32' (inputs: a, b)",
        ),
    ];
    for (request, want_status, want) in cases {
        let (status, body) = post(&infer, request.clone()).await;
        assert_eq!((status, error_of(&body)), (want_status, want), "{request}");
    }

    let (status, body) = post(
        &format!("{}/v2/models/echo_bytes/infer", s.http),
        json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a\u{0}b"]}]}),
    )
    .await;
    assert_eq!(
        (status, error_of(&body)),
        (
            400,
            "input 'TEXT': BYTES element 0 contains a NUL byte, which ONNX Runtime string tensors cannot carry"
        )
    );

    // A shape whose element count would need terabytes is refused by counting, not allocating.
    let (status, body) = post(
        &format!("{}/v2/models/identity_all/infer", s.http),
        json!({"inputs": [{"name": "in_FP32", "datatype": "FP32", "shape": [1099511627776i64], "data": [1.0]}]}),
    )
    .await;
    assert_eq!(
        (status, error_of(&body)),
        (
            400,
            "input 'in_FP32': shape [1099511627776] needs 1099511627776 elements but data has 1"
        )
    );
    let (status, body) = post(
        &format!("{}/v2/models/identity_all/infer", s.http),
        json!({"inputs": [{"name": "in_FP64", "datatype": "FP64", "shape": [4611686018427387904i64], "data": [1.0]}]}),
    )
    .await;
    assert_eq!(
        (status, error_of(&body)),
        (
            400,
            "input 'in_FP64': shape [4611686018427387904] needs 4611686018427387904 elements but data has 1"
        )
    );

    // Binary header lengths that lie.
    let header = serde_json::to_vec(&json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}, b.clone()]}))
    .unwrap();
    let mut body = header.clone();
    body.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let (status, resp) = post_raw(&infer, body.clone(), Some(body.len() + 1)).await;
    assert_eq!(
        (status, error_of(&resp)),
        (
            400,
            format!(
                "Inference-Header-Content-Length {} exceeds the body size {}",
                body.len() + 1,
                body.len()
            )
            .as_str()
        )
    );
    let (status, resp) = post_raw(&infer, body.clone(), Some(header.len() + 4)).await;
    assert_eq!(status, 400);
    assert!(
        error_of(&resp).starts_with("malformed inference request JSON"),
        "{resp}"
    );
    let (status, resp) =
        post_raw(&infer, body[..body.len() - 4].to_vec(), Some(header.len())).await;
    assert_eq!(
        (status, error_of(&resp)),
        (
            400,
            "input 'a': binary_data_size 16 exceeds the 12 bytes of binary data left"
        )
    );
    let mut extra = body.clone();
    extra.extend([0u8; 8]);
    let (status, resp) = post_raw(&infer, extra, Some(header.len())).await;
    assert_eq!(
        (status, error_of(&resp)),
        (
            400,
            "24 bytes of binary data follow the JSON header but inputs declare 16"
        )
    );
    let lying_size = serde_json::to_vec(&json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 8}}, b.clone()]}))
    .unwrap();
    let mut body = lying_size.clone();
    body.extend([0u8; 8]);
    let (status, resp) = post_raw(&infer, body, Some(lying_size.len())).await;
    assert_eq!(
        (status, error_of(&resp)),
        (
            400,
            "input 'a': shape [1, 4] of FP32 needs 16 bytes but 8 were given"
        )
    );

    // Names and states.
    let (status, resp) = post(
        &format!("{}/v2/models/%FF%FE/infer", s.http),
        json!({"inputs": []}),
    )
    .await;
    assert_eq!(
        (status, error_of(&resp)),
        (
            400,
            "path segment (model name or version) is not valid UTF-8"
        )
    );
    let (status, resp) = post(
        &format!("{}/v2/models/nope/infer", s.http),
        json!({"inputs": []}),
    )
    .await;
    assert_eq!((status, error_of(&resp)), (404, "unknown model 'nope'"));
    let (status, resp) = post(
        &format!("{}/v2/models/add_fp32/versions/x/infer", s.http),
        json!({"inputs": []}),
    )
    .await;
    assert_eq!(
        (status, error_of(&resp)),
        (404, "unknown version 'x' of model 'add_fp32'")
    );

    // Over the body limit.
    let big = vec![b' '; 5000];
    let (status, resp) = post_raw(&infer, big, None).await;
    assert_eq!(
        (status, error_of(&resp)),
        (
            413,
            "request body of 5000 bytes exceeds the limit of 4096 bytes"
        )
    );

    // Nothing above changed the model: it still answers, and every rejection counted as a failure.
    let good = json!({"inputs": [a("FP32", json!([1, 4]), json!([1, 2, 3, 4])), b]});
    let (status, _) = post(&infer, good).await;
    assert_eq!(status, 200);
    let (_, stats) = get(&format!("{}/v2/models/add_fp32/stats", s.http)).await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        1
    );
    assert_eq!(stats["model_stats"][0]["execution_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_load_and_unload() {
    let s = start(common::direct()).await;
    let repo = |m: &str, action: &str| format!("{}/v2/repository/models/{m}/{action}", s.http);
    let req =
        json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["x"]}]});
    assert_eq!(
        post_raw(&repo("echo_bytes", "unload"), Vec::new(), None)
            .await
            .0,
        200
    );
    let (status, body) = post(
        &format!("{}/v2/models/echo_bytes/infer", s.http),
        req.clone(),
    )
    .await;
    assert_eq!(
        (status, error_of(&body)),
        (503, "model 'echo_bytes' is not ready: unloaded")
    );
    assert_eq!(
        get(&format!("{}/v2/models/echo_bytes/ready", s.http))
            .await
            .0,
        503
    );
    let (_, index) = post(&format!("{}/v2/repository/index", s.http), json!({})).await;
    assert!(
        index
            .as_array()
            .unwrap()
            .contains(&json!({"name": "echo_bytes", "state": "UNAVAILABLE", "reason": "unloaded"}))
    );

    assert_eq!(
        post_raw(&repo("echo_bytes", "load"), Vec::new(), None)
            .await
            .0,
        200
    );
    let (status, _) = post(&format!("{}/v2/models/echo_bytes/infer", s.http), req).await;
    assert_eq!(status, 200);

    let (status, body) = post_raw(&repo("missing", "load"), Vec::new(), None).await;
    assert_eq!(status, 400);
    assert!(
        error_of(&body).starts_with("failed to load model 'missing': no model directory"),
        "{body}"
    );
    let (status, body) = post_raw(&repo("..%2Fetc", "load"), Vec::new(), None).await;
    assert_eq!(
        (status, error_of(&body)),
        (400, "invalid model name '../etc'")
    );
    let (status, body) = post_raw(&repo("never", "unload"), Vec::new(), None).await;
    assert_eq!((status, error_of(&body)), (404, "unknown model 'never'"));
    // A failed reload of a serving model leaves it serving.
    let (status, _) = post_raw(&repo("bad_config", "load"), Vec::new(), None).await;
    assert_eq!(status, 400);
    assert_eq!(
        get(&format!("{}/v2/models/add_fp32/ready", s.http)).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_instance_kind_gpu_puts_unconfigured_models_on_cuda() {
    let s = start(config("[runtime]\ndefault_instance_kind = \"gpu\"\n")).await;
    // No GPU here: the model that would silently have run on CPU is reported unavailable instead.
    let (status, body) = get(&format!("{}/v2/models/add_fp32", s.http)).await;
    assert_eq!(status, 503);
    assert!(
        error_of(&body).contains("CUDA execution provider on GPU 0 could not be registered"),
        "{body}"
    );
    // Models whose config names CPU instances are unaffected.
    let (_, cfg) = get(&format!("{}/v2/models/echo_bytes/config", s.http)).await;
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_CPU");

    let s = start(config(
        "[runtime]\ndefault_instance_kind = \"gpu\"\nallow_cpu_fallback = true\n",
    ))
    .await;
    let (_, cfg) = get(&format!("{}/v2/models/add_fp32/config", s.http)).await;
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_GPU");
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "cpu-fallback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_kind_gpu_overrides_kind_cpu_pinned_in_the_model_config() {
    // The GPU deployments set `instance_kind = "gpu"`: a repository whose configs pin KIND_CPU
    // (the demo's do) must run on CUDA, never silently on CPU. No GPU here, so without a
    // fallback the model is unavailable, with the CUDA error.
    let s = start(config(
        "[runtime]
instance_kind = \"gpu\"\n",
    ))
    .await;
    let (status, body) = get(&format!("{}/v2/models/echo_bytes", s.http)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        error_of(&body).contains("CUDA execution provider on GPU 0 could not be registered"),
        "{body}"
    );
    // With a fallback allowed, the config reports the kind the deployment chose and the
    // provider actually used; so do the metrics.
    let s = start(config(
        "[runtime]\ninstance_kind = \"gpu\"\nallow_cpu_fallback = true\n",
    ))
    .await;
    let (_, cfg) = get(&format!("{}/v2/models/echo_bytes/config", s.http)).await;
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_GPU", "{cfg}");
    assert_eq!(cfg["instance_group"][0]["gpus"], json!([0]), "{cfg}");
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "cpu-fallback"
    );
    let metrics = common::metrics(&s.metrics).await;
    assert!(
        metrics.contains(
            "modelserver_model_execution_provider{model=\"echo_bytes\",version=\"1\",provider=\"cpu-fallback\"} 1"
        ),
        "{metrics}"
    );
    // `cpu` pins every model on CPU, the GPU-configured one too.
    let s = start(config("[runtime]\ninstance_kind = \"cpu\"\n")).await;
    let (_, cfg) = get(&format!("{}/v2/models/gpu_add/config", s.http)).await;
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_CPU", "{cfg}");
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "cpu"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_and_responses() {
    use std::io::{Read, Write};
    let s = start(config("[limits]\nmax_body_bytes = 65536\n")).await;
    let body = serde_json::to_vec(&json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}))
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/add_fp32/infer", s.http))
        .header("Content-Encoding", "gzip")
        .header("Accept-Encoding", "deflate")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "deflate");
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(&r.bytes().await.unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let out: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(out["outputs"][0]["data"], json!([2.0, 3.0, 4.0, 5.0]));

    // A compressed bomb is refused by what it would expand to, not by its compressed size.
    let mut bomb = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 1 << 20]).unwrap();
    let (status, resp) = {
        let r = reqwest::Client::new()
            .post(format!("{}/v2/models/add_fp32/infer", s.http))
            .header("Content-Encoding", "deflate")
            .body(bomb.finish().unwrap())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, error_of(&resp)),
        (
            413,
            "request body of 65537 bytes exceeds the limit of 65536 bytes"
        )
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/add_fp32/infer", s.http))
        .header("Content-Encoding", "br")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported Content-Encoding 'br' (gzip, deflate or identity)"
    );
}
