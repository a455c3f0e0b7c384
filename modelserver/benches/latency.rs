//! Concurrency-1 latency of one tiny model, side by side in one run: ONNX Runtime in-process
//! (the limit) against the same model through REST JSON, REST binary and gRPC on loopback.
//!
//! `cargo bench -p modelserver --bench latency` (ORT_DYLIB_PATH set; `ITERATIONS` env to change
//! the sample count per path, default 2000). The paths take turns in blocks of 100 requests, so
//! drift on a shared machine reaches all of them alike. Prints p50/p99 per path and the p50
//! overhead over the in-process run.
//! Dynamic batching, concurrency sweeps and the large model belong to the full benchmark harness.

use std::path::Path;
use std::time::{Duration, Instant};

use modelserver::grpc::pb;
use modelserver::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelserver::{Config, ModelServer};
use ort::session::Session;
use ort::value::Tensor;

/// Requests per path before the next path's turn.
const BLOCK: usize = 100;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

fn report(name: &str, limit_p50: Option<Duration>, mut samples: Vec<Duration>) -> Duration {
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    let overhead = limit_p50.map_or(String::new(), |l| {
        format!(
            "  overhead p50 {:>7.1} us",
            (p50.as_secs_f64() - l.as_secs_f64()) * 1e6
        )
    });
    println!(
        "{name:<22} p50 {:>8.1} us  p99 {:>8.1} us{overhead}",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    p50
}

fn main() {
    let iterations: usize = std::env::var("ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let repo = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_test_models.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(repo.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = Config::from_toml(
        Path::new("bench.toml"),
        "[runtime]\nintra_op_threads = 1\n[authorization]\nmode = \"none\"\n",
    )
    .expect("config");
    let server = rt
        .block_on(ModelServer::start(repo.path(), config))
        .expect("server");
    let model_file = repo.path().join("add_fp32/1/model.onnx");
    let a = [1.0f32, 2.0, 3.0, 4.0];

    // The limit: the same model file, ONNX Runtime in this process, nothing around it.
    let env = modelserver::runtime::environment(None).expect("ort");
    let mut session = Session::builder(env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(&model_file)
        .unwrap();
    let http = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let grpc = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let metrics = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let listeners = modelserver::Listeners {
        http,
        grpc,
        metrics,
    };
    rt.spawn(modelserver::serve(
        server.clone(),
        listeners,
        std::future::pending(),
    ));

    let client = reqwest::Client::new();
    let url = format!("http://{http_addr}/v2/models/add_fp32/infer");
    let json_body = serde_json::to_vec(&serde_json::json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": a},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": a}],
        "outputs": [{"name": "sum"}]}))
    .unwrap();
    let header = serde_json::to_vec(&serde_json::json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "sum", "parameters": {"binary_data": true}}]}))
    .unwrap();
    let raw: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut binary_body = header.clone();
    binary_body.extend(&raw);
    binary_body.extend(&raw);

    let mut grpc_client = rt
        .block_on(GrpcInferenceServiceClient::connect(format!(
            "http://{grpc_addr}"
        )))
        .unwrap();
    let input = |n: &str| pb::model_infer_request::InferInputTensor {
        name: n.into(),
        datatype: "FP32".into(),
        shape: vec![1, 4],
        ..Default::default()
    };
    let grpc_request = pb::ModelInferRequest {
        model_name: "add_fp32".into(),
        inputs: vec![input("a"), input("b")],
        raw_input_contents: vec![raw.clone(), raw.clone()],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "sum".into(),
            ..Default::default()
        }],
        ..Default::default()
    };

    // Interleaved: blocks of BLOCK requests per path in turn (limit, REST JSON, REST binary,
    // gRPC), so drift on a shared machine reaches every path alike. The first block of each path
    // warms up and is not recorded.
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for round in 0..=iterations.div_ceil(BLOCK) {
        let record = round > 0;
        for _ in 0..BLOCK {
            let t = Instant::now();
            let x = Tensor::from_array(([1usize, 4], a.to_vec())).unwrap();
            let y = Tensor::from_array(([1usize, 4], a.to_vec())).unwrap();
            let out = session.run(ort::inputs!["a" => x, "b" => y]).unwrap();
            let _ = out["sum"].try_extract_tensor::<f32>().unwrap();
            if record {
                samples[0].push(t.elapsed());
            }
        }
        rt.block_on(async {
            // REST JSON, then REST binary (the binary extension's header names the JSON part).
            for (slot, body, json_len) in
                [(1, &json_body, None), (2, &binary_body, Some(header.len()))]
            {
                for _ in 0..BLOCK {
                    let t = Instant::now();
                    let mut request = client.post(&url).body(body.clone());
                    if let Some(n) = json_len {
                        request = request.header("Inference-Header-Content-Length", n.to_string());
                    }
                    let r = request.send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    if record {
                        samples[slot].push(t.elapsed());
                    }
                }
            }
            for _ in 0..BLOCK {
                let t = Instant::now();
                grpc_client.model_infer(grpc_request.clone()).await.unwrap();
                if record {
                    samples[3].push(t.elapsed());
                }
            }
        });
    }
    let [limit, json, binary, grpc] = samples;
    let limit_p50 = report("in-process ort", None, limit);
    report("REST JSON", Some(limit_p50), json);
    report("REST binary", Some(limit_p50), binary);
    report("gRPC raw", Some(limit_p50), grpc);
}
