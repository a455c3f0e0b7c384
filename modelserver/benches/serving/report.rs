//! The serving benchmark's rows and what they mean: the table (each row against the model's
//! in-process limit and against the empty round trip of its protocol at the same concurrency),
//! the ratios issue 22 asks for, its goals, and the JSON document.

use std::time::Duration;

use serde_json::{Value, json};

/// How a row's requests travelled.
#[derive(Clone, Copy, PartialEq)]
pub enum Protocol {
    RestJson,
    RestBinary,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::RestJson, Protocol::RestBinary, Protocol::Grpc];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::RestJson => "REST JSON",
            Protocol::RestBinary => "REST binary",
            Protocol::Grpc => "gRPC",
        }
    }

    /// The path of the empty round trip this protocol is compared with: REST JSON and REST
    /// binary share one (the same client, `GET /v2/health/live`); gRPC's is `ServerLive`.
    pub fn floor(self) -> &'static str {
        match self {
            Protocol::RestJson | Protocol::RestBinary => "REST floor (GET live)",
            Protocol::Grpc => "gRPC floor (ServerLive)",
        }
    }
}

/// Dynamic batching as the served model variant configures it.
#[derive(Clone, Copy, PartialEq)]
pub enum BatchMode {
    /// `{name}`: no `dynamic_batching`, each request runs alone.
    Off,
    /// `{name}-batched`: `dynamic_batching` with the default `batch_wait = busy`.
    Busy,
    /// `{name}-batched-always`: the same with the model parameter `batch_wait = "always"`.
    Always,
}

impl BatchMode {
    pub const ALL: [BatchMode; 3] = [BatchMode::Off, BatchMode::Busy, BatchMode::Always];

    pub fn label(self) -> &'static str {
        match self {
            BatchMode::Off => "off",
            BatchMode::Busy => "busy",
            BatchMode::Always => "always",
        }
    }

    /// The repository's model for `name` in this mode.
    pub fn model(self, name: &str) -> String {
        match self {
            BatchMode::Off => name.to_string(),
            BatchMode::Busy => format!("{name}-batched"),
            BatchMode::Always => format!("{name}-batched-always"),
        }
    }
}

/// What a row measured.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// In-process ONNX Runtime, batch 1 back to back (`spinning`: ONNX Runtime's default).
    InProcess { spinning: bool },
    /// The empty round trip over `Protocol`'s client.
    Floor(Protocol),
    /// Inference over `Protocol` on the model variant of `BatchMode`.
    Infer(Protocol, BatchMode),
}

/// One cell of the benchmark.
pub struct Row {
    pub model: &'static str,
    pub kind: Kind,
    pub concurrency: usize,
    pub requests: usize,
    pub throughput: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Row {
    /// Sorts `samples` and summarizes them over `elapsed` seconds.
    pub fn new(
        model: &'static str,
        kind: Kind,
        concurrency: usize,
        mut samples: Vec<Duration>,
        elapsed: f64,
    ) -> Self {
        samples.sort_unstable();
        Row {
            model,
            kind,
            concurrency,
            requests: samples.len(),
            throughput: samples.len() as f64 / elapsed,
            p50: percentile(&samples, 0.5),
            p99: percentile(&samples, 0.99),
        }
    }

    fn path(&self) -> &'static str {
        match self.kind {
            Kind::InProcess { spinning: false } => "in-process ort",
            Kind::InProcess { spinning: true } => "in-process ort (spinning)",
            Kind::Floor(p) => p.floor(),
            Kind::Infer(p, _) => p.label(),
        }
    }

    fn batching(&self) -> &'static str {
        match self.kind {
            Kind::Infer(_, mode) => mode.label(),
            _ => "-",
        }
    }

    fn p50_us(&self) -> f64 {
        self.p50.as_secs_f64() * 1e6
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p) as usize)
        .copied()
        .unwrap_or_default()
}

