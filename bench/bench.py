#!/usr/bin/env python3
"""What the gateway costs: variants A-D (and N) side by side, interleaved, through real Envoy.

`make bench` (scripts/bench.sh) runs this after the bootstrap and a release build. It starts, on
free loopback ports, one modelserver on the model repository, one redis-server, one authz per
authz variant and one Envoy per variant, checks that each variant answers and enforces what it
claims (200 for the load-tester on benchmark-echo; 401 without a token and 403 on a model the
load-tester may not use, except on A and N), then drives `wrk` against benchmark-echo (OIP REST JSON
infer, the `load-tester` token) in rounds: for each round, for each concurrency, A B C D N in turn, so
drift on this shared machine hits every variant alike.

Variants (docs/benchmarks.md explains them and how to read the numbers):
  A  Envoy -> modelserver, no authorization (the floor)
  B  Envoy + ext_authz -> authz: JWT, Cedar, in-process rate limit, audit with durability = fsync
  C  as B, rate-limit counters in Redis
  D  Envoy's own jwt_authn + rbac + local_ratelimit for the demo policy (bench/envoy_variants.py)
  N  Envoy + ext_authz to an allow-all gRPC server (authz/examples/ext_authz_floor.rs): the floor
     of any ext_authz service, not one of the issue's four
  M  the embedded mode: authz inside Envoy as a dynamic module (libauthz_module.so, docs/embedded.md),
     the same config as B (in-process rate limit, fsync audit), no ext_authz call
  R  as M, rate-limit counters in Redis (as C)

Per run it also reads the CPU time (utime + stime from /proc) that each process spent, so the
results say which component a request's CPU goes to: a quick profile for free.

Outputs: a table on stdout, bench-results/gateway.json, bench-results/gateway.png; the run's
configs, logs and audit files under bench-results/run/ (deleted at the start of the next run).

Then, unless BENCH_SERVING=0, the model-server section (bench/modelserver_bench.py): benchmark-echo
straight to three modelservers with dynamic batching busy / always / off, beside the empty round
trip (GET /v2/health/live), at BENCH_SERVING_CONCURRENCY (1,8,32); its table follows the gateway's
and goes to bench-results/modelserver-batching.json and gateway.json's "modelserver_batching".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import envoy_variants  # noqa: E402  (needs the path above)
import modelserver_bench  # noqa: E402  (needs the path above)

VARIANTS = {
    "A": {"kind": "floor", "authz": None, "label": "A: Envoy -> modelserver (no authz)"},
    "B": {"kind": "ext-authz", "authz": "memory", "label": "B: ext_authz authz (memory limiter, fsync audit)"},
    "C": {"kind": "ext-authz", "authz": "redis", "label": "C: ext_authz authz (Redis limiter, fsync audit)"},
    "D": {"kind": "jwt-rbac", "authz": None, "label": "D: Envoy jwt_authn + rbac + local_ratelimit"},
    # Not one of the issue's four: the same ext_authz filter as B against a gRPC server that allows
    # everything at once (authz/examples/ext_authz_floor.rs). What any ext_authz service costs
    # before it decides anything; B - N is what authz's decision, rate limit and audit add.
    "N": {"kind": "ext-authz", "authz": "floor", "label": "N: ext_authz to an allow-all gRPC server (ext_authz floor)"},
    # The embedded mode (issue 18): B's and C's pipeline and config inside Envoy, no ext_authz call.
    "M": {"kind": "embedded", "authz": "memory", "label": "M: authz module in Envoy (memory limiter, fsync audit)"},
    "R": {"kind": "embedded", "authz": "redis", "label": "R: authz module in Envoy (Redis limiter, fsync audit)"},
}
# The order variants run in, within each round and concurrency.
ORDER = "ABCDNMR"
MODEL = "benchmark-echo"
INFER_PATH = f"/v2/models/{MODEL}/infer"
BODY = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["hello, gateway"]}]}'
# A model the load-tester role may not use in the demo policy: variants with authorization must 403.
FORBIDDEN_MODEL = "threat-triage"
READY_TIMEOUT_S = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """The benchmark cannot produce honest numbers (a component failed, a variant misbehaved)."""


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Children get SIGTERM if this driver dies, even by SIGKILL: no server outlives a benchmark.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads) so far."""
        try:
            stat = Path(f"/proc/{self.popen.pid}/stat").read_text()
        except OSError:
            return float("nan")
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.popen.returncode}; "
                             f"last log lines ({self.log_path}):\n{tail(self.log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Stack:
    run_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, stdout_to_null: bool = False, env: dict | None = None) -> Proc:
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_file = open(log_path, "wb")
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if stdout_to_null else log_file, stderr=log_file,
            preexec_fn=_die_with_parent, env={**os.environ, **(env or {})}, cwd=ROOT)
        log_file.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class PortPlan:
    """Free loopback ports, or consecutive ones from BENCH_PORT_BASE (each checked free)."""

    def __init__(self, base: int | None):
        self.next = base
        self.taken: set[int] = set()

    def take(self, what: str) -> int:
        if self.next is None:
            while True:
                port = free_port()
                if port not in self.taken:
                    break
        else:
            port = self.next
            self.next += 1
            if not port_is_free(port):
                raise BenchError(f"port {port} ({what}) is in use: choose another BENCH_PORT_BASE or leave it unset")
        self.taken.add(port)
        return port


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(what: str, check, procs: list[Proc], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        try:
            ok, last = check()
            if ok:
                return
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.2)
    raise BenchError(f"{what} not ready after {timeout:.0f}s (last: {last})")


