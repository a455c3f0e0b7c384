//! The serving benchmark: in one run, side by side, ONNX Runtime in-process (the limit) against
//! the same model served over REST JSON, REST binary and gRPC, each with dynamic batching off,
//! on with `batch_wait = busy` (the default: dispatch at once when an instance is free) and on
//! with `batch_wait = always` (Triton's wait), at concurrency 1, 8 and 32, beside an empty round
//! trip over the same client (the floor: `GET /v2/health/live` for REST, `ServerLive` for gRPC),
//! on a tiny model (`add`, two 4-float inputs) and the benchmark MLP (`bench-mlp`,
//! 256 -> 1024 -> 1024 -> 16). The repository has three variants of each model: `{name}` (no
//! `dynamic_batching`), `{name}-batched` and `{name}-batched-always` (the same with the model
//! parameter `batch_wait = "always"`).
//!
//! ```text
//! cargo bench -p modelserver --bench serving          # ORT_DYLIB_PATH set, the venv's onnx
//! BENCH_SECONDS=2 BENCH_RESNET=1 BENCH_CONCURRENCY=1,8,32 cargo bench -p modelserver --bench serving
//! BENCH_MODELS=bench-mlp BENCH_CONCURRENCY=8 cargo bench -p modelserver --bench serving  # one model
//! ```
//!
//! Every request carries one row (batch 1). Clients are closed loops: each of `c` workers sends
//! its next request when the previous one is answered. For each model, path and concurrency the
//! floor and the three batching modes run one after the other, so drift hits them alike. The limit is one session with the same
//! intra-op thread count and spinning setting as the server's, running batch-1 inputs back to back
//! in this process, including building the input tensors and reading the outputs (as the server
//! must); it is measured before and after each model's cells and the faster run is used, so drift
//! cannot flatter the server. ONNX Runtime's default (spinning intra-op threads) is a row of its
//! own when the server does not spin (`BENCH_INTRA_OP_SPINNING=1` makes both spin). Clients run in
//! the same process as the server, so on a small machine they compete with it for the cores: the
//! ratios are conservative. Prints a table (throughput, p50, p99, throughput ratio to the limit,
//! p50 overhead over the limit and over the floor), the ratios issue 22 asks for (batching on /
//! off at c=32, server / in-process at c=8, p50 − floor at c=1) and its goals, and writes them to
//! `bench-results/modelserver.json` at the workspace root (or `$BENCH_OUT`).
//!
//! `BENCH_DEVICE=cuda` (device `BENCH_GPU`, default 0) runs the same benchmark on the CUDA execution
//! provider: every model's instance group becomes `KIND_GPU` (so the server's CUDA instances run
//! through IoBinding), the in-process limit registers CUDA too, and a model that is not on CUDA
//! after loading stops the run (never a silent CPU measurement); the rows go to
//! `modelserver-cuda.json`. `BENCH_REPOSITORY=DIR` uses a repository built earlier with
//! `BENCH_WRITE_REPOSITORY=DIR` (which builds it and exits), for a machine without Python's `onnx`:
//! `scripts/gpu-bench-pack.sh` and `scripts/gpu-bench.sh` use both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use modelserver::grpc::pb;
use modelserver::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelserver::{Config, ModelServer};
use ort::session::Session;
use ort::value::Tensor;
use serde_json::{Value, json};

#[path = "serving/report.rs"]
mod report;
use report::{BatchMode, Kind, Protocol, Row};

/// The allocator of the `modelserver` binary, so the server measured here allocates as it does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A benchmarked model: FP32 inputs of `[1, dims...]` each, FP32 outputs read back.
struct Workload {
    /// Label in the table.
    label: &'static str,
    /// Model name without batching; see [`BatchMode::model`] for the batching variants.
    name: &'static str,
    inputs: Vec<(&'static str, Vec<usize>)>,
    outputs: Vec<&'static str>,
}

impl Workload {
    /// Each input's name, shape with the batch dimension 1, and deterministic values.
    fn batch_of_one(&self, salt: usize) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
        self.inputs
            .iter()
            .map(|(n, dims)| {
                let mut shape = vec![1];
                shape.extend(dims);
                (*n, shape, Self::values(dims.iter().product(), salt))
            })
            .collect()
    }