/// A row with its comparisons: throughput over the model's limit, p50 minus the limit's, and p50
/// minus the floor of its protocol at the same concurrency (inference rows only).
pub struct Measured {
    pub row: Row,
    pub ratio_to_limit: f64,
    pub p50_over_limit_us: f64,
    pub p50_over_floor_us: Option<f64>,
}

pub fn print_header() {
    println!(
        "{:<15} {:<26} {:<7} {:>4} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "model",
        "path",
        "batch",
        "c",
        "req/s",
        "p50 us",
        "p99 us",
        "x limit",
        "p50-limit",
        "p50-floor"
    );
}

/// Compares and prints one model's rows: `limit` first, then `cells` (floors among them).
pub fn measure_model(limit: Row, cells: Vec<Row>) -> Vec<Measured> {
    let floors: Vec<(Protocol, usize, f64)> = cells
        .iter()
        .filter_map(|r| match r.kind {
            Kind::Floor(p) => Some((p, r.concurrency, r.p50_us())),
            _ => None,
        })
        .collect();
    let (limit_thr, limit_p50) = (limit.throughput, limit.p50_us());
    std::iter::once(limit)
        .chain(cells)
        .map(|row| {
            let p50_over_floor_us = match row.kind {
                Kind::Infer(p, _) => floors
                    .iter()
                    .find(|(fp, c, _)| fp.floor() == p.floor() && *c == row.concurrency)
                    .map(|(_, _, floor)| row.p50_us() - floor),
                _ => None,
            };
            let m = Measured {
                ratio_to_limit: row.throughput / limit_thr,
                p50_over_limit_us: row.p50_us() - limit_p50,
                p50_over_floor_us,
                row,
            };
            print_row(&m);
            m
        })
        .collect()
}

fn print_row(m: &Measured) {
    let r = &m.row;
    println!(
        "{:<15} {:<26} {:<7} {:>4} {:>9.0} {:>9.1} {:>9.1} {:>8.2} {:>10.1} {:>10}",
        r.model,
        r.path(),
        r.batching(),
        r.concurrency,
        r.throughput,
        r.p50_us(),
        r.p99.as_secs_f64() * 1e6,
        m.ratio_to_limit,
        m.p50_over_limit_us,
        m.p50_over_floor_us
            .map_or_else(|| "-".to_string(), |us| format!("{us:.1}"))
    );
}

fn find<'a>(
    rows: &'a [Measured],
    model: &str,
    p: Protocol,
    mode: BatchMode,
    c: usize,
) -> Option<&'a Measured> {
    rows.iter().find(|m| {
        m.row.model == model && m.row.kind == Kind::Infer(p, mode) && m.row.concurrency == c
    })
}

/// Batching's throughput gain at c=32 (`mode` over off), if both were measured.
fn gain(rows: &[Measured], model: &str, p: Protocol, mode: BatchMode) -> Option<f64> {
    let off = find(rows, model, p, BatchMode::Off, 32)?;
    let on = find(rows, model, p, mode, 32)?;
    Some(on.row.throughput / off.row.throughput)
}

