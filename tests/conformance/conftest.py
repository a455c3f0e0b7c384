"""Start the real modelserver binary on the committed models/ repository for the conformance tests.

The binary comes from `MODELSERVER_BIN`, else `$CARGO_TARGET_DIR/debug/modelserver`, else
`<repo>/target/debug/modelserver` (build it with `cargo build -p modelserver`). ONNX Runtime comes
from `ORT_DYLIB_PATH` (set by `source .tools/env` after `scripts/bootstrap.sh`). When either is
missing, every test that needs the server FAILS with a message saying what to do; none is skipped.

The server runs once per test session on free loopback ports; its log goes to a temporary file
whose tail is attached to the report of every failed test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from models_under_test import MODELS_DIR, REPO_ROOT

# A debug build loads ~25 models at start-up; a loaded 2-core box may need a while for that.
STARTUP_TIMEOUT_S = float(os.environ.get("MODELSERVER_STARTUP_TIMEOUT", "90"))
# How long a SIGTERM'd server gets to drain before it is killed.
SHUTDOWN_GRACE_S = 10.0
LOG_TAIL_BYTES = 8000


@dataclass
class ServerUnderTest:
    """A running modelserver: its URLs (host:port, as tritonclient wants them) and its log."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError as e:
            return f"(could not read {self.log_path}: {e})"
        return data[-LOG_TAIL_BYTES:].decode("utf-8", "replace")


_SERVER: ServerUnderTest | None = None


def modelserver_binary() -> Path:
    if "MODELSERVER_BIN" in os.environ:
        return Path(os.environ["MODELSERVER_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    return target / "debug" / "modelserver"


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=SHUTDOWN_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def modelserver():
    """The running server. Fails (never skips) when the binary or ONNX Runtime is missing."""
    global _SERVER
    binary = modelserver_binary()
    if not binary.is_file():
        pytest.fail(
            f"modelserver binary not found at {binary}: build it with `cargo build -p modelserver` "
            "(with CARGO_TARGET_DIR as you use it) or point MODELSERVER_BIN at it",
            pytrace=False,
        )
    dylib = os.environ.get("ORT_DYLIB_PATH")
    if not dylib or not Path(dylib).is_file():
        pytest.fail(
            f"ORT_DYLIB_PATH is {dylib!r}, not a file: run scripts/bootstrap.sh and `source .tools/env` "
            "so the server can load libonnxruntime",
            pytrace=False,
        )

    http_port, grpc_port, metrics_port = free_ports(3)
    log_dir = Path(tempfile.mkdtemp(prefix="modelserver-conformance-"))
    log_path = log_dir / "modelserver.log"
    cmd = [
        str(binary),
        "serve",
        "--model-repository",
        str(MODELS_DIR),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        # The conformance clients talk to the server directly, as a Triton client would; the
        # gateway-decision check (on by default) is what the e2e tests through Envoy cover.
        "--authorization",
        "none",
    ]
    with open(log_path, "wb") as log:
        env = {**os.environ, "NO_COLOR": "1"}  # plain log lines in the report
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    server = ServerUnderTest(proc, http_port, grpc_port, metrics_port, log_path)

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _ready(http_port):
        if proc.poll() is not None:
            pytest.fail(
                f"modelserver exited with status {proc.returncode} before it was ready.\n"
                f"command: {' '.join(cmd)}\nlog ({log_path}):\n{server.log_tail()}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(
                f"modelserver not ready on /v2/health/ready within {STARTUP_TIMEOUT_S:.0f} s.\n"
                f"command: {' '.join(cmd)}\nlog ({log_path}):\n{server.log_tail()}",
                pytrace=False,
            )
        time.sleep(0.2)

    _SERVER = server
    try:
        yield server
    finally:
        _SERVER = None
        _stop(proc)


@pytest.fixture(scope="session")
def http_client(modelserver):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=modelserver.http_url, concurrency=16, network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(modelserver):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=modelserver.grpc_url)
    yield client
    client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server's log tail to every failed test that used the server."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER is not None and "modelserver" in item.fixturenames:
        report.sections.append(("modelserver log (tail)", _SERVER.log_tail()))