def tcp_ok(port: int):
    def check():
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True, ""
        except OSError as e:
            return False, str(e)
    return check


def http_ok(url: str):
    def check():
        status, body = http("GET", url, timeout=2)
        return status == 200, f"HTTP {status} {body[:200]!r}"
    return check


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def edit_toml(text: str, sets: list[tuple[str, str, str | None]]) -> str:
    """Line-oriented edit of the TOML `authz dev-init` writes: set (or, with None, remove) `key`
    in `[table]`, adding the table at the end when it is missing."""
    lines = text.splitlines()
    for table, key, value in sets:
        header = f"[{table}]"
        start = next((n for n, line in enumerate(lines) if line.strip() == header), None)
        if start is None:
            if value is not None:
                lines += ["", header, f"{key} = {value}"]
            continue
        end = next((n for n in range(start + 1, len(lines)) if lines[n].lstrip().startswith("[")), len(lines))
        idx = next((n for n in range(start + 1, end) if lines[n].split("=", 1)[0].strip() == key), None)
        if idx is not None and value is None:
            del lines[idx]
        elif idx is not None:
            lines[idx] = f"{key} = {value}"
        elif value is not None:
            lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def authz_config(dev_toml: str, grpc_port: int, admin_port: int, audit_dir: Path, redis_url: str | None) -> str:
    """The demo config with this run's ports, an fsync audit log and the variant's limiter store.
    Only these keys change; models, limits and policies are the demo's."""
    return edit_toml(dev_toml, [
        ("server", "grpc_addr", f'"127.0.0.1:{grpc_port}"'),
        ("server", "admin_addr", f'"127.0.0.1:{admin_port}"'),
        # Every decision is on disk (fdatasync, group commit) before Envoy gets it: never weakened.
        ("audit", "path", json.dumps(str(audit_dir) + "/")),
        ("audit", "durability", '"fsync"'),
        ("audit", "stdout", "false"),
        # Without redis_url authz uses its in-process store (variant B).
        ("rate_limit", "redis_url", json.dumps(redis_url) if redis_url else None),
    ])


# ---------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    variant: str
    concurrency: int
    round: int
    requests: int
    duration_s: float
    rps: float
    latency_ms: dict
    errors: dict
    cpu_s: dict

    def as_json(self) -> dict:
        return self.__dict__


def run_wrk(wrk: str, url: str, concurrency: int, duration_s: float, token: str) -> tuple[dict, float]:
    """One wrk run; returns its BENCH_RESULT and wrk's own CPU seconds."""
    with tempfile.TemporaryFile() as out:
        popen = subprocess.Popen(
            [wrk, "-t1", f"-c{concurrency}", f"-d{int(duration_s)}s", "--timeout", "10s",
             "-s", str(ROOT / "bench" / "infer.lua"), url],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "BENCH_TOKEN": token, "BENCH_MODEL": MODEL}, preexec_fn=_die_with_parent)
        _, status, usage = os.wait4(popen.pid, 0)
        popen.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    match = re.search(r"^BENCH_RESULT (\{.*\})$", text, re.M)
    if popen.returncode != 0 or not match:
        raise BenchError(f"wrk failed (exit {popen.returncode}):\n{text}")
    return json.loads(match.group(1)), usage.ru_utime + usage.ru_stime


def system_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far (every core, every process)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in parts]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def fdatasync_p50_ms(directory: Path, samples: int = 200) -> float:
    """The p50 of one small append + fdatasync in `directory` (the audit logs' file system): the
    physical floor under a check whose record must be on disk before the answer (fsync mode)."""
    path = directory / "fdatasync-probe"
    record = b'{"probe":"' + b"x" * 200 + b'"}\n'  # about one audit record
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(samples):
            t = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return 1000 * statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def summarize(runs: list[RunResult], variants: list[str], concurrencies: list[int]) -> list[dict]:
    """Median over rounds per (variant, concurrency), with ratios against A and D."""
    rows = []
    for c in concurrencies:
        by_v = {}
        for v in variants:
            rs = [r for r in runs if r.variant == v and r.concurrency == c]
            if not rs:
                continue
            reqs = sum(r.requests for r in rs)
            cpu = {k: sum(r.cpu_s.get(k, 0.0) for r in rs) for k in rs[0].cpu_s}
            by_v[v] = {
                "variant": v,
                "concurrency": c,
                "rounds": len(rs),
                "rps": statistics.median(r.rps for r in rs),
                "rps_min": min(r.rps for r in rs),
                "rps_max": max(r.rps for r in rs),
                "p50_ms": statistics.median(r.latency_ms["p50"] for r in rs),
                "p90_ms": statistics.median(r.latency_ms["p90"] for r in rs),
                "p99_ms": statistics.median(r.latency_ms["p99"] for r in rs),
                "p50_ms_rounds": [r.latency_ms["p50"] for r in rs],
                "p99_ms_rounds": [r.latency_ms["p99"] for r in rs],
                # CPU time per request by component, summed over the rounds (microseconds).
                "cpu_us_per_request": {k: round(1e6 * s / reqs, 1) for k, s in cpu.items()} if reqs else {},
            }
        for v, row in by_v.items():
            a, d = by_v.get("A"), by_v.get("D")
            row["p50_overhead_vs_a_ms"] = row["p50_ms"] - a["p50_ms"] if a else None
            row["p99_overhead_vs_a_ms"] = row["p99_ms"] - a["p99_ms"] if a else None
            row["rps_vs_a"] = row["rps"] / a["rps"] if a else None
            row["rps_vs_d"] = row["rps"] / d["rps"] if d else None
            row["p50_vs_d"] = row["p50_ms"] / d["p50_ms"] if d else None
            rows.append(row)
    return rows