/// The ratios of issue 22 for every model and path: batching on (busy, always) over off at c=32;
/// throughput over in-process ONNX Runtime at c=8; p50 over the floor at c=1. Prints them and
/// returns them for the JSON document.
pub fn ratios(rows: &[Measured], models: &[&'static str]) -> Vec<Value> {
    let show = |x: Option<f64>, digits: usize| {
        x.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
    };
    println!("\nratios (same run):");
    println!(
        "{:<15} {:<12} {:>22} {:>32} {:>32}",
        "model",
        "path",
        "c=32 on/off busy|alw",
        "c=8 x in-process off|busy|alw",
        "c=1 p50-floor us off|busy|alw"
    );
    let mut out = Vec::new();
    for &model in models {
        for p in Protocol::ALL {
            let gains = [BatchMode::Busy, BatchMode::Always].map(|m| gain(rows, model, p, m));
            let c8 = BatchMode::ALL.map(|m| find(rows, model, p, m, 8).map(|r| r.ratio_to_limit));
            let c1 = BatchMode::ALL
                .map(|m| find(rows, model, p, m, 1).and_then(|r| r.p50_over_floor_us));
            println!(
                "{:<15} {:<12} {:>22} {:>32} {:>32}",
                model,
                p.label(),
                format!("{} | {}", show(gains[0], 2), show(gains[1], 2)),
                c8.map(|x| show(x, 2)).join(" | "),
                c1.map(|x| show(x, 1)).join(" | "),
            );
            let by_mode = |values: &[Option<f64>], modes: &[BatchMode]| -> Value {
                modes
                    .iter()
                    .zip(values)
                    .map(|(m, v)| (m.label().to_string(), json!(v)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            out.push(json!({
                "model": model, "path": p.label(),
                "batching_gain_c32": by_mode(&gains, &[BatchMode::Busy, BatchMode::Always]),
                "throughput_ratio_to_in_process_c8": by_mode(&c8, &BatchMode::ALL),
                "p50_over_floor_us_c1": by_mode(&c1, &BatchMode::ALL),
            }));
        }
    }
    out
}

/// Prints issue 22's goals against the rows measured (batching on = the default `busy`) and
/// returns them for the JSON document. The latency goals name `benchmark-echo`, which `make bench`
/// measures; here the tiny model stands in for it.
pub fn goals(rows: &[Measured]) -> Vec<Value> {
    let mut goals = Vec::new();
    let mut check = |goal: String, value: String, met: bool| {
        println!(
            "  [{}] {goal}: {value}",
            if met { "met   " } else { "MISSED" }
        );
        goals.push(json!({"goal": goal, "value": value, "met": met}));
    };
    println!("\ngoals (issue 22; batching on = busy):");
    for (p, budget) in [(Protocol::RestJson, 50.0), (Protocol::Grpc, 80.0)] {
        if let Some(over) =
            find(rows, "tiny", p, BatchMode::Busy, 1).and_then(|m| m.p50_over_floor_us)
        {
            check(
                format!(
                    "tiny, {}, c=1, batching on: p50 <= floor + {budget} us",
                    p.label()
                ),
                format!("floor + {over:.1} us"),
                over <= budget,
            );
        }
    }
    for p in Protocol::ALL {
        if let Some(g) = gain(rows, "bench-mlp", p, BatchMode::Busy) {
            check(
                format!("bench-mlp, {}, c=32: batching on >= 3x off", p.label()),
                format!("{g:.2}x"),
                g >= 3.0,
            );
        }
    }
    for p in Protocol::ALL {
        if let Some(m) = find(rows, "bench-mlp", p, BatchMode::Busy, 8) {
            check(
                format!(
                    "bench-mlp, {}, c=8, batching on: >= 1.0x in-process ORT",
                    p.label()
                ),
                format!("{:.2}x", m.ratio_to_limit),
                m.ratio_to_limit >= 1.0,
            );
        }
    }
    goals
}

/// The rows as JSON.
pub fn json_rows(rows: &[Measured]) -> Vec<Value> {
    rows.iter()
        .map(|m| {
            let r = &m.row;
            let mode = match r.kind {
                Kind::Infer(_, mode) => Some(mode),
                _ => None,
            };
            json!({
                "model": r.model, "path": r.path(),
                "kind": match r.kind {
                    Kind::InProcess { .. } => "in-process",
                    Kind::Floor(_) => "floor",
                    Kind::Infer(..) => "infer",
                },
                "dynamic_batching": mode.is_some_and(|m| m != BatchMode::Off),
                "batch_wait": mode.filter(|m| *m != BatchMode::Off).map(BatchMode::label),
                "concurrency": r.concurrency, "requests": r.requests,
                "throughput_per_s": r.throughput,
                "p50_us": r.p50_us(), "p99_us": r.p99.as_secs_f64() * 1e6,
                "throughput_ratio_to_limit": m.ratio_to_limit,
                "p50_overhead_us": m.p50_over_limit_us,
                "p50_over_floor_us": m.p50_over_floor_us,
            })
        })
        .collect()
}
