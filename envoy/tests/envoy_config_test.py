#!/usr/bin/env python3
"""Pins what the gateway's Envoy configuration does, with the real Envoy and the local render.

Envoy runs the config `envoy/render.py --target local` produces, on ephemeral loopback ports. On
authz's and the model server's ports sit minimal protocol endpoints (a gRPC ext_authz `Check` that
allows, or denies anything naming `forbidden`; an HTTP echo; a gRPC sink), so that each assertion
is about Envoy's configuration alone: which paths are public, that forged `x-authz-*` headers are
gone before the check, the body peek for gRPC model names, fail-closed 503, the repository API and
unknown paths blocked, path normalisation, the access log. The services themselves are tested end
to end, through this same renderer, by the e2e crate.

Run: python3 envoy/tests/envoy_config_test.py   (needs envoy and grpcio: source .tools/env)
Prints one PASS/FAIL line per behaviour and "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(tempfile.mkdtemp(prefix="envoy-config-test-"))
PRINCIPAL = "alice"
SPIFFE_ID = "spiffe://gateway.local/ns/security/sa/triage-bot"


# ---- protobuf wire encoding, just enough for CheckResponse and a ModelInferRequest prefix ----

def varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out += bytes([low | 0x80])
        else:
            return out + bytes([low])


def field(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def int_field(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def header_option(key: str, value: str) -> bytes:
    # HeaderValueOption { header: HeaderValue { key = 1, value = 2 } = 1 }
    return field(1, field(1, key.encode()) + field(2, value.encode()))


def raw(b: bytes) -> bytes:
    return b


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- certificates for the mTLS listener -------------------------------------------------------

def write_pki(directory: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate whose URI SAN
    is a SPIFFE id; returns the PEM file paths."""
    import datetime
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key, issuer_name, issuer_key, san, ca: bool = False):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, data: bytes) -> str:
        path = directory / name
        path.write_bytes(data)
        return str(path)

    pem = serialization.Encoding.PEM
    def key_pem(k) -> bytes:
        return k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = cert("test-ca", ca_key, ca_name, ca_key, None, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = cert("127.0.0.1", srv_key, ca_name, ca_key, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = cert("triage-bot", cli_key, ca_name, ca_key, [x509.UniformResourceIdentifier(SPIFFE_ID)])
    return {
        "ca": write("ca.pem", ca.public_bytes(pem)),
        "server_cert": write("server.pem", srv.public_bytes(pem)),
        "server_key": write("server.key", key_pem(srv_key)),
        "client_cert": write("client.pem", cli.public_bytes(pem)),
        "client_key": write("client.key", key_pem(cli_key)),
    }


# ---- stand-in endpoints ----------------------------------------------------------------------

class Backends:
    """The ext_authz Check endpoint, an HTTP echo on the REST port and a gRPC sink."""

    def __init__(self) -> None:
        self.checks: list[bytes] = []  # raw CheckRequest bytes, newest last
        self.rest: list[tuple[str, dict]] = []  # (path, headers) seen by the REST port
        self.grpc_calls: list[bytes] = []  # request messages seen by the gRPC port
        self.authz_port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()

        self.authz = grpc.server(futures.ThreadPoolExecutor(4))
        self.authz.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "envoy.service.auth.v3.Authorization",
            {"Check": grpc.unary_unary_rpc_method_handler(self.check, raw, raw)})])
        self.authz.add_insecure_port(f"127.0.0.1:{self.authz_port}")
        self.authz.start()

        backends = self

        class Echo(http.server.BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                backends.rest.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = handle_one

            def log_message(self, *args) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", self.http_port), Echo)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

        self.grpc = grpc.server(futures.ThreadPoolExecutor(4))
        methods = ("ModelInfer", "ServerLive", "RepositoryIndex")
        self.grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {m: grpc.unary_unary_rpc_method_handler(self.sink, raw, raw) for m in methods})])
        self.grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        self.grpc.start()

    def check(self, request: bytes, _ctx) -> bytes:
        self.checks.append(request)
        if b"forbidden" in request:
            # status PERMISSION_DENIED(7); denied_response { status { code: 403 }, body }
            denied = field(1, int_field(1, 403)) + field(3, b'{"error":{"code":"role_not_allowed"}}')
            return field(1, int_field(1, 7)) + field(2, denied)
        # status OK; ok_response { headers = 2, response_headers_to_add = 6 }
        ok = field(2, header_option("x-authz-principal", PRINCIPAL)) + field(6, header_option("ratelimit-remaining", "9"))
        return field(1, b"") + field(3, ok)

    def sink(self, request: bytes, _ctx) -> bytes:
        self.grpc_calls.append(request)
        return b""

    def stop(self) -> None:
        self.http.shutdown()
        self.grpc.stop(0)
        self.authz.stop(0)