def goals(rows: list[dict], fdatasync_ms: float | None = None) -> list[dict]:
    """The goals of issues 10, 17 and 18, each with its measured value and whether it is met."""
    def row(v, c):
        return next((r for r in rows if r["variant"] == v and r["concurrency"] == c), None)

    out = []

    def throughput_ratio(v, base, least):
        """`v / base throughput >= least at c=16 and c=64`, when both ran."""
        pairs = [(c, row(v, c), row(base, c)) for c in (16, 64)]
        pairs = [(c, x, y) for c, x, y in pairs if x and y]
        if pairs:
            out.append({"goal": f"{v} / {base} throughput >= {least:.2f} at c=16 and c=64",
                        "value": ", ".join(f"c={c}: {x['rps'] / y['rps']:.2f}" for c, x, y in pairs),
                        "met": min(x["rps"] / y["rps"] for _, x, y in pairs) >= least})

    throughput_ratio("B", "N", 0.90)
    b1, n1 = row("B", 1), row("N", 1)
    if b1 and n1 and fdatasync_ms is not None:
        over = b1["p50_ms"] - n1["p50_ms"]
        out.append({"goal": "B - N p50 at c=1 <= fdatasync p50 + 0.1 ms",
                    "value": f"{over:.3f} ms (fdatasync p50 {fdatasync_ms:.3f} ms)", "met": over <= fdatasync_ms + 0.1})
    b64, n64, a64 = row("B", 64), row("N", 64), row("A", 64)
    if b64 and n64 and b64["cpu_us_per_request"].get("authz") and n64["cpu_us_per_request"].get("authz"):
        ratio = b64["cpu_us_per_request"]["authz"] / n64["cpu_us_per_request"]["authz"]
        out.append({"goal": "authz CPU per check at c=64 <= 1.5x the allow-all server's",
                    "value": f"{ratio:.2f}x ({b64['cpu_us_per_request']['authz']:.0f} vs "
                             f"{n64['cpu_us_per_request']['authz']:.0f} us)", "met": ratio <= 1.5})
    if n64 and a64:
        out.append({"goal": "N / A throughput at c=64 >= 0.65",
                    "value": f"{n64['rps'] / a64['rps']:.2f}", "met": n64["rps"] / a64["rps"] >= 0.65})
    # Issue 18: the embedded mode.
    throughput_ratio("M", "D", 0.85)
    m1 = row("M", 1)
    if m1 and m1["p50_overhead_vs_a_ms"] is not None and fdatasync_ms is not None:
        over = m1["p50_overhead_vs_a_ms"]
        out.append({"goal": "M p50 over A at c=1 <= fdatasync p50 + 0.1 ms",
                    "value": f"{over:.3f} ms (fdatasync p50 {fdatasync_ms:.3f} ms)", "met": over <= fdatasync_ms + 0.1})
    b1 = row("B", 1)
    if b1 and b1["p50_overhead_vs_a_ms"] is not None:
        out.append({"goal": "B p50 overhead over A at c=1 < 0.5 ms",
                    "value": f"{b1['p50_overhead_vs_a_ms']:.3f} ms", "met": b1["p50_overhead_vs_a_ms"] < 0.5})
    b64 = row("B", 64)
    if b64 and b64["rps_vs_a"] is not None:
        out.append({"goal": "B throughput at c=64 >= 70% of A",
                    "value": f"{100 * b64['rps_vs_a']:.1f}%", "met": b64["rps_vs_a"] >= 0.70})
    bd = [r for r in rows if r["variant"] == "B" and r["rps_vs_d"] is not None]
    if bd:
        worst = min(bd, key=lambda r: r["rps_vs_d"])
        out.append({"goal": "B throughput within 15% of D (every concurrency)",
                    "value": ", ".join(f"c={r['concurrency']}: {100 * r['rps_vs_d']:.1f}%" for r in bd),
                    "met": worst["rps_vs_d"] >= 0.85})
    cb = []
    for r in rows:
        if r["variant"] == "C" and row("B", r["concurrency"]):
            cb.append((r["concurrency"], r["rps"] / row("B", r["concurrency"])["rps"]))
    if cb:
        out.append({"goal": "C throughput >= 85% of B (every concurrency)",
                    "value": ", ".join(f"c={c}: {100 * x:.1f}%" for c, x in cb),
                    "met": min(x for _, x in cb) >= 0.85})
    return out


def paired(runs: list[RunResult], variants: list[str], concurrencies: list[int]) -> list[dict]:
    """Each extra variant against its base, paired by round: the median over rounds of the
    per-round throughput ratio (extra / base). Interleaving puts an extra's run right after its
    base's, so the pair shares the machine's drift; the median of the ratios is steadier than the
    ratio of the medians on a noisy machine."""
    out = []
    for v in variants:
        base = VARIANTS[v].get("base")
        if not base or base not in variants:
            continue
        for c in concurrencies:
            by_round = {r.round: r.rps for r in runs if r.variant == base and r.concurrency == c}
            ratios = [r.rps / by_round[r.round] for r in runs
                      if r.variant == v and r.concurrency == c and by_round.get(r.round)]
            if ratios:
                out.append({"variant": v, "base": base, "concurrency": c, "rounds": len(ratios),
                            "median_ratio": round(statistics.median(ratios), 4),
                            "min_ratio": round(min(ratios), 4), "max_ratio": round(max(ratios), 4)})
    return out


