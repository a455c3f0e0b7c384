#!/usr/bin/env python3
"""Renders the gateway's Envoy configuration: the one source for every deployment target.

The configuration is built here as data (`build_config`), parameterised by a values file per target
(`envoy/values/{local,compose,k8s}.json`) and optional command-line overrides, and written as YAML.
The rendered files under `envoy/rendered/` (and the copy Kustomize packs into the gateway ConfigMap,
`k8s/base/gateway/envoy.yaml`) are committed so reviewers can read them, and `--check` fails when
they drift from this source.

Usage:
  python3 envoy/render.py --all                 # rewrite every committed render
  python3 envoy/render.py --check               # exit 1 (with a diff) when a committed render drifts
  python3 envoy/render.py --target local --listen-port 18080 --admin-port 19901 \
      --authz-addr 127.0.0.1:19001 --modelserver-http 127.0.0.1:18000 \
      --modelserver-grpc 127.0.0.1:18001 --out /tmp/envoy.yaml   # what the e2e tests do

Only the Python standard library is used, so any python3 runs it. The security-relevant choices are
explained next to the setting they concern; docs/architecture.md has the request path as prose.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALUES_DIR = ROOT / "envoy" / "values"
RENDERED_DIR = ROOT / "envoy" / "rendered"
TARGETS = ("local", "compose", "k8s")
# Kustomize only loads files inside the kustomization root, so the k8s render is also written there.
K8S_CONFIGMAP_COPY = ROOT / "k8s" / "base" / "gateway" / "envoy.yaml"

# ---- Contract with the services: deploy/contract.json is the one source of ports, paths and header
# names shared by every deployment artifact (scripts/check_deploy_consistency.py checks the rest).
CONTRACT = json.loads((ROOT / "deploy" / "contract.json").read_text())
GRPC_SERVICE = "inference.GRPCInferenceService"
# Headers authz sets on allowed requests. Any client-sent header with this prefix is removed before
# ext_authz runs, so neither authz nor the model server ever sees a forged one.
AUTHZ_HEADER_PREFIX = CONTRACT["headers"]["stripped_prefix"]
PRINCIPAL_HEADER = CONTRACT["headers"]["principal"]
DECISION_ID_HEADER = CONTRACT["headers"]["decision_id"]
# Envoy writes this on check requests whose body was cut at max_request_bytes; a client must not.
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
# Public OIP health and server metadata: load balancers and clients probe these without credentials.
PUBLIC_REST_PATHS = tuple(p for p in CONTRACT["public_paths"] if p.startswith("/v2"))
PUBLIC_GRPC_METHODS = tuple(p.rsplit("/", 1)[1] for p in CONTRACT["public_paths"]
                            if p.startswith(f"/{GRPC_SERVICE}/"))
MODELSERVER_READY_PATH = CONTRACT["paths"]["modelserver_ready"]
ENVOY_METRICS_PATH = CONTRACT["paths"]["envoy_metrics"]
ENVOY_READY_PATH = CONTRACT["paths"]["envoy_ready"]
# `GET /v1/models`, the caller's model catalog, answered by authz in the check (catalog_route).
CATALOG_PATH = CONTRACT["paths"]["catalog"]
# Bytes of the request body sent to authz: enough for the first gRPC frame's model_name and
# model_version fields, small enough that a check never buffers a tensor.
AUTHZ_BODY_BYTES = 1024
# A decision is a Redis round trip plus an audit append; anything slower is an outage, and with
# failure_mode_allow false the client then gets status_on_error (503) rather than a guess.
AUTHZ_TIMEOUT = "0.5s"
# gRPC methods routed after authz has decided on the model named in the message (field 1 name and
# field 2 version in each of these request messages). ModelStreamInfer is deliberately absent: authz
# sees only the first message of a stream, and later messages could name another model.
AUTHORIZED_GRPC_METHODS = ("ModelInfer", "ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics")
# Route timeouts: inference may wait in the batch queue and run on a busy GPU; metadata never should.
INFER_TIMEOUT = "60s"
METADATA_TIMEOUT = "10s"
HEALTH_TIMEOUT = "2s"

EXT_AUTHZ = "envoy.filters.http.ext_authz"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


class RenderError(Exception):
    """A values file or override that cannot produce a valid configuration."""


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


# An address of the form `unix:/run/authz/authz.sock` names a Unix domain socket.
UNIX_PREFIX = "unix:"


def split_addr(addr: str, what: str) -> tuple[str, int]:
    """Splits `host:port`, naming the parameter in the error."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RenderError(f"{what}: expected host:port, got {addr!r}")
    return host.strip("[]"), int(port)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def cluster(name: str, addr: str, what: str, values: dict, *, http2: bool, lb: str = "ROUND_ROBIN",
            health_check: dict | None = None, extra: dict | None = None) -> dict:
    """A cluster of `addr`, one `host:port` or several comma-separated (a local stack with a
    replica): STATIC for IP literals, STRICT_DNS (every A record) otherwise; or one Unix domain
    socket, `unix:/absolute/path` (STATIC)."""
    if addr.startswith(UNIX_PREFIX):
        path = addr.removeprefix(UNIX_PREFIX)
        if not path.startswith("/") or "," in path:
            raise RenderError(f"{what}: expected unix:/absolute/path, got {addr!r}")
        addresses = [{"pipe": {"path": path}}]
        host = None
    else:
        hosts = [split_addr(a, what) for a in addr.split(",")]
        host = hosts[0][0]
        if any(is_ip(h) != is_ip(host) for h, _ in hosts):
            raise RenderError(f"{what}: mixes IP literals and names: {addr!r}")
        addresses = [{"socket_address": {"address": h, "port_value": port}} for h, port in hosts]
    c: dict = {
        "name": name,
        "type": "STATIC" if host is None or is_ip(host) else "STRICT_DNS",
        "connect_timeout": "0.25s",
        "lb_policy": lb,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a}} for a in addresses]}],
        },
    }
    if host is not None and not is_ip(host):
        # Re-resolved every 5s (Envoy's default), so pods that come and go behind a headless
        # Service or compose's DNS are picked up without a restart.
        c["dns_lookup_family"] = "V4_PREFERRED"
    if http2:
        c["typed_extension_protocol_options"] = HTTP2_OPTIONS
    if health_check is not None:
        interval = values["health_check_interval"]
        c["health_checks"] = [{
            "timeout": "1s",
            "interval": interval,
            # Without this a cluster that has not had traffic yet is probed only every 60s, so a
            # backend that starts after Envoy would stay unhealthy for a minute.
            "no_traffic_interval": interval,
            "unhealthy_interval": interval,
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            **health_check,
        }]
    if extra:
        c.update(extra)
    return c


