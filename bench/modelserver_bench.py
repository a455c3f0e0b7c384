"""The model-server section of `make bench`: dynamic batching's cost and gain, without Envoy.

After the gateway variants, bench/bench.py calls `run` (skip it with BENCH_SERVING=0). It starts
three modelservers on a repository holding only benchmark-echo, on free loopback ports:
  busy    `[runtime] batch_wait = "busy"` (the default: a request that finds the instance free runs
          at once; requests that arrive while it is busy are batched)
  always  `[runtime] batch_wait = "always"` (Triton: a batch waits max_queue_delay for company)
  off     the same model without its dynamic_batching block (each request runs alone)
and drives wrk straight at each (OIP REST JSON infer, as the gateway benchmark sends it), in
rounds: for each round, for each concurrency, the floor then busy, always, off, so drift hits all
alike. The floor is the empty round trip on the busy server: GET /v2/health/live, the same wrk and
connections, no inference. Medians over rounds go to a table, bench-results/modelserver-batching.json
and the "modelserver_batching" key of bench-results/gateway.json.

Settings (environment): BENCH_SERVING (1; 0 skips the section), BENCH_SERVING_CONCURRENCY
(1,8,32); rounds, duration and warm-up are the gateway's (BENCH_ROUNDS, BENCH_DURATION,
BENCH_WARMUP). docs/benchmarks.md says how to read the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
from pathlib import Path

MODEL = "benchmark-echo"
# Each server's batching, in the order every round runs them (the floor first).
SERVERS = {
    "busy": {"batch_wait": "busy", "dynamic_batching": True},
    "always": {"batch_wait": "always", "dynamic_batching": True},
    "off": {"batch_wait": None, "dynamic_batching": False},
}
FLOOR = "floor"
# What issue 22 asks of the default at c=1: p50 within this of the empty round trip.
GOAL_P50_OVER_FLOOR_US = 50


def enabled() -> bool:
    return os.environ.get("BENCH_SERVING", "1") != "0"


def concurrencies() -> list[int]:
    return [int(c) for c in os.environ.get("BENCH_SERVING_CONCURRENCY", "1,8,32").split(",") if c.strip()]


def repositories(models: Path, run: Path) -> dict[str, Path]:
    """benchmark-echo as shipped (for busy and always) and without dynamic_batching (for off)."""
    batched, plain = run / "repo-batched", run / "repo-off"
    shutil.copytree(models / MODEL, batched / MODEL)
    shutil.copytree(models / MODEL, plain / MODEL)
    config = plain / MODEL / "config.pbtxt"
    text, removed = re.subn(r"dynamic_batching\s*\{[^{}]*\}\s*", "", config.read_text())
    if removed != 1:
        raise ValueError(f"{config}: expected one flat dynamic_batching block to remove, found {removed}")
    config.write_text(text)
    return {"busy": batched, "always": batched, "off": plain}


def start(b, args, stack, ports, run: Path) -> dict[str, dict]:
    """Starts the three servers; returns each one's URL, process and reported model config."""
    repos = repositories(Path(args.models), run)
    servers = {}
    for name, spec in SERVERS.items():
        cfg = run / f"modelserver-{name}.toml"
        cfg.write_text(f'[runtime]\nbatch_wait = "{spec["batch_wait"] or "busy"}"\n')
        http_port = ports.take(f"modelserver {name} http")
        proc = stack.start(f"modelserver-{name}", [
            str(Path(args.bin_dir) / "modelserver"), "serve", "--model-repository", str(repos[name]),
            "--config", str(cfg), "--address", "127.0.0.1", "--http-port", str(http_port),
            "--grpc-port", str(ports.take(f"modelserver {name} grpc")),
            "--metrics-port", str(ports.take(f"modelserver {name} metrics")), "--authorization", "none"])
        servers[name] = {"url": f"http://127.0.0.1:{http_port}", "proc": proc}
    for name, server in servers.items():
        b.wait_until(f"modelserver {name}", b.http_ok(server["url"] + "/v2/health/ready"), stack.procs)
        verify(b, name, server)
    return servers


def verify(b, name: str, server: dict) -> None:
    """The server answers the benchmark request and batches (or not) as its name says."""
    status, body = b.http("POST", server["url"] + b.INFER_PATH, b.BODY, {"Content-Type": "application/json"})
    if status != 200 or b'"hello, gateway"' not in body:
        raise b.BenchError(f"modelserver {name}: benchmark request got HTTP {status}: {body[:300]!r}")
    status, body = b.http("GET", server["url"] + f"/v2/models/{MODEL}/config")
    config = json.loads(body) if status == 200 else {}
    spec = SERVERS[name]
    batching = "dynamic_batching" in config
    wait = config.get("parameters", {}).get("batch_wait", {}).get("string_value")
    if batching != spec["dynamic_batching"] or (batching and wait != spec["batch_wait"]):
        raise b.BenchError(f"modelserver {name}: {MODEL} reports dynamic_batching={batching}, batch_wait={wait!r}; "
                           f"expected {spec}: {body[:500]!r}")
    server["config"] = {"dynamic_batching": batching, "batch_wait": wait if batching else None}