def fmt(x, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if x is None else f"{x * scale:{spec}}{suffix}"


def table(rows: list[dict]) -> str:
    head = ("| variant | c | req/s | p50 ms | p99 ms | p50 over A ms | p99 over A ms | req/s vs A | req/s vs D | p50 vs D |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{fmt(r['p50_overhead_vs_a_ms'], '+.3f')} | {fmt(r['p99_overhead_vs_a_ms'], '+.3f')} | "
            f"{fmt(r['rps_vs_a'], '.1f', 100, '%')} | {fmt(r['rps_vs_d'], '.1f', 100, '%')} | "
            f"{fmt(r['p50_vs_d'], '.2f', 1, 'x')} |")
    return "\n".join(lines)


def cpu_table(rows: list[dict]) -> str:
    comps = sorted({k for r in rows for k in r["cpu_us_per_request"]})
    lines = ["| variant | c | " + " | ".join(comps) + " |", "|---|---:|" + "---:|" * len(comps)]
    for r in rows:
        cells = [f"{r['cpu_us_per_request'].get(k, 0.0):.0f}" for k in comps]
        lines.append(f"| {r['variant']} | {r['concurrency']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(rows: list[dict], variants: list[str], concurrencies: list[int], path: Path, title: str) -> None:
    """Top row: throughput per concurrency; bottom row: p50 (solid) and p99 (light) latency.
    Each panel has its own scale, so c=1 stays as readable as c=64."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"A": "#7f7f7f", "B": "#1f77b4", "C": "#2ca02c", "D": "#ff7f0e"}
    for v, color in zip([v for v in variants if v not in colors], ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"] * 5):
        colors[v] = color
    fig, axes = plt.subplots(2, len(concurrencies), figsize=(4.6 * len(concurrencies), 8), squeeze=False)
    for j, c in enumerate(concurrencies):
        got = [(v, next((r for r in rows if r["variant"] == v and r["concurrency"] == c), None)) for v in variants]
        got = [(v, r) for v, r in got if r]
        xs = list(range(len(got)))
        ax = axes[0][j]
        bars = ax.bar(xs, [r["rps"] for _, r in got], 0.7, color=[colors[v] for v, _ in got])
        ax.bar_label(bars, labels=[f"{r['rps']:.0f}" + ("" if v == "A" or r["rps_vs_a"] is None else f"\n{100 * r['rps_vs_a']:.0f}% of A")
                                   for v, r in got], fontsize=8, padding=2)
        ax.set_title(f"throughput, c={c} (requests/s, higher is better)", fontsize=9)
        ax.set_xticks(xs, [v for v, _ in got])
        ax.margins(y=0.22)
        ax.grid(axis="y", alpha=0.3)
        ax = axes[1][j]
        w = 0.38
        b50 = ax.bar([x - w / 2 for x in xs], [r["p50_ms"] for _, r in got], w, color=[colors[v] for v, _ in got])
        b99 = ax.bar([x + w / 2 for x in xs], [r["p99_ms"] for _, r in got], w, color=[colors[v] for v, _ in got],
                     alpha=0.4, hatch="//")
        ax.bar_label(b50, fmt="%.2f", fontsize=7, padding=2)
        ax.bar_label(b99, fmt="%.2f", fontsize=7, padding=2)
        ax.set_title(f"latency, c={c} (ms; solid p50, hatched p99; lower is better)", fontsize=9)
        ax.set_xticks(xs, [v for v, _ in got])
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    handles = [matplotlib.patches.Patch(color=colors[v], label=VARIANTS[v]["label"]) for v in variants]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> dict:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": round(mem_kb / 1048576, 1),
            "kernel": platform.release(), "loadavg_at_start": os.getloadavg()}


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=env("BENCH_VARIANTS", "A,B,C,D,N,M,R"), help="comma list of A,B,C,D,N,M,R")
    p.add_argument("--concurrency", default=env("BENCH_CONCURRENCY", "1,16,64"), help="comma list")
    p.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "3")))
    p.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "5")), help="whole seconds per run")
    p.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", "2")),
                   help="seconds of unrecorded load per variant before the first round")
    p.add_argument("--models", default=env("BENCH_MODEL_REPOSITORY", str(ROOT / "models")))
    p.add_argument("--authz-template", default=env("BENCH_AUTHZ_TEMPLATE", str(ROOT / "config" / "authz.toml")),
                   help="the demo authz config `authz dev-init` renders")
    p.add_argument("--bin-dir", default=env("BENCH_BIN_DIR", str(Path(env("CARGO_TARGET_DIR", str(ROOT / "target"))) / "release")))
    p.add_argument("--out", default=env("BENCH_OUT", str(ROOT / "bench-results")))
    p.add_argument("--port-base", type=int, default=int(env("BENCH_PORT_BASE")) if env("BENCH_PORT_BASE") else None)
    p.add_argument("--extra", default=env("BENCH_EXTRA", ""),
                   help="extra variants for side-by-side experiments, ';'-separated NAME=BASE[,KEY=VALUE...]: "
                        "NAME a letter E-Z, BASE B, C or N, KEY=VALUE an environment variable for its authz, "
                        "SECTION.KEY=TOML a change to its config (SECTION may be nested: audit.checkpoint.every=\"1s\"; "
                        "{dev} and {run} in TOML name the run's dev-init and run directories), checkpoints=true "
                        "signed audit checkpoints (the dev key, every 1000 records or 1 s, a witness file in the run "
                        "directory), envoy.SETTING=JSON a change to how Envoy "
                        "calls authz (envoy/render.py EXT_AUTHZ_CALL), or bin=PATH another authz binary (e.g. "
                        "E=B,bin=/tmp/old/authz;F=B,TOKIO_WORKER_THREADS=1;G=B,audit.durability=\"write\";"
                        "H=N,envoy.allowed_headers_only=false); they run after the chosen variants in every round")
    args = p.parse_args(argv)
    extras = []
    for item in filter(None, (x.strip() for x in args.extra.split(";"))):
        name, _, rest = item.partition("=")
        name = name.strip().upper()
        base, *settings = [x.strip() for x in rest.split(",")]
        if len(name) != 1 or not "E" <= name <= "Z" or name in VARIANTS:
            p.error(f"--extra {item!r}: the name must be a single unused letter E-Z")
        if base not in ("B", "C", "N"):
            p.error(f"--extra {item!r}: the base must be B, C or N (variants with an ext_authz server)")
        env_vars, edits, binary, envoy_call, uds = {}, [], None, {}, False
        for kv in settings:
            key, eq, value = kv.partition("=")
            if not eq or not key:
                p.error(f"--extra {item!r}: {kv!r} is not KEY=VALUE")
            if key == "bin":
                binary = value
            elif key == "uds":
                if value not in ("true", "false"):
                    p.error(f"--extra {item!r}: uds takes true or false")
                uds = value == "true"
            elif key == "checkpoints" and base != "N":
                if value not in ("true", "false"):
                    p.error(f"--extra {item!r}: checkpoints takes true or false")
                if value == "true":
                    edits += [("audit.checkpoint", "signing_key", '"{dev}/audit-checkpoint-key.pem"'),
                              ("audit.checkpoint", "every_records", "1000"),
                              ("audit.checkpoint", "every", '"1s"'),
                              ("audit.checkpoint", "witness_file", f'"{{run}}/witness-{name}/checkpoints.jsonl"')]
            elif key.startswith("envoy."):
                setting = key.removeprefix("envoy.")
                if setting not in envoy_variants.render.EXT_AUTHZ_CALL:
                    p.error(f"--extra {item!r}: {setting!r} is not one of "
                            f"{', '.join(envoy_variants.render.EXT_AUTHZ_CALL)}")
                try:
                    envoy_call[setting] = json.loads(value)
                except json.JSONDecodeError:
                    p.error(f"--extra {item!r}: {value!r} is not JSON")
            elif base == "N":
                p.error(f"--extra {item!r}: an N-based variant takes envoy.SETTING=JSON and uds only")
            elif "." in key:
                section, _, field = key.rpartition(".")
                edits.append((section, field, value))
            else:
                env_vars[key] = value
        VARIANTS[name] = {**VARIANTS[base], "base": base, "env": env_vars, "edits": edits, "bin": binary, "envoy_call": envoy_call,
                          "uds": uds,
                          "label": f"{name}: as {base}" + (", over a Unix socket" if uds else "")
                                   + "".join(f", {k}={v}" for k, v in env_vars.items())
                                   + "".join(f", {sec}.{k}={v}" for sec, k, v in edits)
                                   + "".join(f", envoy.{k}={json.dumps(v)}" for k, v in envoy_call.items())
                                   + (f", authz {binary}" if binary else "")}
        extras.append(name)
    args.variants = [v.strip().upper() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--variants: unknown {unknown}; choose from {','.join(VARIANTS)}")
    args.variants = [v for v in ORDER if v in args.variants] + extras  # always A B C D N M R order, then extras
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if any(c < 1 for c in args.concurrency) or args.rounds < 1 or args.duration <= 0:
        p.error("concurrency, rounds and duration must be positive")
    return args


def start_stack(args, stack: Stack, ports: PortPlan) -> dict:
    """Starts every component the chosen variants need; returns the per-variant endpoints."""
    bin_dir = Path(args.bin_dir)
    models = Path(args.models)
    if not (models / MODEL).is_dir():
        raise BenchError(f"{models}/{MODEL} is missing: the model repository needs the demo models "
                         "(models/, or set BENCH_MODEL_REPOSITORY)")
    need_authz = any(VARIANTS[v]["authz"] in ("memory", "redis") for v in args.variants)
    need_token = any(v != "A" for v in args.variants)
    run = stack.run_dir

    # The dev issuer (key, JWKS, demo config with absolute paths), fresh for this run.
    authz_bin = bin_dir / "authz"
    dev = run / "dev"
    token = ""
    if need_token or need_authz:
        if not os.access(authz_bin, os.X_OK):
            raise BenchError(f"{authz_bin} is missing: build it with `cargo build --release -p authz`")
        subprocess.run([str(authz_bin), "dev-init", "--out", str(dev), "--template", args.authz_template],
                       check=True, cwd=ROOT, capture_output=True)
        token = subprocess.run([str(authz_bin), "token", "--sub", "load-tester", "--roles", "load-tester",
                                "--ttl", "2h", "--key", str(dev / "issuer-key.pem")],
                               check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    ms_http, ms_grpc, ms_metrics = ports.take("modelserver http"), ports.take("modelserver grpc"), ports.take("modelserver metrics")
    modelserver = stack.start("modelserver", [
        str(bin_dir / "modelserver"), "serve", "--model-repository", str(models), "--address", "127.0.0.1",
        "--http-port", str(ms_http), "--grpc-port", str(ms_grpc), "--metrics-port", str(ms_metrics),
        # One model server serves every variant, and A and D have no authz in front: the gateway
        # check (a few string comparisons per call) is off so that all of them reach it.
        "--authorization", "none"])
    components = {"modelserver": modelserver}

    redis = None
    if any(VARIANTS[v]["authz"] == "redis" for v in args.variants):
        redis_port = ports.take("redis")
        (run / "redis").mkdir()
        redis = stack.start("redis", [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--protected-mode", "no", "--dir", str(run / "redis")])
        components["redis"] = redis

    endpoints = {}
    for v in args.variants:
        spec = VARIANTS[v]
        authz = None
        authz_grpc = authz_admin = None
        # With `uds`, Envoy calls the ext_authz server on a Unix socket in the run directory.
        sock = run / f"ext_authz-{v}.sock" if spec.get("uds") else None
        if spec["authz"] == "floor":
            authz_grpc = ports.take(f"ext_authz floor {v}")
            floor_bin = bin_dir / "examples" / "ext_authz_floor"
            if not os.access(floor_bin, os.X_OK):
                raise BenchError(f"{floor_bin} is missing: build it with "
                                 "`cargo build --release -p authz --example ext_authz_floor` (or `make bench`)")
            # Its CPU time is reported in the authz column.
            authz = stack.start(f"ext_authz_floor-{v}", [str(floor_bin), f"unix:{sock}" if sock else f"127.0.0.1:{authz_grpc}"])
            ready = (lambda sock=sock: (sock.is_socket(), "no socket yet")) if sock else tcp_ok(authz_grpc)
            endpoints.setdefault("_wait", []).append((f"ext_authz floor {v}", ready, authz))
        elif spec["authz"]:
            authz_grpc, authz_admin = ports.take(f"authz {v} grpc"), ports.take(f"authz {v} admin")
            audit_dir = run / f"audit-{v}"
            audit_dir.mkdir()
            redis_url = f"redis://127.0.0.1:{redis_port}" if spec["authz"] == "redis" else None
            cfg = run / f"authz-{v}.toml"
            edits = [(section, key, value.replace("{dev}", str(dev)).replace("{run}", str(run)))
                     for section, key, value in spec.get("edits", [])]
            edits += [("server", "grpc_unix_socket", json.dumps(str(sock)))] if sock else []
            for section, key, value in edits:
                if section == "audit.checkpoint" and key == "witness_file":
                    Path(json.loads(value)).parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(edit_toml(authz_config((dev / "authz.toml").read_text(), authz_grpc, authz_admin, audit_dir,
                                                  redis_url), edits))
            check = subprocess.run([str(authz_bin), "check-config", "--config", str(cfg)], cwd=ROOT,
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise BenchError(f"authz rejects the variant {v} config {cfg} (variants B and C need authz with "
                                 f"[rate_limit] and [audit]; BENCH_VARIANTS=A,D runs without authz):\n"
                                 f"{check.stdout}{check.stderr}")
            if spec["kind"] != "embedded":
                authz = stack.start(f"authz-{v}", [spec.get("bin") or str(authz_bin), "serve", "--config", str(cfg)],
                                    env=spec.get("env"))
                endpoints.setdefault("_wait", []).append((f"authz {v}", http_ok(f"http://127.0.0.1:{authz_admin}/readyz"),
                                                          authz))
        listen, admin = ports.take(f"envoy {v}"), ports.take(f"envoy {v} admin")
        values = envoy_variants.local_values(
            listen_port=listen, admin_port=admin,
            # A has no authz cluster, nor has D (its address is a placeholder).
            authz_addr=f"unix:{sock}" if sock else f"127.0.0.1:{authz_grpc or 9}",
            modelserver_http=f"127.0.0.1:{ms_http}", modelserver_grpc=f"127.0.0.1:{ms_grpc}")
        if spec.get("envoy_call"):
            values["ext_authz"] = spec["envoy_call"]
        envoy_yaml = run / f"envoy-{v}.yaml"
        envoy_env = None
        if spec["kind"] == "embedded":
            envoy_yaml.write_text(embedded_envoy(values, run / f"authz-{v}.toml"))
            envoy_env = {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(module_dir(bin_dir, run))}
        else:
            envoy_yaml.write_text(envoy_variants.render_variant(spec["kind"], values, str(dev / "jwks.json")))
        # The JSON access log (one line per request, as in production) goes to /dev/null: every
        # variant formats it alike, none pays for a growing file. Envoy's own log is kept.
        envoy = stack.start(f"envoy-{v}", [shutil.which("envoy") or "envoy", "-c", str(envoy_yaml),
                                           "--use-dynamic-base-id", "--log-level", "warn"],
                            stdout_to_null=True, env=envoy_env)
        if spec["kind"] == "embedded":
            # The module serves authz's /readyz on the config's admin port, inside Envoy.
            endpoints.setdefault("_wait", []).append((f"authz module {v}",
                                                      http_ok(f"http://127.0.0.1:{authz_admin}/readyz"), envoy))
        endpoints[v] = {"url": f"http://127.0.0.1:{listen}", "envoy": envoy, "authz": authz,
                        "audit_dir": run / f"audit-{v}" if authz_admin else None,
                        "stats": {f"envoy-{v}": f"http://127.0.0.1:{admin}/stats",
                                  **({f"authz-{v}": f"http://127.0.0.1:{authz_admin}/metrics"} if authz_admin else {})}}

    wait_until("modelserver", http_ok(f"http://127.0.0.1:{ms_http}/v2/health/ready"), stack.procs)
    if redis:
        wait_until("redis-server", lambda: (socket.create_connection(("127.0.0.1", redis_port), 1).close() is None, ""),
                   stack.procs)
    for what, check, _ in endpoints.pop("_wait", []):
        wait_until(what, check, stack.procs)
    components["stats"] = {"modelserver": f"http://127.0.0.1:{ms_metrics}/metrics"}
    endpoints["_components"] = components
    endpoints["_token"] = token
    return endpoints


def module_dir(bin_dir: Path, run: Path) -> Path:
    """A folder holding only libauthz_module.so (what ENVOY_DYNAMIC_MODULES_SEARCH_PATH names)."""
    module = bin_dir / "libauthz_module.so"
    if not module.is_file():
        raise BenchError(f"{module} is missing: build it with `cargo build --release -p envoy-module` (or `make bench`)")
    folder = run / "modules"
    if not folder.is_dir():
        folder.mkdir()
        shutil.copy(module, folder / module.name)
    return folder


def embedded_envoy(values: dict, authz_config: Path) -> str:
    """The variant's Envoy config with ext_authz swapped for the module (envoy-module/render_embedded.py)."""
    sys.path.insert(0, str(ROOT / "envoy-module"))
    import render_embedded  # noqa: PLC0415  (only the embedded variants need it)
    config = render_embedded.embed(envoy_variants.render.build_config(values), str(authz_config))
    header = ["# GENERATED by bench/bench.py: benchmark variant 'embedded' (render_embedded.py)."]
    return "\n".join(header + envoy_variants.render.emit(config)) + "\n"


def verify_variant(v: str, url: str, token: str, procs: list[Proc]) -> None:
    """The variant answers the benchmark request, and (except A) enforces authorization."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def echo_ok():
        status, body = http("POST", url + INFER_PATH, BODY, auth)
        ok = status == 200 and b'"hello, gateway"' in body and b'"ECHO"' in body
        return ok, f"HTTP {status} {body[:300]!r}"
    # Envoy's active health checks must see the backends first (interval 1s).
    wait_until(f"variant {v} (benchmark request through Envoy)", echo_ok, procs)
    # Only authz (B, C and their extras) and Envoy's own filters (D) enforce the demo policy.
    if VARIANTS[v]["authz"] not in ("memory", "redis") and VARIANTS[v]["kind"] != "jwt-rbac":
        return
    status, body = http("POST", url + INFER_PATH, BODY, {"Content-Type": "application/json"})
    if status != 401:
        raise BenchError(f"variant {v}: a request without a token got HTTP {status}, expected 401: {body[:300]!r}")
    status, body = http("POST", url + f"/v2/models/{FORBIDDEN_MODEL}/infer", BODY, auth)
    if status != 403:
        raise BenchError(f"variant {v}: load-tester on {FORBIDDEN_MODEL} got HTTP {status}, expected 403: {body[:300]!r}")


def audit_records(audit_dir: Path | None) -> int | None:
    if audit_dir is None:
        return None
    total = 0
    for f in audit_dir.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                total += sum(1 for _ in fh)
    return total


def save_stats(run_dir: Path, sources: list[dict]) -> None:
    """Each process's own counters and histograms after the run (Envoy's /stats, authz's and
    modelserver's /metrics) go to run/stats/, to see where the time went."""
    out = run_dir / "stats"
    out.mkdir(exist_ok=True)
    for source in sources:
        for name, url in source.items():
            try:
                status, body = http("GET", url)
            except OSError as e:
                log(f"stats: {name} ({url}) did not answer: {e}")
                continue
            (out / f"{name}.txt").write_bytes(body if status == 200 else f"HTTP {status}\n".encode() + body)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("wrk is not on PATH: run scripts/bootstrap.sh (it installs the Debian package wrk)")
    out_dir = Path(args.out)
    run_dir = out_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    planned = len(args.variants) * len(args.concurrency) * args.rounds * args.duration
    log(f"variants {','.join(args.variants)}; concurrency {args.concurrency}; {args.rounds} rounds x "
        f"{args.duration:g}s; about {planned / 60:.1f} min of load")

    stack = Stack(run_dir)
    ports = PortPlan(args.port_base)
    started = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        eps = start_stack(args, stack, ports)
        components, token = eps.pop("_components"), eps.pop("_token")
        for v in args.variants:
            verify_variant(v, eps[v]["url"], token, stack.procs)
            log(f"variant {v} ready at {eps[v]['url']} ({VARIANTS[v]['label']})")
        if args.warmup > 0:
            for v in args.variants:
                run_wrk(wrk, eps[v]["url"], max(args.concurrency), args.warmup, token)
        runs: list[RunResult] = []
        fsync_ms: list[float] = []
        for rnd in range(1, args.rounds + 1):
            # The disk's own sync latency, once per round, beside the variants it bounds.
            fsync_ms.append(fdatasync_p50_ms(run_dir))
            log(f"round {rnd}: fdatasync p50 {fsync_ms[-1]:.3f} ms")
            for c in args.concurrency:
                for v in args.variants:
                    for p in stack.procs:
                        p.check_alive()
                    watched = {"envoy": eps[v]["envoy"], "modelserver": components["modelserver"]}
                    if eps[v]["authz"]:
                        watched["authz"] = eps[v]["authz"]
                    if VARIANTS[v]["authz"] == "redis" and "redis" in components:
                        watched["redis"] = components["redis"]
                    before = {k: p.cpu_seconds() for k, p in watched.items()}
                    busy_before = system_busy_seconds()
                    res, wrk_cpu = run_wrk(wrk, eps[v]["url"], c, args.duration, token)
                    cpu = {k: watched[k].cpu_seconds() - before[k] for k in watched}
                    cpu["wrk"] = wrk_cpu
                    cpu["other"] = max(0.0, system_busy_seconds() - busy_before - sum(cpu.values()))
                    errors = res["errors"]
                    if errors["status"] or errors["connect"] or errors["read"] or errors["write"] or errors["timeout"]:
                        hint = ""
                        if eps[v]["authz"]:
                            warnings = [line for line in tail(eps[v]["authz"].log_path, 200).splitlines()
                                        if '"WARN"' in line or '"ERROR"' in line]
                            hint = "\nlast authz warnings:\n" + "\n".join(warnings[-5:]) if warnings else ""
                        raise BenchError(f"variant {v} c={c}: wrk saw errors {errors} of {res['requests']} requests "
                                         f"(denied, throttled or failed requests would make the numbers meaningless){hint}")
                    dur = res["duration_us"] / 1e6
                    lat = {k: v_us / 1000 for k, v_us in res["latency_us"].items()}
                    r = RunResult(v, c, rnd, res["requests"], dur, res["requests"] / dur, lat, errors,
                                  {k: round(x, 3) for k, x in cpu.items()})
                    runs.append(r)
                    log(f"round {rnd} c={c:<3} {v}: {r.rps:8.0f} req/s  p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms")
        audit = {v: audit_records(eps[v]["audit_dir"]) for v in args.variants if eps[v]["audit_dir"]}
        for v, records in audit.items():
            served = sum(r.requests for r in runs if r.variant == v)
            # Every answered request has its record (written and fsync'd before the answer).
            if records < served:
                raise BenchError(f"variant {v}: {records} audit records for {served} measured requests")
        save_stats(run_dir, [components["stats"]] + [eps[v]["stats"] for v in args.variants])
    finally:
        stack.stop_all()

    rows = summarize(runs, args.variants, args.concurrency)
    fdatasync_ms = statistics.median(fsync_ms)
    goal_rows = goals(rows, fdatasync_ms)
    paired_rows = paired(runs, args.variants, args.concurrency)
    info = machine()
    result = {
        "benchmark": "gateway",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "machine": info,
        "tools": {"wrk": tool_version([wrk, "--version"]), "envoy": tool_version(["envoy", "--version"]),
                  "redis": tool_version(["redis-server", "--version"])},
        "settings": {"variants": {v: VARIANTS[v]["label"] for v in args.variants}, "concurrency": args.concurrency,
                     "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                     "request": {"method": "POST", "path": INFER_PATH, "body": BODY.decode(), "principal": "load-tester"},
                     "wrk_threads": 1, "aggregation": "median over rounds"},
        "audit_records": audit,
        "fdatasync_p50_ms": round(fdatasync_ms, 4),
        "fdatasync_p50_ms_rounds": [round(x, 4) for x in fsync_ms],
        "summary": rows,
        "goals": goal_rows,
        "paired": paired_rows,
        "runs": [r.as_json() for r in runs],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (f"Gateway cost on benchmark-echo (REST JSON infer, load-tester token), {result['started_utc']}\n"
             f"{info['nproc']} CPUs ({info['cpu_model']}), median of {args.rounds} interleaved rounds x {args.duration:g}s per point")
    chart(rows, args.variants, args.concurrency, out_dir / "gateway.png", title)

    print(f"\nGateway benchmark ({result['started_utc']}, {info['nproc']} CPUs, {info['cpu_model']}, "
          f"{info['memory_gib']} GiB; median of {args.rounds} rounds x {args.duration:g}s)\n")
    print(table(rows))
    print("\nCPU microseconds per request, by process (summed over rounds; 'other' = the rest of the machine):\n")
    print(cpu_table(rows))
    if audit:
        print("\nAudit records written (fsync): " + ", ".join(f"{v}: {n}" for v, n in audit.items()))
    print(f"\nfdatasync p50 of the audit disk (small append + fdatasync, median of rounds): {fdatasync_ms:.3f} ms")
    if paired_rows:
        print("\nExtras against their base, paired by round (median of the per-round throughput ratios, "
              "min-max):")
        for r in paired_rows:
            print(f"  {r['variant']} / {r['base']} at c={r['concurrency']}: {r['median_ratio']:.3f} "
                  f"({r['min_ratio']:.2f}-{r['max_ratio']:.2f}, {r['rounds']} rounds)")
    if goal_rows:
        print("\nGoals:")
        for g in goal_rows:
            print(f"  [{'met   ' if g['met'] else 'MISSED'}] {g['goal']}: {g['value']}")
    print(f"\nJSON: {out_dir / 'gateway.json'}\nchart: {out_dir / 'gateway.png'}")
    # The second step: the model server alone, batching busy / always / off (BENCH_SERVING=0 skips).
    if modelserver_bench.enabled():
        modelserver_bench.run(sys.modules[__name__], args, wrk, out_dir, run_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        log(f"ERROR: {e}")
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        log(f"ERROR: {' '.join(map(str, e.cmd))} failed (exit {e.returncode}):\n{(e.stderr or b'')!s}")
        sys.exit(1)