def ext_authz_disabled() -> dict:
    return {EXT_AUTHZ: {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }}


def ext_authz_without_body() -> dict:
    """REST routes name their model in the path, so authz needs no body: Envoy neither buffers
    it nor copies it into the check (the body peek is for gRPC ModelInfer frames only)."""
    return {EXT_AUTHZ: {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "check_settings": {"disable_request_body_buffering": True},
    }}


def direct_json(status: int, code: str, message: str) -> dict:
    """A fixed response in the gateway's error shape (the same shape authz uses for denials)."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return {"status": status, "body": {"inline_string": body}}


def upstream_route(match: dict, cluster_name: str, timeout: str, *, public: bool,
                   peek_body: bool = False) -> dict:
    route: dict = {
        "match": match,
        "route": {
            "cluster": cluster_name,
            "timeout": timeout,
            # Only failures where the model server cannot have started the request are retried
            # (an inference is not assumed to be idempotent).
            "retry_policy": {"retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 2},
        },
    }
    if public:
        route["typed_per_filter_config"] = ext_authz_disabled()
    elif not peek_body:
        route["typed_per_filter_config"] = ext_authz_without_body()
    return route


def fixed_route(match: dict, status: int, code: str, message: str) -> dict:
    # Fixed answers never reach a backend, so there is nothing for authz to decide.
    return {"match": match, "direct_response": direct_json(status, code, message),
            "typed_per_filter_config": ext_authz_disabled()}


def catalog_route() -> dict:
    """`GET /v1/models`: authz authenticates the caller and answers with its catalog itself (a
    200 in the check's denied_response), so nothing is forwarded. The fixed answer below is
    reached only when authz did not answer and `failure_mode_allow` let the request through."""
    route = fixed_route({"path": CATALOG_PATH}, 503, "catalog_unavailable",
                        "the model catalog is answered by authz, which is unavailable")
    route["typed_per_filter_config"] = ext_authz_without_body()
    return route


def routes() -> list[dict]:
    """The ingress routes, first match wins. Everything not listed gets a fixed 404."""
    r: list[dict] = []
    for path in PUBLIC_REST_PATHS:
        r.append(upstream_route({"path": path}, "modelserver_http", HEALTH_TIMEOUT, public=True))
    r.append(fixed_route({"prefix": "/v2/repository"}, 403, "not_exposed",
                         "the model repository API is not exposed through the gateway"))
    r.append(upstream_route(
        {"safe_regex": {"regex": r"/v2/models/[^/]+(/versions/[^/]+)?/infer"}},
        "modelserver_http", INFER_TIMEOUT, public=False))
    r.append(upstream_route({"prefix": "/v2/models/"}, "modelserver_http", METADATA_TIMEOUT, public=False))
    r.append(catalog_route())
    for method in PUBLIC_GRPC_METHODS:
        r.append(upstream_route({"path": f"/{GRPC_SERVICE}/{method}", "grpc": {}},
                                "modelserver_grpc", HEALTH_TIMEOUT, public=True))
    for method in AUTHORIZED_GRPC_METHODS:
        timeout = INFER_TIMEOUT if method == "ModelInfer" else METADATA_TIMEOUT
        r.append(upstream_route({"path": f"/{GRPC_SERVICE}/{method}", "grpc": {}},
                                "modelserver_grpc", timeout, public=False, peek_body=True))
    # Repository load/unload, shared-memory registration, trace/log settings and streaming stay
    # internal. A gRPC client sees HTTP 403 as PERMISSION_DENIED.
    r.append(fixed_route({"prefix": f"/{GRPC_SERVICE}/"}, 403, "not_exposed",
                         "this gRPC method is not exposed through the gateway"))
    r.append(fixed_route({"prefix": "/"}, 404, "not_found", "no such route"))
    return r


# Envoy's own answers when the model server cannot answer, in the gateway's error shape (authz's
# denials and the fixed routes already use it): (response flags, status code, code, message).
# ext_authz failures are not mapped: their flag (UAEX) is the one authz's own denials carry, and
# those bodies must pass unchanged.
UPSTREAM_FAILURES = (
    (["UH", "UF", "URX", "NC"], "upstream_unavailable", "no model server is available"),
    (["UT"], "upstream_timeout", "the model server did not answer in time"),
    (["UC", "UR"], "upstream_reset", "the model server closed the connection"),
    (["UO"], "overloaded", "too many requests in flight to the model server"),
)


def local_reply_config() -> dict:
    return {"mappers": [
        {
            "filter": {"response_flag_filter": {"flags": flags}},
            "body_format_override": {"json_format": {"error": {"code": code, "message": message}}},
        }
        for flags, code, message in UPSTREAM_FAILURES
    ]}


def access_log() -> list[dict]:
    fmt = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "trace_id": "%TRACE_ID%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "protocol": "%PROTOCOL%",
        "response_code": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        # Set by authz on allowed requests (client-sent values were removed before the check).
        "principal": f"%REQ({PRINCIPAL_HEADER.upper()})%",
        "decision_id": f"%REQ({DECISION_ID_HEADER.upper()})%",
        # On denials authz may return the decision id to the client instead.
        "denied_decision_id": f"%RESP({DECISION_ID_HEADER.upper()})%",
        "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "upstream_host": "%UPSTREAM_HOST%",
        "user_agent": "%REQ(USER-AGENT)%",
    }
    return [{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fmt},
        },
    }]


# The request headers authz reads (authz/src/request.rs): credentials, the reason, correlation.
# The path, method and host travel in their own CheckRequest fields.
AUTHZ_READ_HEADERS = ("authorization", "x-api-key", "x-access-reason", "x-request-id", "traceparent")
# How Envoy calls authz, each setting measured by `make bench` (docs/benchmarks.md, "Envoy's side
# of the call") and kept because it paid; a values file may set `ext_authz: {...}` to override one.
EXT_AUTHZ_CALL = {
    # Only the headers authz reads go into the check: Envoy copies and encodes fewer bytes per
    # call, authz parses fewer. A header authz does not read cannot change its decision.
    "allowed_headers_only": True,
    # No x-envoy-* headers on the Check call itself (authz reads none of them).
    "skip_envoy_headers": True,
    # ext_authz's own stats only; no per-response cluster stats for the authz cluster.
    "charge_cluster_response_stats": False,
}


def ext_authz_call(values: dict) -> dict:
    """EXT_AUTHZ_CALL with the values file's overrides (unknown keys are an error)."""
    overrides = values.get("ext_authz") or {}
    unknown = sorted(set(overrides) - set(EXT_AUTHZ_CALL))
    if unknown:
        raise RenderError(f"ext_authz: unknown setting(s) {', '.join(unknown)} (known: {', '.join(EXT_AUTHZ_CALL)})")
    return {**EXT_AUTHZ_CALL, **overrides}


def http_filters(values: dict) -> list[dict]:
    call = ext_authz_call(values)
    return [
        {
            # Runs before ext_authz, so a client cannot hand authz (or, after an allow, the model
            # server) a forged identity header. Route-level request_headers_to_remove would run only
            # after ext_authz, which is too late. Request trailers too: an HTTP/2 client may send
            # trailers after its body, and gRPC servers (tonic) merge them into the metadata a
            # handler sees. The model server reads the decision from the initial headers only;
            # this keeps client x-authz-* out of its trailers as well. Trailers are stripped, not
            # refused: gRPC clients send none, but HTTP clients may legitimately send others.
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {
                    "request_mutations": [
                        {"remove_on_match": {"key_matcher": {"prefix": AUTHZ_HEADER_PREFIX}}},
                        {"remove": PARTIAL_BODY_HEADER},
                    ],
                    "request_trailers_mutations": [
                        {"remove_on_match": {"key_matcher": {"prefix": AUTHZ_HEADER_PREFIX}}},
                    ],
                },
            },
        },
        {
            "name": EXT_AUTHZ,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "authz",
                                                **({"skip_envoy_headers": True} if call["skip_envoy_headers"] else {})},
                                 "timeout": AUTHZ_TIMEOUT},
                # Fail closed: no decision, no access. Envoy answers status_on_error instead.
                "failure_mode_allow": False,
                "status_on_error": {"code": "ServiceUnavailable"},
                # authz maps verified mTLS peers to principals by `source.principal` (the URI SAN
                # Envoy verified), which Envoy sends without this; the PEM certificate itself is
                # never read, so it is not copied into every check.
                "include_peer_certificate": False,
                **({"allowed_headers": {"patterns": [{"exact": h} for h in AUTHZ_READ_HEADERS]}}
                   if call["allowed_headers_only"] else {}),
                **({} if call["charge_cluster_response_stats"] else {"charge_cluster_response_stats": False}),
                # The start of the body lets authz read model_name from a gRPC ModelInfer frame;
                # the rest of a large body streams on unbuffered after the check.
                "with_request_body": {
                    "max_request_bytes": AUTHZ_BODY_BYTES,
                    "allow_partial_message": True,
                    "pack_as_bytes": True,
                },
                # The route must not change under a decision: authz adds identity headers only.
                "clear_route_cache": False,
                # Each header as the client sent it (header_map, raw bytes), not Envoy's
                # comma-joined string map: a repeated x-access-reason, authorization or x-api-key
                # is then visible to authz, which refuses it as malformed_request instead of
                # reading two blank reasons as the reason ",".
                "encode_raw_headers": True,
            },
        },
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
    ]