    fn values(width: usize, salt: usize) -> Vec<f32> {
        (0..width)
            .map(|i| ((i * 7 + salt * 13) % 97) as f32 / 97.0)
            .collect()
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Where the benchmark runs its models.
#[derive(Clone, Copy, PartialEq)]
enum Device {
    Cpu,
    /// CUDA device id.
    Cuda(i32),
}

impl Device {
    fn from_env() -> Self {
        match std::env::var("BENCH_DEVICE").as_deref() {
            Err(_) | Ok("cpu") => Device::Cpu,
            Ok("cuda") => Device::Cuda(env_or("BENCH_GPU", 0)),
            Ok(other) => panic!("BENCH_DEVICE={other}: expected cpu or cuda"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
        }
    }
}

/// Copies the repository at `from` to `to`, making every instance group a GPU one on `gpu`.
fn gpu_repository(from: &Path, to: &Path, gpu: i32) {
    for entry in std::fs::read_dir(from).expect("read repository") {
        let entry = entry.expect("repository entry");
        let model = entry.path();
        if !model.is_dir() {
            continue;
        }
        let target = to.join(entry.file_name());
        copy_dir(&model, &target);
        let config = target.join("config.pbtxt");
        let text = std::fs::read_to_string(&config).expect("config.pbtxt");
        assert!(
            text.contains("kind: KIND_CPU"),
            "{}: no KIND_CPU instance group to move to the GPU",
            config.display()
        );
        let text = text.replace("kind: KIND_CPU", &format!("kind: KIND_GPU gpus: [ {gpu} ]"));
        std::fs::write(&config, text).expect("write config.pbtxt");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).expect("copy");
        }
    }
}

/// Builds the benchmark repository: the tiny model from the test fixtures (with and without
/// batching) and the MLP (and ResNet) from `scripts/gen_models.py`.
fn repository(dir: &Path, resnet: bool) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = dir.join("fixtures");
    run_python(&[
        manifest.join("tests/fixtures/gen_test_models.py"),
        fixtures.clone(),
    ]);
    let repo = dir.join("repo");
    for (name, batching) in [
        ("add", ""),
        (
            "add-batched",
            "dynamic_batching { max_queue_delay_microseconds: 100 }\n",
        ),
    ] {
        let version = repo.join(name).join("1");
        std::fs::create_dir_all(&version).expect("mkdir");
        std::fs::copy(
            fixtures.join("add_fp32/1/model.onnx"),
            version.join("model.onnx"),
        )
        .expect("copy tiny model");
        std::fs::write(
            repo.join(name).join("config.pbtxt"),
            format!(
                "max_batch_size: 32\ninstance_group [ {{ count: 1 kind: KIND_CPU }} ]\n{batching}"
            ),
        )
        .expect("write config");
    }
    let generated = dir.join("generated");
    run_python(&[
        manifest.join("../scripts/gen_models.py"),
        "--no-demo".into(),
        "--bench".into(),
        generated.clone(),
    ]);
    let mut models = vec!["bench-mlp", "bench-mlp-batched"];
    if resnet {
        models.extend(["bench-resnet18", "bench-resnet18-batched"]);
    }
    for m in models {
        std::fs::rename(generated.join(m), repo.join(m)).expect("move model");
    }
    add_always_variants(&repo);
}

/// The model parameter that makes a batching model wait as Triton does.
const BATCH_WAIT_ALWAYS: &str =
    "parameters { key: \"batch_wait\" value: { string_value: \"always\" } }\n";

/// Gives every `{name}-batched` model in `repo` a `{name}-batched-always` twin that differs only
/// in the model parameter `batch_wait = "always"`; returns whether it added any.
fn add_always_variants(repo: &Path) -> bool {
    let mut added = false;
    for entry in std::fs::read_dir(repo).expect("read repository") {
        let name = entry.expect("repository entry").file_name();
        let name = name.to_string_lossy();
        let Some(base) = name.strip_suffix("-batched") else {
            continue;
        };
        let twin = repo.join(BatchMode::Always.model(base));
        if twin.exists() {
            continue;
        }
        copy_dir(&repo.join(name.as_ref()), &twin);
        let config = twin.join("config.pbtxt");
        let mut text = std::fs::read_to_string(&config).expect("config.pbtxt");
        if let Some(line) = text.lines().find(|l| l.starts_with("name:")) {
            // A config that names its model must name the twin.
            let renamed = format!("name: \"{}\"", BatchMode::Always.model(base));
            text = text.replacen(line, &renamed, 1);
        }
        text.push_str(BATCH_WAIT_ALWAYS);
        std::fs::write(&config, text).expect("write config.pbtxt");
        added = true;
    }
    added
}

