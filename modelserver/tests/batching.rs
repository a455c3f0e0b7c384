//! Dynamic batching and overload protection against a real server and real ONNX Runtime.
//!
//! Tests that need requests to wait hold the model's only session themselves (through the
//! session pool's `reserve`), so "queued" is a state the test controls, not a race with a timer.

mod common;

use std::time::Duration;

use common::{config, f32_bytes, metrics, start};
use modelserver::grpc::pb;
use modelserver::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelserver::grpc::pb::model_infer_request::InferInputTensor;
use serde_json::{Value, json};
use tonic::Code;

async fn post(url: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.expect("body");
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn add_body(a: &[f32], b: &[f32], extra: Value) -> Value {
    let rows = (a.len() / 4) as i64;
    let mut body = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [rows, 4], "data": a},
        {"name": "b", "datatype": "FP32", "shape": [rows, 4], "data": b}]});
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    body
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {body}"))
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {body}"))
}

/// The value of `family{model="m",version="1"}` (or with extra labels) in the metrics text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

async fn stats(http: &str, model: &str) -> Value {
    let r = reqwest::get(format!("{http}/v2/models/{model}/stats"))
        .await
        .unwrap();
    let j: Value = r.json().await.unwrap();
    j["model_stats"][0].clone()
}

/// Waits until `model` has `n` requests queued.
async fn wait_queued(s: &common::Running, model: &str, n: u32) {
    let m = s.server.repository.get(model, None).unwrap();
    for _ in 0..500 {
        if m.scheduler.queued() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{model}: {} queued, expected {n}", m.scheduler.queued());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_result() {
    let s = start(common::direct()).await;
    let url = |m: &str| format!("{}/v2/models/{m}/infer", s.http);
    // Four clients at once, one of them sending two rows: 5 inferences, max_batch_size 8.
    let inputs: Vec<(Vec<f32>, Vec<f32>)> = (0..4)
        .map(|i| {
            let rows = if i == 2 { 2 } else { 1 };
            let a: Vec<f32> = (0..4 * rows).map(|j| (i * 10 + j) as f32).collect();
            let b: Vec<f32> = (0..4 * rows).map(|j| (j * j) as f32 - i as f32).collect();
            (a, b)
        })
        .collect();
    let batched_url = url("batched_add");
    let batched = futures::future::join_all(
        inputs
            .iter()
            .map(|(a, b)| post(&batched_url, add_body(a, b, json!({})))),
    )
    .await;
    for ((a, b), (status, _, body)) in inputs.iter().zip(&batched) {
        assert_eq!(*status, 200, "{body}");
        let (_, _, alone) = post(&url("add_fp32"), add_body(a, b, json!({}))).await;
        for name in ["sum", "diff"] {
            assert_eq!(output(body, name), output(&alone, name), "{name}");
        }
        let sum: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
        assert_eq!(output(body, "sum")["data"], json!(sum));
        assert_eq!(output(body, "sum")["shape"], json!([a.len() / 4, 4]));
    }

    let st = stats(&s.http, "batched_add").await;
    assert_eq!(st["inference_count"], 5, "{st}");
    let largest = st["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(largest > 1, "no batch merged two requests: {st}");
    assert!(st["execution_count"].as_u64().unwrap() < 4, "{st}");

    let text = metrics(&s.metrics).await;
    let labels = "model=\"batched_add\",version=\"1\"";
    let executions = metric(&text, &format!("nv_inference_batch_size_count{{{labels}}}"));
    assert_eq!(
        executions,
        st["execution_count"].as_u64().unwrap(),
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("nv_inference_batch_size_sum{{{labels}}}")),
        5
    );
    let singles = metric(
        &text,
        &format!("nv_inference_batch_size_bucket{{{labels},le=\"1\"}}"),
    );
    assert!(singles < executions, "{text}");
    assert_eq!(
        metric(&text, &format!("nv_inference_queue_size{{{labels}}}")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_different_non_batch_dims_are_not_merged() {
    let s = start(common::direct()).await;
    let url = format!("{}/v2/models/batched_var/infer", s.http);
    let widths = [2usize, 3, 2, 3, 2, 3];
    let responses = futures::future::join_all(widths.iter().enumerate().map(|(i, &w)| {
        let x: Vec<f32> = (0..w).map(|j| (i * 10 + j) as f32).collect();
        post(
            &url,
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, w], "data": x}]}),
        )
    }))
    .await;
    for (i, (&w, (status, _, body))) in widths.iter().zip(&responses).enumerate() {
        assert_eq!(*status, 200, "{body}");
        let y: Vec<f32> = (0..w).map(|j| 2.0 * (i * 10 + j) as f32).collect();
        assert_eq!(output(body, "y")["shape"], json!([1, w]));
        assert_eq!(output(body, "y")["data"], json!(y));
    }
    let st = stats(&s.http, "batched_var").await;
    assert_eq!(st["inference_count"], 6, "{st}");
    // Two widths can never share an execution.
    assert!(st["execution_count"].as_u64().unwrap() >= 2, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_requests_are_batched_and_split_back() {
    let s = start(common::direct()).await;
    let url = format!("{}/v2/models/batched_bytes/infer", s.http);
    let texts = ["alpha", "", "gamma delta", "\u{e9}t\u{e9}"];
    let responses = futures::future::join_all(texts.iter().map(|t| {
        post(
            &url,
            json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [t]}]}),
        )
    }))
    .await;
    for (t, (status, _, body)) in texts.iter().zip(&responses) {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(output(body, "TEXT_OUT")["data"], json!([t]), "{body}");
        assert_eq!(output(body, "TEXT_OUT")["shape"], json!([1, 1]));
    }
    let st = stats(&s.http, "batched_bytes").await;
    assert_eq!(st["inference_count"], 4, "{st}");
    assert!(st["execution_count"].as_u64().unwrap() < 4, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_larger_than_max_batch_size_is_rejected() {
    let s = start(common::direct()).await;
    let a = vec![1.0f32; 4 * 9];
    let (status, _, body) = post(
        &format!("{}/v2/models/batched_add/infer", s.http),
        add_body(&a, &a, json!({})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "input 'a': batch size 9 exceeds max_batch_size 8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_unavailable_over_grpc() {
    let s = start(common::direct()).await;
    let model = s.server.repository.get("batched_add", None).unwrap();
    let hold = model.pool.reserve().await.unwrap();
    let url = format!("{}/v2/models/batched_add/infer", s.http);
    let a = [1.0f32, 2.0, 3.0, 4.0];
    // max_queue_size 4: four requests wait for the held session...
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let body = add_body(&a, &[i as f32; 4], json!({}));
            let url = url.clone();
            tokio::spawn(async move { post(&url, body).await })
        })
        .collect();
    wait_queued(&s, "batched_add", 4).await;
    // ...and the fifth is turned away at once.
    let (status, retry, body) = post(&url, add_body(&a, &a, json!({}))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(
        body,
        json!({"error": "model 'batched_add' is overloaded: queue is full"})
    );
    let mut c = GrpcInferenceServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let e = c
        .model_infer(grpc_add("batched_add", &a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        e.message(),
        "model 'batched_add' is overloaded: queue is full"
    );
    let text = metrics(&s.metrics).await;
    let labels = "model=\"batched_add\",version=\"1\"";
    assert_eq!(
        metric(
            &text,
            &format!("nv_inference_rejected_overload{{{labels}}}")
        ),
        2
    );
    assert_eq!(
        metric(&text, &format!("nv_inference_queue_size{{{labels}}}")),
        4
    );

    // Released, the queued requests all complete with their own results.
    drop(hold);
    for (i, w) in waiting.into_iter().enumerate() {
        let (status, _, body) = w.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let sum: Vec<f32> = a.iter().map(|x| x + i as f32).collect();
        assert_eq!(output(&body, "sum")["data"], json!(sum));
    }
    wait_queued(&s, "batched_add", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_batching_has_a_bounded_queue_too() {
    let s = start(config("[limits]\nmax_queue_size = 1\n")).await;
    let model = s.server.repository.get("add_fp32", None).unwrap();
    let hold = model.pool.reserve().await.unwrap();
    let url = format!("{}/v2/models/add_fp32/infer", s.http);
    let a = [1.0f32; 4];
    let first = {
        let (url, body) = (url.clone(), add_body(&a, &a, json!({})));
        tokio::spawn(async move { post(&url, body).await })
    };
    wait_queued(&s, "add_fp32", 1).await;
    let (status, retry, body) = post(&url, add_body(&a, &a, json!({}))).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    drop(hold);
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let text = metrics(&s.metrics).await;
    assert_eq!(
        metric(
            &text,
            "nv_inference_rejected_overload{model=\"add_fp32\",version=\"1\"}"
        ),
        1
    );
}

fn grpc_add(model: &str, a: &[f32]) -> pb::ModelInferRequest {
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![1, 4],
        ..Default::default()
    };
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("a"), input("b")],
        raw_input_contents: vec![f32_bytes(a), f32_bytes(a)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_queued_at_their_deadline_time_out_and_never_run() {
    let s = start(common::direct()).await;
    let model = s.server.repository.get("timeout_add", None).unwrap();
    let hold = model.pool.reserve().await.unwrap();
    let a = [1.0f32, 2.0, 3.0, 4.0];
    // The request's own timeout (20 ms) shortens the model's 1 s default.
    let started = std::time::Instant::now();
    let (status, retry, body) = post(
        &format!("{}/v2/models/timeout_add/infer", s.http),
        add_body(&a, &a, json!({"parameters": {"timeout": 20000}})),
    )
    .await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    assert_eq!(
        body,
        json!({"error": "model 'timeout_add': request timed out in the queue"})
    );
    assert!(started.elapsed() < Duration::from_millis(900));
    // gRPC, no timeout parameter: the model's default applies.
    let mut c = GrpcInferenceServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let e = c
        .model_infer(grpc_add("timeout_add", &a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        e.message(),
        "model 'timeout_add': request timed out in the queue"
    );
    // A model without a queue policy honours the request's timeout alone.
    let plain = s.server.repository.get("add_fp32", None).unwrap();
    let hold_plain = plain.pool.reserve().await.unwrap();
    let (status, _, body) = post(
        &format!("{}/v2/models/add_fp32/infer", s.http),
        add_body(&a, &a, json!({"parameters": {"timeout": 10000}})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // A malformed timeout is the client's error.
    let (status, _, body) = post(
        &format!("{}/v2/models/add_fp32/infer", s.http),
        add_body(&a, &a, json!({"parameters": {"timeout": "soon"}})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "parameter 'timeout' must be a non-negative integer (microseconds)"
    );

    drop((hold, hold_plain));
    let (status, _, body) = post(
        &format!("{}/v2/models/timeout_add/infer", s.http),
        add_body(&a, &a, json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = metrics(&s.metrics).await;
    let labels = "model=\"timeout_add\",version=\"1\"";
    assert_eq!(
        metric(&text, &format!("nv_inference_timed_out{{{labels}}}")),
        2
    );
    // Only the last request ran: the timed-out ones were never computed.
    assert_eq!(
        metric(&text, &format!("nv_inference_exec_count{{{labels}}}")),
        1
    );
    assert_eq!(metric(&text, &format!("nv_inference_count{{{labels}}}")), 1);
    assert_eq!(
        metric(
            &text,
            "nv_inference_timed_out{model=\"add_fp32\",version=\"1\"}"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_went_away_is_not_computed() {
    let s = start(common::direct()).await;
    let model = s.server.repository.get("batched_add", None).unwrap();
    let hold = model.pool.reserve().await.unwrap();
    let a = [1.0f32; 4];
    let grpc = s.grpc.clone();
    let call = tokio::spawn(async move {
        let mut c = GrpcInferenceServiceClient::connect(grpc).await.unwrap();
        c.model_infer(grpc_add("batched_add", &a)).await
    });
    wait_queued(&s, "batched_add", 1).await;
    // The client gives up: tonic resets the stream and the server drops the request's future.
    call.abort();
    let labels = "model=\"batched_add\",version=\"1\"";
    let mut cancelled = 0;
    for _ in 0..500 {
        let text = metrics(&s.metrics).await;
        cancelled = metric(&text, &format!("nv_inference_cancelled{{{labels}}}"));
        if cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cancelled, 1);
    drop(hold);
    let (status, _, body) = post(
        &format!("{}/v2/models/batched_add/infer", s.http),
        add_body(&a, &a, json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = metrics(&s.metrics).await;
    assert_eq!(
        metric(&text, &format!("nv_inference_count{{{labels}}}")),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("nv_inference_queue_size{{{labels}}}")),
        0
    );
    assert_eq!(
        metric(&text, &format!("nv_inference_request_failure{{{labels}}}")),
        1
    );
}

/// One request to `model`, answered 200; how long it took.
async fn one_add(s: &common::Running, model: &str) -> Duration {
    let started = std::time::Instant::now();
    let (status, _, body) = post(
        &format!("{}/v2/models/{model}/infer", s.http),
        add_body(&[1.0; 4], &[2.0; 4], json!({})),
    )
    .await;
    assert_eq!(status, 200, "{model}: {body}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_an_instance_free_runs_without_waiting_for_company() {
    // eager_add's queue delay is 2 s: with the default batch_wait ("busy") a lone request does not
    // wait for it. patient_add keeps Triton's wait (300 ms) for those who ask for it.
    let s = start(common::direct()).await;
    for _ in 0..3 {
        let took = one_add(&s, "eager_add").await;
        assert!(took < Duration::from_secs(1), "eager_add took {took:?}");
    }
    let took = one_add(&s, "patient_add").await;
    assert!(
        took >= Duration::from_millis(300),
        "patient_add took {took:?}"
    );
    let cfg: Value = reqwest::get(format!("{}/v2/models/eager_add/config", s.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cfg["parameters"]["batch_wait"]["string_value"], "busy",
        "{cfg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_arrive_while_every_instance_is_busy_run_as_one_batch() {
    let s = start(common::direct()).await;
    let model = s.server.repository.get("eager_add", None).unwrap();
    // The only instance is busy...
    let hold = model.pool.reserve().await.unwrap();
    let url = format!("{}/v2/models/eager_add/infer", s.http);
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let body = add_body(&[i as f32; 4], &[1.0; 4], json!({}));
            let url = url.clone();
            tokio::spawn(async move { post(&url, body).await })
        })
        .collect();
    // ...while four requests queue up; when it frees they run together, each with its own answer.
    wait_queued(&s, "eager_add", 4).await;
    drop(hold);
    for (i, w) in waiting.into_iter().enumerate() {
        let (status, _, body) = w.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(output(&body, "sum")["data"], json!(vec![i as f32 + 1.0; 4]));
    }
    let st = stats(&s.http, "eager_add").await;
    assert_eq!(st["inference_count"], 4, "{st}");
    assert_eq!(st["execution_count"], 1, "{st}");
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_the_model_idle_never_visits_the_batching_thread() {
    let s = start(common::direct()).await;
    for _ in 0..3 {
        one_add(&s, "eager_add").await;
    }
    // Thread names are cut to 15 bytes by the kernel.
    let batcher = "batcher-eager_a";
    assert!(
        !thread_names().iter().any(|n| n == batcher),
        "{:?}",
        thread_names()
    );
    let st = stats(&s.http, "eager_add").await;
    assert_eq!(st["inference_count"], 3, "{st}");
    assert_eq!(st["execution_count"], 3, "{st}");
    // Busy: the request queues for the batching thread, which starts then.
    let model = s.server.repository.get("eager_add", None).unwrap();
    let hold = model.pool.reserve().await.unwrap();
    let url = format!("{}/v2/models/eager_add/infer", s.http);
    let waiting =
        tokio::spawn(async move { post(&url, add_body(&[1.0; 4], &[2.0; 4], json!({}))).await });
    wait_queued(&s, "eager_add", 1).await;
    drop(hold);
    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(output(&body, "sum")["data"], json!(vec![3.0; 4]));
    assert!(
        thread_names().iter().any(|n| n == batcher),
        "{:?}",
        thread_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_happens_on_the_calling_worker_a_long_one_on_the_blocking_pool() {
    let s = start(common::direct()).await;
    let model = s.server.repository.get("eager_add", None).unwrap();
    let run = |pause: Duration| {
        let pool = std::sync::Arc::clone(&model.pool);
        async move {
            let caller = std::thread::current().id();
            let ran = pool
                .reserve()
                .await
                .unwrap()
                .run(move |_| {
                    std::thread::sleep(pause);
                    std::thread::current().id()
                })
                .await
                .unwrap();
            ran == caller
        }
    };
    assert!(
        !run(Duration::ZERO).await,
        "the first run is not measured yet"
    );
    assert!(run(Duration::ZERO).await, "a short run stays on the worker");
    assert!(
        run(Duration::from_millis(5)).await,
        "the last run was short"
    );
    assert!(!run(Duration::ZERO).await, "the last run took 5 ms");
    // A run that panics is an error, and the session stays usable.
    assert!(run(Duration::ZERO).await);
    let err = model
        .pool
        .reserve()
        .await
        .unwrap()
        .run(|_| -> u32 { panic!("boom") })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    one_add(&s, "eager_add").await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_never_runs_inline() {
    let s = start(common::direct()).await;
    let model = s.server.repository.get("eager_add", None).unwrap();
    for _ in 0..2 {
        let caller = std::thread::current().id();
        let ran = model
            .pool
            .reserve()
            .await
            .unwrap()
            .run(|_| std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(ran, caller);
    }
}