def ingress_listener(values: dict, tls: dict | None = None) -> dict:
    """The client listener: plaintext HTTP/1.1 + h2c, or (with `tls`) HTTPS where clients may
    present a certificate, whose verified identity authz receives as `source.principal`."""
    hcm: dict = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress",
        # AUTO: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), which is what gRPC clients send.
        "codec_type": "AUTO",
        "use_remote_address": True,
        "server_name": "inference-gateway",
        # Paths are canonical before routing and before authz sees them, so both decide on the
        # same model: RFC 3986 normalisation, `//` merged, and %2F/%5C rejected outright.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "common_http_protocol_options": {
            # `x_authz_principal` could be translated into `x-authz-principal` by some backends.
            "headers_with_underscores_action": "REJECT_REQUEST",
            "idle_timeout": "300s",
        },
        "http2_protocol_options": {
            "max_concurrent_streams": 256,
            "initial_stream_window_size": 1048576,
            "initial_connection_window_size": 4194304,
        },
        "request_headers_timeout": "10s",
        "stream_idle_timeout": "120s",
        "access_log": access_log(),
        "route_config": {
            "name": "ingress",
            "virtual_hosts": [{
                "name": "inference",
                "domains": ["*"],
                "routes": routes(),
                # The caller's evidence: an allowed request's answer names authz's decision id
                # (the audit record's key), as a denial's does. Absent on routes authz does not
                # decide (public paths), where the request header is absent too.
                "response_headers_to_add": [{
                    "header": {"key": DECISION_ID_HEADER, "value": f"%REQ({DECISION_ID_HEADER})%"},
                    "append_action": "ADD_IF_ABSENT",
                }],
            }],
        },
        "local_reply_config": local_reply_config(),
        "http_filters": http_filters(values),
    }
    if values.get("otlp_addr"):
        hcm["tracing"] = {
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "otel_collector"}, "timeout": "1s"},
                    "service_name": values["service_name"],
                },
            },
            # W3C traceparent/tracestate go upstream and to the ext_authz check, so authz and
            # modelserver spans join the trace Envoy starts.
            "spawn_upstream_span": True,
        }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if tls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                # Optional: callers without a certificate authenticate with a token or API key;
                # a certificate that is presented must chain to client_ca, or the handshake fails.
                "require_client_certificate": False,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [{"certificate_chain": {"filename": tls["cert"]},
                                          "private_key": {"filename": tls["key"]}}],
                    "validation_context": {"trusted_ca": {"filename": tls["client_ca"]}},
                },
            },
        }
    port = tls["port"] if tls else values["listen_port"]
    return {
        "name": "ingress_tls" if tls else "ingress",
        "address": {"socket_address": {"address": values["listen_address"], "port_value": port}},
        # Bounds what one connection may make Envoy buffer (the ext_authz body peek included).
        "per_connection_buffer_limit_bytes": 1048576,
        "filter_chains": [chain],
    }