# ---- the test ----------------------------------------------------------------------------------

results: list[tuple[str, bool]] = []


def expect(name: str, ok: bool) -> None:
    results.append((name, bool(ok)))
    print(("PASS " if ok else "FAIL ") + name)


def main() -> int:
    b = Backends()
    listen, admin, tls_port = free_port(), free_port(), free_port()
    pki = write_pki(WORK)
    cfg = WORK / "envoy.yaml"
    subprocess.run([sys.executable, str(ROOT / "envoy/render.py"), "--target", "local",
                    "--listen-port", str(listen), "--admin-port", str(admin),
                    "--authz-addr", f"127.0.0.1:{b.authz_port}",
                    "--modelserver-http", f"127.0.0.1:{b.http_port}",
                    "--modelserver-grpc", f"127.0.0.1:{b.grpc_port}",
                    "--tls-port", str(tls_port), "--tls-cert", pki["server_cert"], "--tls-key", pki["server_key"],
                    "--client-ca", pki["ca"], "--out", str(cfg)], check=True)
    log_path = WORK / "envoy.out"
    envoy = subprocess.Popen(["envoy", "-c", str(cfg), "--disable-hot-restart", "--log-level", "warn"],
                             stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).status == 200:
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        else:
            print(log_path.read_text()[-3000:])
            expect("envoy became ready within 20s", False)
            return 1
        run_checks(b, listen)
        run_tls_checks(b, tls_port, pki)
        b.authz.stop(0)
        time.sleep(0.5)
        status, _, _ = request(listen, "/v2/models/m/infer", data=b"{}")
        expect(f"authz unreachable -> 503, fail closed (got {status})", status == 503)
        status, _, _ = request(listen, "/v2/health/ready")
        expect(f"health stays public with authz down (got {status})", status == 200)
    finally:
        envoy.terminate()
        try:
            envoy.wait(5)
        except subprocess.TimeoutExpired:
            envoy.kill()
        b.stop()

    log = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    expect("access log names the principal authz set, never a forged one",
           any(l.get("principal") == PRINCIPAL and l.get("path") == "/v2/models/m/infer" for l in log)
           and not any(l.get("principal") == "mallory" for l in log))
    # Requests rejected while parsing (bad header name, escaped slash) never get as far as an id.
    routed = [l for l in log if l.get("response_code_details") in
              ("via_upstream", "ext_authz_denied", "ext_authz_error", "direct_response")]
    expect("every routed request's access log line carries a request id", bool(routed) and all(l.get("request_id") for l in routed))

    failed = sum(1 for _, ok in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        print(f"envoy log: {log_path}")
        print(log_path.read_text()[-3000:])
    else:
        shutil.rmtree(WORK, ignore_errors=True)
    return 1 if failed else 0


def request(port: int, path: str, headers: dict | None = None, data: bytes | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def run_checks(b: Backends, port: int) -> None:
    n = len(b.checks)
    status, _, _ = request(port, "/v2/health/ready")
    expect("health path is public: 200 without a check", status == 200 and len(b.checks) == n)

    status, headers, _ = request(port, "/v2/models/m/infer",
                                 {"x-authz-principal": "mallory", "X-Authz-Decision-Id": "forged",
                                  "content-type": "application/json"}, b'{"inputs":[]}')
    upstream = b.rest[-1][1] if b.rest else {}
    expect(f"allowed inference is routed to the model server (got {status})", status == 200)
    expect("model server sees authz's principal, not the client's", upstream.get("x-authz-principal") == PRINCIPAL)
    expect("a forged decision id never reaches the model server", "x-authz-decision-id" not in upstream)
    expect("authz never sees client-sent x-authz-* headers", b"mallory" not in b.checks[-1] and b"forged" not in b.checks[-1])
    expect("a REST check carries no body (the model is in the path; only gRPC frames are peeked)",
           b'{"inputs":[]}' not in b.checks[-1])
    expect("RateLimit-* headers from authz reach the client", headers.get("ratelimit-remaining") == "9")

    status, _, body = request(port, "/v2/models/forbidden/infer", data=b"{}")
    expect(f"a denial keeps authz's status and JSON body (got {status})", status == 403 and b"role_not_allowed" in body)

    n = len(b.checks)
    status, _, body = request(port, "/v2/repository/index", data=b"{}")
    expect(f"repository API -> 403 not_exposed, nothing forwarded (got {status})",
           status == 403 and b"not_exposed" in body and len(b.checks) == n)
    status, _, _ = request(port, "/v2/models/../repository/index", data=b"{}")
    expect(f"dot segments are resolved before routing (got {status})", status == 403)
    status, _, _ = request(port, "/metrics")
    expect(f"unlisted path -> 404 (got {status})", status == 404)
    status, _, _ = request(port, "/v2/models/a%2Fb/infer", data=b"{}")
    expect(f"escaped slash is rejected (got {status})", status == 400)
    status, _, _ = request(port, "/v2//models//m//infer", data=b"{}")
    expect(f"duplicate slashes are merged before routing (got {status})", status == 200 and b.rest[-1][0] == "/v2/models/m/infer")
    status, _, _ = request(port, "/v2/models/m/infer", {"x_authz_principal": "mallory"}, b"{}")
    expect(f"header names with underscores are rejected (got {status})", status == 400)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", raw, raw)
        try:
            infer(field(1, b"forbidden-model") + field(2, b"1"), timeout=5)
            expect("gRPC ModelInfer naming a forbidden model is denied", False)
        except grpc.RpcError as e:
            expect(f"gRPC ModelInfer naming a forbidden model is denied ({e.code()})", e.code() == grpc.StatusCode.PERMISSION_DENIED)
        message = field(1, b"mission-summarizer") + field(2, b"1")
        try:
            infer(message, timeout=5)
            expect("gRPC ModelInfer for an allowed model reaches the model server", b.grpc_calls[-1:] == [message])
            expect("authz saw the gRPC frame carrying model_name", b"mission-summarizer" in b.checks[-1])
        except grpc.RpcError as e:
            expect(f"gRPC ModelInfer for an allowed model ({e.code()} {e.details()})", False)
        repo = channel.unary_unary("/inference.GRPCInferenceService/RepositoryIndex", raw, raw)
        try:
            repo(b"", timeout=5)
            expect("gRPC RepositoryIndex is not exposed", False)
        except grpc.RpcError as e:
            expect(f"gRPC RepositoryIndex is not exposed ({e.code()})", e.code() == grpc.StatusCode.PERMISSION_DENIED)


def run_tls_checks(b: Backends, port: int, pki: dict[str, str]) -> None:
    import ssl

    ctx = ssl.create_default_context(cafile=pki["ca"])
    ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    req = urllib.request.Request(f"https://127.0.0.1:{port}/v2/models/m/infer", data=b"{}")
    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
        status = resp.status
    expect(f"mTLS listener routes an allowed request (got {status})", status == 200)
    expect("authz receives the client certificate's SPIFFE id as the peer principal", SPIFFE_ID.encode() in b.checks[-1])
    anonymous = ssl.create_default_context(cafile=pki["ca"])
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/health/ready", timeout=5, context=anonymous) as resp:
        expect("the TLS listener accepts clients without a certificate (token or API key auth)", resp.status == 200)


if __name__ == "__main__":
    sys.exit(main())