def wrk_run(b, wrk: str, url: str, c: int, duration: float, request: str) -> dict:
    """One wrk run of `request` ("infer" or "live"); fails on any error or non-2xx answer."""
    os.environ["BENCH_REQUEST"] = request  # read by bench/infer.lua through run_wrk's environment
    try:
        res, _ = b.run_wrk(wrk, url, c, duration, "")
    finally:
        del os.environ["BENCH_REQUEST"]
    if any(res["errors"].values()):
        raise b.BenchError(f"{request} on {url} c={c}: wrk saw errors {res['errors']} of {res['requests']} requests")
    return res


def measure(b, args, wrk: str, servers: dict) -> list[dict]:
    """Interleaved rounds: per round, per concurrency, the floor then each server."""
    cs = concurrencies()
    targets = [(FLOOR, servers["busy"]["url"], "live")] + [(n, servers[n]["url"], "infer") for n in SERVERS]
    if args.warmup > 0:
        for name, url, request in targets:
            wrk_run(b, wrk, url, max(cs), args.warmup, request)
    runs = []
    for rnd in range(1, args.rounds + 1):
        for c in cs:
            for name, url, request in targets:
                for server in servers.values():
                    server["proc"].check_alive()
                res = wrk_run(b, wrk, url, c, args.duration, request)
                rps = res["requests"] / (res["duration_us"] / 1e6)
                runs.append({"server": name, "concurrency": c, "round": rnd, "requests": res["requests"],
                             "rps": rps, "latency_us": res["latency_us"]})
                b.log(f"modelserver round {rnd} c={c:<3} {name:<6}: {rps:8.0f} req/s  "
                      f"p50 {res['latency_us']['p50']} us  p99 {res['latency_us']['p99']} us")
    return runs


def summarize(runs: list[dict]) -> list[dict]:
    """Median over rounds per (server, concurrency); p50 over the floor's and throughput over off's."""
    rows = []
    for c in sorted({r["concurrency"] for r in runs}):
        by = {}
        for name in [FLOOR, *SERVERS]:
            rs = [r for r in runs if r["server"] == name and r["concurrency"] == c]
            if rs:
                by[name] = {"server": name, "concurrency": c, "rounds": len(rs),
                            "rps": statistics.median(r["rps"] for r in rs),
                            "p50_us": statistics.median(r["latency_us"]["p50"] for r in rs),
                            "p99_us": statistics.median(r["latency_us"]["p99"] for r in rs)}
        for name, row in by.items():
            if name != FLOOR:
                row["p50_over_floor_us"] = row["p50_us"] - by[FLOOR]["p50_us"] if FLOOR in by else None
                row["rps_over_off"] = row["rps"] / by["off"]["rps"] if "off" in by else None
            rows.append(row)
    return rows


def goals(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if row["server"] == "busy" and row["concurrency"] == 1 and row.get("p50_over_floor_us") is not None:
            over = row["p50_over_floor_us"]
            out.append({"goal": f"c=1, REST JSON, {MODEL}, batching on (busy): p50 <= floor + {GOAL_P50_OVER_FLOOR_US} us",
                        "value": f"floor + {over:.0f} us", "met": over <= GOAL_P50_OVER_FLOOR_US})
    return out


def table(rows: list[dict]) -> str:
    def f(x, spec):
        return "-" if x is None else format(x, spec)
    lines = [f"{'server':<8} {'c':>4} {'req/s':>9} {'p50 us':>8} {'p99 us':>8} {'p50-floor':>10} {'x off':>6}"]
    for r in rows:
        lines.append(f"{r['server']:<8} {r['concurrency']:>4} {r['rps']:>9.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
                     f"{f(r.get('p50_over_floor_us'), '>10.0f'):>10} {f(r.get('rps_over_off'), '>6.2f'):>6}")
    return "\n".join(lines)


def run(b, args, wrk: str, out_dir: Path, run_dir: Path) -> None:
    """The whole section: `b` is bench/bench.py's module (its processes, ports, wrk runner)."""
    run = run_dir / "modelserver-batching"
    (run / "logs").mkdir(parents=True)
    stack = b.Stack(run)
    started = time.time()
    try:
        servers = start(b, args, stack, b.PortPlan(None), run)
        runs = measure(b, args, wrk, servers)
    finally:
        stack.stop_all()
    rows = summarize(runs)
    goal_rows = goals(rows)
    result = {
        "benchmark": "modelserver batching",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "settings": {"model": MODEL, "request": {"method": "POST", "path": b.INFER_PATH, "body": b.BODY.decode()},
                     "floor": {"method": "GET", "path": "/v2/health/live", "server": "busy"},
                     "servers": {n: s["config"] for n, s in servers.items()}, "concurrency": concurrencies(),
                     "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                     "wrk_threads": 1, "aggregation": "median over rounds"},
        "summary": rows, "goals": goal_rows, "runs": runs,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "modelserver-batching.json").write_text(json.dumps(result, indent=2) + "\n")
    gateway = out_dir / "gateway.json"
    if gateway.exists():
        doc = json.loads(gateway.read_text())
        doc["modelserver_batching"] = result
        gateway.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nModel server, {MODEL} over REST JSON without Envoy: dynamic batching busy / always / off, "
          f"floor = GET /v2/health/live (median of {args.rounds} rounds x {args.duration:g}s)\n")
    print(table(rows))
    for g in goal_rows:
        print(f"  [{'met   ' if g['met'] else 'MISSED'}] {g['goal']}: {g['value']}")
    print(f"\nJSON: {out_dir / 'modelserver-batching.json'} (and gateway.json, key modelserver_batching)")
