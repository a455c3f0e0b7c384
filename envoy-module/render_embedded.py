#!/usr/bin/env python3
"""Render the gateway's Envoy config for the embedded mode: envoy/render.py's config with the
ext_authz filter replaced by the authz dynamic module.

Everything else (listeners, header stripping, routes, clusters, access log) is render.py's own,
so both modes differ only in where the decision is made:

- the `envoy.filters.http.ext_authz` filter becomes a `dynamic_modules` filter loading
  `libauthz_module.so` (by name `authz_module`, found through ENVOY_DYNAMIC_MODULES_SEARCH_PATH)
  with the filter config `{"config": "<authz.toml>"}`;
- routes where ext_authz is disabled (public paths, fixed answers) disable the module instead;
  ext_authz's "no body" per-route settings are dropped: the module reads a body only for gRPC;
- the `authz` cluster is removed: nothing calls out;
- the listeners' per-connection buffer limit is raised to hold the whole first gRPC message the
  module reads (`--max-grpc-message-bytes`, 4 MiB by default) and its frame header.

Usage: render_embedded.py --authz-config PATH [--target local|compose] [render.py's overrides] --out FILE

The compose render is committed (envoy/rendered/compose-embedded.yaml, for compose's `embedded`
profile):
  render_embedded.py --target compose --authz-config /etc/authz/authz.toml \
    --out envoy/rendered/compose-embedded.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "envoy"))

import render  # noqa: E402  (envoy/render.py, imported from its folder)

FILTER_NAME = "authz.embedded"
MODULE_NAME = "authz_module"
DYNAMIC_MODULE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
DISABLED = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}


# The largest first gRPC message the module reads whole before deciding (its default too):
# see DEFAULT_MAX_GRPC_MESSAGE_BYTES in envoy-module/src/engine.rs.
MAX_GRPC_MESSAGE_BYTES = 4 * 1024 * 1024
# Envoy buffers a paused stream's body up to the listener's per-connection buffer limit and then
# stops reading the client (watermark): the limit must hold a whole message and its frame header.
BUFFER_SLACK_BYTES = 64 * 1024


def module_filter(authz_config: str, max_grpc_message_bytes: int) -> dict:
    return {
        "name": FILTER_NAME,
        "typed_config": {
            "@type": DYNAMIC_MODULE_TYPE,
            "dynamic_module_config": {"name": MODULE_NAME},
            "filter_name": "authz",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": json.dumps({"config": authz_config,
                                     "max_grpc_message_bytes": max_grpc_message_bytes}),
            },
        },
    }


def embed(config: dict, authz_config: str,
          max_grpc_message_bytes: int = MAX_GRPC_MESSAGE_BYTES) -> dict:
    """Swaps ext_authz for the module in every listener of a render.py config (in place)."""
    for listener in config["static_resources"]["listeners"]:
        if "per_connection_buffer_limit_bytes" in listener:
            listener["per_connection_buffer_limit_bytes"] = max(
                listener["per_connection_buffer_limit_bytes"],
                max_grpc_message_bytes + BUFFER_SLACK_BYTES)
        for chain in listener.get("filter_chains", []):
            for net_filter in chain.get("filters", []):
                hcm = net_filter.get("typed_config", {})
                if "http_filters" not in hcm:
                    continue
                h2 = hcm.get("http2_protocol_options")
                if h2 and "initial_stream_window_size" in h2:
                    # The client may send a whole message before the module lets any through.
                    h2["initial_stream_window_size"] = max(
                        h2["initial_stream_window_size"],
                        max_grpc_message_bytes + BUFFER_SLACK_BYTES)
                    h2["initial_connection_window_size"] = max(
                        h2.get("initial_connection_window_size", 0),
                        h2["initial_stream_window_size"])
                hcm["http_filters"] = [
                    module_filter(authz_config, max_grpc_message_bytes)
                    if f["name"] == render.EXT_AUTHZ else f
                    for f in hcm["http_filters"]
                ]
                for vhost in hcm.get("route_config", {}).get("virtual_hosts", []):
                    for route in vhost.get("routes", []):
                        per_filter = route.get("typed_per_filter_config", {})
                        ext_authz = per_filter.pop(render.EXT_AUTHZ, None)
                        if ext_authz and ext_authz.get("disabled"):
                            per_filter[FILTER_NAME] = DISABLED
                        if not per_filter:
                            route.pop("typed_per_filter_config", None)
    clusters = config["static_resources"]["clusters"]
    config["static_resources"]["clusters"] = [c for c in clusters if c["name"] != "authz"]
    return config


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authz-config", required=True, help="the authz.toml the module loads")
    p.add_argument("--out", required=True)
    p.add_argument("--max-grpc-message-bytes", type=int, default=MAX_GRPC_MESSAGE_BYTES,
                   help="largest first gRPC message the module reads whole (larger: refused)")
    p.add_argument("--target", choices=("local", "compose"), default="local",
                   help="render.py's values to start from (compose: envoy/rendered/compose-embedded.yaml)")
    p.add_argument("--listen-port", type=int)
    p.add_argument("--admin-port", type=int)
    p.add_argument("--modelserver-http")
    p.add_argument("--modelserver-grpc")
    p.add_argument("--otlp-addr", help="host:port of an OTLP/gRPC collector (enables Envoy's tracing; "
                   "the module's spans join Envoy's, exported by the OTEL_* variables of Envoy's environment)")
    args = p.parse_args(argv)
    values = render.load_values(args.target)
    values.update({k: getattr(args, k) for k in ("listen_port", "admin_port", "modelserver_http",
                                                  "modelserver_grpc", "otlp_addr")
                   if getattr(args, k) is not None})
    config = embed(render.build_config(values), str(Path(args.authz_config).resolve()),
                   args.max_grpc_message_bytes)
    header = ["# GENERATED by envoy-module/render_embedded.py (envoy/render.py, ext_authz -> module)."]
    Path(args.out).write_text("\n".join(header + render.emit(config)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