def stats_listener(values: dict) -> dict:
    """Exposes only /stats/prometheus and /ready of the admin interface (which itself stays on
    loopback, because it can also drain listeners and quit Envoy)."""
    allowed = [
        {"match": {"prefix": ENVOY_METRICS_PATH}, "route": {"cluster": "envoy_admin"}},
        {"match": {"path": ENVOY_READY_PATH}, "route": {"cluster": "envoy_admin"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "stats",
        "codec_type": "AUTO",
        "route_config": {"name": "stats", "virtual_hosts": [{"name": "stats", "domains": ["*"], "routes": allowed}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "name": "stats",
        "address": {"socket_address": {"address": values["listen_address"], "port_value": values["public_stats_port"]}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def clusters(values: dict) -> list[dict]:
    # Only local-origin failures (connect errors, resets, timeouts) eject a model server: its own
    # 503 means "queue full", and ejecting it would just move the overload elsewhere.
    outlier = {"outlier_detection": {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 5,
        "interval": "10s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }}
    out = [
        cluster("authz", values["authz_addr"], "authz_addr", values, http2=True,
                health_check={"grpc_health_check": {}}),
        cluster("modelserver_http", values["modelserver_http"], "modelserver_http", values, http2=False,
                lb="LEAST_REQUEST", health_check={"http_health_check": {"path": MODELSERVER_READY_PATH}}, extra=outlier),
        cluster("modelserver_grpc", values["modelserver_grpc"], "modelserver_grpc", values, http2=True,
                lb="LEAST_REQUEST", health_check={"grpc_health_check": {}}, extra=outlier),
    ]
    if values.get("otlp_addr"):
        out.append(cluster("otel_collector", values["otlp_addr"], "otlp_addr", values, http2=True))
    if values.get("public_stats_port"):
        out.append(cluster("envoy_admin", f"{values['admin_address']}:{values['admin_port']}", "admin", values, http2=False))
    return out


def build_config(values: dict) -> dict:
    """The whole bootstrap for one target's values."""
    listeners = [ingress_listener(values)]
    if values.get("tls"):
        listeners.append(ingress_listener(values, values["tls"]))
    if values.get("public_stats_port"):
        listeners.append(stats_listener(values))
    return {
        "admin": {"address": {"socket_address": {"address": values["admin_address"], "port_value": values["admin_port"]}}},
        # An upper bound on open client connections, so a connection flood cannot exhaust memory.
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 10000,
                },
            }],
        },
        "static_resources": {"listeners": listeners, "clusters": clusters(values)},
    }


# ---------------------------------------------------------------------------------------------
# YAML output (a small emitter: the config is plain dicts, lists, strings, numbers and booleans)
# ---------------------------------------------------------------------------------------------

PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# Strings that any YAML parser reads back as the same string when left unquoted.
PLAIN_STR = re.compile(r"^[A-Za-z/][A-Za-z0-9_./-]*$")
YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    s = str(v)
    if PLAIN_STR.match(s) and s.lower() not in YAML_WORDS:
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def key(k: str) -> str:
    return k if PLAIN_KEY.match(k) else json.dumps(k)


def emit(v, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(v, dict):
        if not v:
            return [pad + "{}"]
        for k, item in v.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key(k)}:")
                lines.extend(emit(item, indent + 2))
            else:
                lines.append(f"{pad}{key(k)}: {scalar_or_empty(item)}")
    elif isinstance(v, list):
        if not v:
            return [pad + "[]"]
        for item in v:
            if isinstance(item, (dict, list)) and item:
                sub = emit(item, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {scalar_or_empty(item)}")
    else:
        lines.append(pad + scalar(v))
    return lines


def scalar_or_empty(v) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return scalar(v)


def render(target: str, values: dict) -> str:
    header = [
        f"# GENERATED by envoy/render.py for the {target!r} target from envoy/values/{target}.json.",
        "# Do not edit: change the source and run `python3 envoy/render.py --all`",
        "# (scripts/validate-deploy.sh fails when this file drifts from its source).",
    ]
    return "\n".join(header + emit(build_config(values))) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

REQUIRED = ("listen_address", "listen_port", "admin_address", "admin_port", "authz_addr",
            "modelserver_http", "modelserver_grpc", "health_check_interval", "service_name")


def load_values(target: str) -> dict:
    path = VALUES_DIR / f"{target}.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RenderError(f"{path}: {e}") from e
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise RenderError(f"{path}: missing {', '.join(missing)}")
    values.setdefault("public_stats_port", None)
    values.setdefault("otlp_addr", None)
    values.setdefault("tls", None)
    return values


def committed_outputs() -> dict[Path, str]:
    out = {RENDERED_DIR / f"{t}.yaml": render(t, load_values(t)) for t in TARGETS}
    out[K8S_CONFIGMAP_COPY] = out[RENDERED_DIR / "k8s.yaml"]
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", action="store_true", help="rewrite every committed render")
    mode.add_argument("--check", action="store_true", help="exit 1 when a committed render drifts from its source")
    mode.add_argument("--target", choices=TARGETS, help="render one target (to --out, default stdout)")
    p.add_argument("--out", help="output file for --target ('-' or absent: stdout)")
    p.add_argument("--listen-address")
    p.add_argument("--listen-port", type=int)
    p.add_argument("--admin-port", type=int)
    p.add_argument("--authz-addr", help="host:port of authz gRPC")
    p.add_argument("--modelserver-http", help="host:port of the model server's OIP REST port (several: comma-separated)")
    p.add_argument("--modelserver-grpc", help="host:port of the model server's OIP gRPC port (several: comma-separated)")
    p.add_argument("--otlp-addr", help="host:port of an OTLP/gRPC collector (enables tracing)")
    p.add_argument("--health-check-interval", help="e.g. 1s")
    p.add_argument("--tls-port", type=int, help="add an HTTPS listener on this port (needs the three files below)")
    p.add_argument("--tls-cert", help="server certificate chain (PEM) for --tls-port")
    p.add_argument("--tls-key", help="server private key (PEM) for --tls-port")
    p.add_argument("--client-ca", help="CA bundle (PEM) that client certificates must chain to")
    args = p.parse_args(argv)
    tls_args = (args.tls_port, args.tls_cert, args.tls_key, args.client_ca)
    if any(a is not None for a in tls_args) and not all(a is not None for a in tls_args):
        p.error("--tls-port, --tls-cert, --tls-key and --client-ca go together")

    overrides = {k: getattr(args, k) for k in ("listen_address", "listen_port", "admin_port", "authz_addr",
                                                "modelserver_http", "modelserver_grpc", "otlp_addr",
                                                "health_check_interval")
                 if getattr(args, k) is not None}
    try:
        if args.all or args.check:
            if overrides or args.out:
                p.error("--all/--check render the committed values only; overrides need --target")
            outputs = committed_outputs()
            if args.all:
                for path, text in outputs.items():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
                    print(f"wrote {path.relative_to(ROOT)}")
                return 0
            drifted = 0
            for path, text in outputs.items():
                current = path.read_text() if path.exists() else ""
                if current != text:
                    drifted += 1
                    rel = str(path.relative_to(ROOT))
                    sys.stdout.writelines(difflib.unified_diff(
                        current.splitlines(True), text.splitlines(True), f"{rel} (committed)", f"{rel} (rendered)"))
                    print(f"DRIFT: {rel} differs from envoy/render.py + envoy/values (run: python3 envoy/render.py --all)")
            if drifted:
                return 1
            print(f"envoy renders up to date ({len(outputs)} files)")
            return 0
        values = load_values(args.target)
        values.update(overrides)
        if args.tls_port is not None:
            values["tls"] = {"port": args.tls_port, "cert": args.tls_cert, "key": args.tls_key, "client_ca": args.client_ca}
        for port_key in ("listen_port", "admin_port"):
            if not 0 < int(values[port_key]) < 65536:
                raise RenderError(f"{port_key}: {values[port_key]} is not a port")
        text = render(args.target, values)
        if args.out and args.out != "-":
            Path(args.out).write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    except RenderError as e:
        print(f"render.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