fn run_python(args: &[PathBuf]) {
    let out = std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("python3 (run scripts/bootstrap.sh and `source .tools/env`)");
    assert!(
        out.status.success(),
        "{:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The limit: batch-1 runs back to back on one in-process session.
/// `spinning`: ONNX Runtime's default (intra-op threads spin between runs) or the server's
/// (`runtime.intra_op_spinning`, off by default: it starves the front end of the CPU).
fn in_process(
    model: &Path,
    w: &Workload,
    threads: usize,
    seconds: f64,
    device: Device,
    spinning: bool,
) -> Row {
    let env = modelserver::runtime::environment(None).expect("ONNX Runtime");
    let mut builder = Session::builder(env)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_intra_op_spinning(spinning).map_err(Into::into))
        .expect("session builder");
    if let Device::Cuda(gpu) = device {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default()
                .with_device_id(gpu)
                .build()
                .error_on_failure()])
            .unwrap_or_else(|e| {
                panic!(
                    "BENCH_DEVICE=cuda: ONNX Runtime could not register CUDA on device {gpu}: {e}"
                )
            });
    }
    let mut session = builder.commit_from_file(model).expect("session");
    let inputs = w.batch_of_one(1);
    let mut run = || {
        let values: Vec<(&str, ort::value::DynValue)> = inputs
            .iter()
            .map(|(n, shape, v)| {
                let t = Tensor::from_array((shape.clone(), v.clone())).expect("tensor");
                (*n, t.into_dyn())
            })
            .collect();
        let out = session.run(values).expect("run");
        for o in &w.outputs {
            let (_, data) = out[*o].try_extract_tensor::<f32>().expect("output");
            std::hint::black_box(data.to_vec());
        }
    };
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < seconds / 5.0 {
        run();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        run();
        samples.push(t.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    Row::new(w.label, Kind::InProcess { spinning }, 1, samples, elapsed)
}

/// Sends one request as worker `i`.
type Call = Arc<dyn Fn(usize) -> BoxFuture<'static, ()> + Send + Sync>;

/// One request function for `protocol` against `model`; each of `workers` gRPC workers has its
/// own connection, as separate clients would (REST clients get one each from reqwest's pool).
async fn caller(
    protocol: Protocol,
    http: &str,
    grpc: &str,
    model: &str,
    w: &Workload,
    workers: usize,
) -> Call {
    let values = w.batch_of_one(2);
    let outputs: Vec<String> = w.outputs.iter().map(|s| s.to_string()).collect();
    match protocol {
        Protocol::RestJson | Protocol::RestBinary => {
            let binary = matches!(protocol, Protocol::RestBinary);
            let url = format!("{http}/v2/models/{model}/infer");
            let inputs: Vec<Value> = values
                .iter()
                .map(|(n, shape, v)| {
                    if binary {
                        json!({"name": n, "datatype": "FP32", "shape": shape,
                               "parameters": {"binary_data_size": v.len() * 4}})
                    } else {
                        json!({"name": n, "datatype": "FP32", "shape": shape, "data": v})
                    }
                })
                .collect();
            let outs: Vec<Value> = outputs
                .iter()
                .map(|n| json!({"name": n, "parameters": {"binary_data": binary}}))
                .collect();
            let mut body =
                serde_json::to_vec(&json!({"inputs": inputs, "outputs": outs})).expect("json");
            let header_len = body.len();
            if binary {
                for (_, _, v) in &values {
                    body.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                }
            }
            let body = Bytes::from(body);
            let client = reqwest::Client::new();
            Arc::new(move |_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                Box::pin(async move {
                    let mut req = client.post(&url).body(body);
                    if binary {
                        req = req.header("Inference-Header-Content-Length", header_len);
                    }
                    let r = req.send().await.expect("POST");
                    let status = r.status();
                    let text = r.bytes().await.expect("body");
                    assert!(
                        status.is_success(),
                        "{status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                })
            })
        }
        Protocol::Grpc => {
            let clients = grpc_clients(grpc, workers).await;
            let request = pb::ModelInferRequest {
                model_name: model.as_bytes().to_vec(),
                inputs: values
                    .iter()
                    .map(|(n, shape, _)| pb::model_infer_request::InferInputTensor {
                        name: n.to_string(),
                        datatype: "FP32".into(),
                        shape: shape.iter().map(|&d| d as i64).collect(),
                        ..Default::default()
                    })
                    .collect(),
                raw_input_contents: values
                    .iter()
                    .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
                    .collect(),
                outputs: outputs
                    .iter()
                    .map(|n| pb::model_infer_request::InferRequestedOutputTensor {
                        name: n.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            Arc::new(move |i| {
                let (mut client, request) = (clients[i % clients.len()].clone(), request.clone());
                Box::pin(async move {
                    client.model_infer(request).await.expect("ModelInfer");
                })
            })
        }
    }
}

/// The floor: a round trip that does no work over the same kind of client as [`caller`]'s
/// (`GET /v2/health/live` with reqwest, `ServerLive` on one gRPC connection per worker).
async fn floor_caller(protocol: Protocol, http: &str, grpc: &str, workers: usize) -> Call {
    match protocol {
        Protocol::RestJson | Protocol::RestBinary => {
            let url = format!("{http}/v2/health/live");
            let client = reqwest::Client::new();
            Arc::new(move |_| {
                let (client, url) = (client.clone(), url.clone());
                Box::pin(async move {
                    let r = client.get(&url).send().await.expect("GET live");
                    assert!(r.status().is_success(), "live: {}", r.status());
                    r.bytes().await.expect("body");
                })
            })
        }
        Protocol::Grpc => {
            let clients = grpc_clients(grpc, workers).await;
            Arc::new(move |i| {
                let mut client = clients[i % clients.len()].clone();
                Box::pin(async move {
                    client
                        .server_live(pb::ServerLiveRequest {})
                        .await
                        .expect("ServerLive");
                })
            })
        }
    }
}

/// One gRPC connection per worker, as separate clients would have.
async fn grpc_clients(
    grpc: &str,
    workers: usize,
) -> Vec<GrpcInferenceServiceClient<tonic::transport::Channel>> {
    let mut clients = Vec::with_capacity(workers);
    for _ in 0..workers {
        clients.push(
            GrpcInferenceServiceClient::connect(grpc.to_string())
                .await
                .expect("gRPC connect"),
        );
    }
    clients
}

/// Closed-loop load: `concurrency` workers for `seconds` after a short warm-up.
async fn load(call: Call, concurrency: usize, seconds: f64) -> (Vec<Duration>, f64) {
    let warm_until = Instant::now() + Duration::from_secs_f64(seconds / 5.0);
    let end = warm_until + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    call(i).await;
                    if t >= warm_until {
                        samples.push(t.elapsed());
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (all, seconds)
}

fn main() {
    let seconds: f64 = env_or("BENCH_SECONDS", 2.0);
    let resnet = std::env::var("BENCH_RESNET").is_ok_and(|v| v == "1");
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device = Device::from_env();
    // The server's `runtime.intra_op_spinning` (default off), and the limit's.
    let spinning = std::env::var("BENCH_INTRA_OP_SPINNING").is_ok_and(|v| v == "1");
    let dir = tempfile::tempdir().expect("tempdir");
    if let Ok(out) = std::env::var("BENCH_WRITE_REPOSITORY") {
        repository(dir.path(), resnet);
        let out = PathBuf::from(out);
        copy_dir(&dir.path().join("repo"), &out);
        println!("wrote the benchmark repository to {}", out.display());
        return;
    }
    let built = match std::env::var("BENCH_REPOSITORY") {
        Ok(given) => {
            // A repository written before the `-batched-always` variants existed gets them in a
            // copy, never in the given directory.
            let copy = dir.path().join("repo-given");
            copy_dir(Path::new(&given), &copy);
            if add_always_variants(&copy) {
                copy
            } else {
                PathBuf::from(given)
            }
        }
        Err(_) => {
            repository(dir.path(), resnet);
            dir.path().join("repo")
        }
    };
    let repo = match device {
        Device::Cpu => built,
        Device::Cuda(gpu) => {
            let repo = dir.path().join("repo-gpu");
            gpu_repository(&built, &repo, gpu);
            repo
        }
    };

    let mut workloads = vec![
        Workload {
            label: "tiny",
            name: "add",
            inputs: vec![("a", vec![4]), ("b", vec![4])],
            outputs: vec!["sum", "diff"],
        },
        Workload {
            label: "bench-mlp",
            name: "bench-mlp",
            inputs: vec![("INPUT", vec![256])],
            outputs: vec!["OUTPUT"],
        },
    ];
    if let Ok(only) = std::env::var("BENCH_MODELS") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        workloads.retain(|w| only.contains(&w.label));
    }
    if resnet {
        workloads.push(Workload {
            label: "bench-resnet18",
            name: "bench-resnet18",
            inputs: vec![("INPUT", vec![3, 160, 160])],
            outputs: vec!["LOGITS"],
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::from_toml(
        Path::new("bench.toml"),
        &format!(
            "[runtime]\ncpu_cores = {cores}\nintra_op_spinning = {spinning}\n[limits]\nmax_queue_size = 256\n[authorization]\nmode = \"none\"\n"
        ),
    )
    .expect("config");
    let server = rt
        .block_on(ModelServer::start(&repo, config))
        .expect("server");
    for w in &workloads {
        for name in BatchMode::ALL.map(|m| m.model(w.name)) {
            let model = server
                .repository
                .get(&name, None)
                .unwrap_or_else(|e| panic!("{name} did not load: {e}"));
            let provider = model.runtime_parameters()["execution_provider"].clone();
            assert_eq!(
                provider,
                device.label(),
                "{name} runs on {provider}, not on {} as BENCH_DEVICE asks",
                device.label()
            );
        }
    }
    let (http, grpc) = rt.block_on(async {
        let h = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let g = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let urls = (
            format!("http://{}", h.local_addr().unwrap()),
            format!("http://{}", g.local_addr().unwrap()),
        );
        let m = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listeners = modelserver::Listeners {
            http: h,
            grpc: g,
            metrics: m,
        };
        tokio::spawn(modelserver::serve(
            server.clone(),
            listeners,
            std::future::pending(),
        ));
        urls
    });

    println!(
        "modelserver serving benchmark: {cores} cores, {seconds} s per cell, intra-op threads {cores}, execution provider {}",
        device.label()
    );
    report::print_header();
    let mut rows = Vec::new();
    for w in &workloads {
        let model_file = repo.join(w.name).join("1/model.onnx");
        // The limit runs with the server's session options, once before and once after the
        // model's cells; the faster of the two is the limit (drift on a shared machine must not
        // flatter the server). ONNX Runtime's default (spinning) is shown beside it when the
        // server does not spin.
        let before = in_process(&model_file, w, cores, seconds, device, spinning);
        let spun = (!spinning).then(|| in_process(&model_file, w, cores, seconds, device, true));
        let mut cells: Vec<Row> = spun.into_iter().collect();
        for protocol in Protocol::ALL {
            for &c in &concurrencies {
                // The floor (once for both REST paths) and the three batching modes back to back,
                // so drift hits them alike.
                if protocol != Protocol::RestBinary {
                    let call = rt.block_on(floor_caller(protocol, &http, &grpc, c));
                    let (samples, elapsed) = rt.block_on(load(call, c, seconds));
                    cells.push(Row::new(
                        w.label,
                        Kind::Floor(protocol),
                        c,
                        samples,
                        elapsed,
                    ));
                }
                for mode in BatchMode::ALL {
                    let model = mode.model(w.name);
                    let call = rt.block_on(caller(protocol, &http, &grpc, &model, w, c));
                    let (samples, elapsed) = rt.block_on(load(call, c, seconds));
                    let kind = Kind::Infer(protocol, mode);
                    cells.push(Row::new(w.label, kind, c, samples, elapsed));
                }
            }
        }
        let after = in_process(&model_file, w, cores, seconds, device, spinning);
        println!(
            "{:<15} limit before / after the cells: {:.0} / {:.0} req/s; the faster is the limit",
            w.label, before.throughput, after.throughput
        );
        let limit = if after.throughput > before.throughput {
            after
        } else {
            before
        };
        rows.extend(report::measure_model(limit, cells));
    }

    let labels: Vec<&'static str> = workloads.iter().map(|w| w.label).collect();
    let ratios = report::ratios(&rows, &labels);
    let goals = report::goals(&rows);
    let out = std::env::var("BENCH_OUT").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&out).expect("bench-results");
    let file = out.join(match device {
        Device::Cpu => "modelserver.json",
        Device::Cuda(_) => "modelserver-cuda.json",
    });
    let doc = json!({
        "benchmark": "modelserver serving",
        "cores": cores,
        "seconds_per_cell": seconds,
        "intra_op_threads": cores,
        "intra_op_spinning": spinning,
        "execution_provider": device.label(),
        "gpu": match device { Device::Cuda(gpu) => json!(gpu), Device::Cpu => Value::Null },
        "rows": report::json_rows(&rows),
        "ratios": ratios,
        "goals": goals,
    });
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write json");
    println!("wrote {}", file.display());
}
