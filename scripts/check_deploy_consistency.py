#!/usr/bin/env python3
"""Checks that every deployment artifact agrees with deploy/contract.json and with itself.

What it checks (each failure names the file and what disagrees):
  * ports, health/metrics paths and header names in the Envoy renders, compose.yaml, the rendered
    Kubernetes overlays, the Dockerfiles, the Prometheus config, the Istio resources;
  * Envoy security invariants: the header filter runs before ext_authz, ext_authz fails closed,
    only the contract's public paths reach a backend without a decision, the repository API is
    never routed;
  * the services' own defaults: the contract's ports, paths and header names appear in their sources;
  * custom resources by structure (ServiceMonitor, PrometheusRule, IstioOperator, AuthorizationPolicy);
  * the authz.toml the Kubernetes base ships: contract settings, audit records on stdout (they must
    leave the pod), the demo's tables and policies, no published dev API key (whether its files
    exist in the pod: scripts/check_k8s_authz_config.py);
  * NetworkPolicies by what they admit, evaluated per mode: the plain overlays, and the overlays
    with k8s/istio (sidecars reach istiod, mesh clients reach the model server, its sidecar reaches
    authz; nothing else opens); PeerAuthentication STRICT except the ports whose callers cannot be
    in the mesh (metrics, the gateway's ingress);
  * every alert's runbook exists in docs/operations.md; every workspace member reaches the image build;
  * the model server's drain (compose and Kubernetes): it reads the shipped config, its readiness
    grace lasts as long as Envoy's health check (and the pod's readinessProbe) needs to notice, and
    grace plus drain end before the orchestrator's SIGKILL.

Usage: check_deploy_consistency.py RENDERED_DIR
  RENDERED_DIR holds `kubectl kustomize` output: cpu.yaml, gpu.yaml, istio.yaml.
Needs PyYAML (the tools virtualenv). Exits 1 after listing every problem.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = json.loads((ROOT / "deploy" / "contract.json").read_text())
PORTS = CONTRACT["ports"]
PATHS = CONTRACT["paths"]
HEADERS = CONTRACT["headers"]

problems: list[str] = []
checked = 0


def check(cond: bool, where: str, what: str) -> None:
    global checked
    checked += 1
    if not cond:
        problems.append(f"{where}: {what}")


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---------------------------------------------------------------------------------------------
# Envoy renders
# ---------------------------------------------------------------------------------------------


def hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def cluster_port(cfg: dict, name: str) -> int | None:
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"]
    return None


def check_envoy(target: str) -> None:
    where = f"envoy/rendered/{target}.yaml"
    cfg = yaml.safe_load((ROOT / where).read_text())
    listeners = {l["name"]: l for l in cfg["static_resources"]["listeners"]}
    ingress = listeners.get("ingress")
    check(ingress is not None, where, "no ingress listener")
    if ingress is None:
        return
    check(ingress["address"]["socket_address"]["port_value"] == PORTS["envoy_ingress"], where, "ingress port differs from contract")
    check(cluster_port(cfg, "authz") == PORTS["authz_grpc"], where, "authz cluster port differs from contract")
    check(cluster_port(cfg, "modelserver_http") == PORTS["modelserver_http"], where, "modelserver_http port differs")
    check(cluster_port(cfg, "modelserver_grpc") == PORTS["modelserver_grpc"], where, "modelserver_grpc port differs")
    if target != "local":
        check("stats" in listeners and listeners["stats"]["address"]["socket_address"]["port_value"] == PORTS["envoy_stats"],
              where, f"stats listener must serve {PATHS['envoy_metrics']} on {PORTS['envoy_stats']}")
        check(cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1", where, "admin must listen on loopback only")
        check(cluster_port(cfg, "otel_collector") == PORTS["otlp_grpc"], where, "otel collector port differs")
        check("tracing" in hcm(ingress), where, "tracing not configured")

    h = hcm(ingress)
    check(h["codec_type"] == "AUTO", where, "codec must be AUTO (HTTP/1.1 + h2c)")
    check(h.get("normalize_path") is True and h.get("merge_slashes") is True, where, "path normalisation off")
    check(h.get("path_with_escaped_slashes_action") == "REJECT_REQUEST", where, "escaped slashes not rejected")
    names = [f["name"] for f in h["http_filters"]]
    check(names and names[-1] == "envoy.filters.http.router", where, "router must be the last filter")
    check("envoy.filters.http.header_mutation" in names and "envoy.filters.http.ext_authz" in names
          and names.index("envoy.filters.http.header_mutation") < names.index("envoy.filters.http.ext_authz"),
          where, "client x-authz-* headers must be removed by a filter that runs before ext_authz")
    mutation = next((f for f in h["http_filters"] if f["name"] == "envoy.filters.http.header_mutation"), None)
    if mutation:
        prefixes = [m.get("remove_on_match", {}).get("key_matcher", {}).get("prefix")
                    for m in mutation["typed_config"]["mutations"]["request_mutations"]]
        check(HEADERS["stripped_prefix"] in prefixes, where, f"header filter does not remove {HEADERS['stripped_prefix']}*")
        trailer_prefixes = [m.get("remove_on_match", {}).get("key_matcher", {}).get("prefix")
                            for m in mutation["typed_config"]["mutations"].get("request_trailers_mutations", [])]
        check(HEADERS["stripped_prefix"] in trailer_prefixes, where,
              f"header filter does not remove {HEADERS['stripped_prefix']}* request trailers")
    ext = next((f["typed_config"] for f in h["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"), {})
    check(ext.get("failure_mode_allow") is False, where, "ext_authz must fail closed")
    check(ext.get("encode_raw_headers") is True, where,
          "ext_authz must send headers as sent (encode_raw_headers), so authz sees repeated ones")
    check(ext.get("status_on_error", {}).get("code") == "ServiceUnavailable", where, "status_on_error must be 503")
    check(ext.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name") == "authz", where, "ext_authz must use the authz cluster")
    check(bool(ext.get("grpc_service", {}).get("timeout")), where, "ext_authz needs an explicit timeout")
    body = ext.get("with_request_body", {})
    check(body.get("allow_partial_message") is True and body.get("pack_as_bytes") is True
          and 0 < body.get("max_request_bytes", 0) <= 4096, where, "with_request_body must be a small partial byte peek")

    log_fmt = json.dumps(h.get("access_log", []))
    for header in (HEADERS["principal"], HEADERS["decision_id"]):
        check(f"%REQ({header.upper()})%" in log_fmt, where, f"access log lacks {header}")
    check("%REQ(X-REQUEST-ID)%" in log_fmt, where, "access log lacks the request id")

    public = set(CONTRACT["public_paths"])
    for vh in h["route_config"]["virtual_hosts"]:
        for r in vh["routes"]:
            match = r["match"]
            disabled = (r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {}).get("disabled") is True)
            label = json.dumps(match, sort_keys=True)
            if "route" in r and disabled:
                check(match.get("path") in public, where, f"route {label} reaches a backend without ext_authz")
            if "route" in r:
                check(bool(r["route"].get("timeout")), where, f"route {label} has no timeout")
                m = match.get("prefix") or match.get("path") or ""
                check("repository" not in m.lower(), where, f"route {label} exposes the repository API")
    routed_public = {r["match"].get("path") for vh in h["route_config"]["virtual_hosts"] for r in vh["routes"] if "route" in r}
    check(public <= routed_public, where, f"public paths not routed: {sorted(public - routed_public)}")

    for c in cfg["static_resources"]["clusters"]:
        if c["name"].startswith("modelserver"):
            check(c.get("lb_policy") == "LEAST_REQUEST", where, f"{c['name']} must balance by least request")
            check(bool(c.get("health_checks")), where, f"{c['name']} needs active health checks")
        if c["name"] == "modelserver_http":
            check(c["health_checks"][0].get("http_health_check", {}).get("path") == PATHS["modelserver_ready"],
                  where, "modelserver HTTP health check path differs from contract")


# ---------------------------------------------------------------------------------------------
# compose.yaml
# ---------------------------------------------------------------------------------------------


def check_compose() -> None:
    where = "compose.yaml"
    c = yaml.safe_load((ROOT / where).read_text())
    s = c["services"]
    for name in ("envoy", "authz", "modelserver", "modelserver-gpu", "redis", "prometheus", "grafana", "jaeger"):
        check(name in s, where, f"service {name} missing")
        if name in s:
            check("healthcheck" in s[name], where, f"service {name} has no health check")
    envoy_mount = " ".join(s["envoy"]["volumes"])
    check("./envoy/rendered/compose.yaml:" in envoy_mount, where, "envoy must mount the compose render of envoy/render.py")
    check(f"{PORTS['envoy_ingress']}:{PORTS['envoy_ingress']}" in " ".join(s["envoy"].get("ports", [])), where, "envoy ingress port not published")
    for svc in ("authz", "modelserver", "redis"):
        check(not s[svc].get("ports"), where, f"{svc} must not be published to the host")
    check(PATHS["authz_config"] in s["authz"]["command"], where, "authz --config path differs from contract")
    check(any(PATHS["authz_audit_dir"] in v for v in s["authz"]["volumes"]), where, "audit volume not mounted at the contract path")
    check(f"http://127.0.0.1:{PORTS['authz_admin']}{PATHS['authz_readyz']}" in s["authz"]["healthcheck"]["test"], where, "authz health check differs")
    for svc in ("modelserver", "modelserver-gpu"):
        cmd = s[svc]["command"]
        check(cmd[cmd.index("--http-port") + 1] == str(PORTS["modelserver_http"])
              and cmd[cmd.index("--grpc-port") + 1] == str(PORTS["modelserver_grpc"])
              and cmd[cmd.index("--metrics-port") + 1] == str(PORTS["modelserver_metrics"])
              and cmd[cmd.index("--model-repository") + 1] == PATHS["model_repository"], where, f"{svc} flags differ from contract")
        check(f"http://127.0.0.1:{PORTS['modelserver_http']}{PATHS['modelserver_ready']}" in s[svc]["healthcheck"]["test"],
              where, f"{svc} health check differs")
    for svc in ("modelserver", "modelserver-gpu"):
        cmd = s[svc]["command"]
        config = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
        check(config == PATHS["modelserver_config"], where, f"{svc} --config path differs from contract")
        check(f"./deploy/compose/modelserver.toml:{PATHS['modelserver_config']}:ro" in s[svc].get("volumes", []),
              where, f"{svc} must mount deploy/compose/modelserver.toml read-only at the contract path")
        check_drain_window("deploy/compose/modelserver.toml", (ROOT / "deploy/compose/modelserver.toml").read_text(),
                           envoy_notice_seconds("compose"), seconds(s[svc].get("stop_grace_period", "10s")),
                           f"compose.yaml {svc} stop_grace_period")
    gpu = s["modelserver-gpu"]
    check("gpu" in gpu.get("profiles", []), where, "modelserver-gpu must be in the gpu profile")
    devices = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    check(any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), where, "no NVIDIA device reserved")
    check("modelserver" in gpu.get("networks", {}).get("default", {}).get("aliases", []), where, "GPU replica must answer to `modelserver`")

    # Span export: the services speak OTLP/HTTP JSON, so they point at the collector's HTTP port.
    for svc in ("authz", "modelserver", "modelserver-gpu"):
        env = s[svc].get("environment", {})
        check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == f"http://jaeger:{PORTS['otlp_http']}"
              and env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "http/json", where,
              f"{svc} must export spans as OTLP/HTTP JSON to jaeger:{PORTS['otlp_http']}")

    check(s["authz"]["depends_on"].get("authz-dev-init", {}).get("condition") == "service_completed_successfully",
          where, "authz must wait for the dev key generation")
    check_compose_authz_config()

    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    check(jobs["authz"]["dns_sd_configs"][0]["port"] == PORTS["authz_admin"], "deploy/prometheus/prometheus.yml", "authz scrape port")
    check(jobs["modelserver"]["dns_sd_configs"][0]["port"] == PORTS["modelserver_metrics"], "deploy/prometheus/prometheus.yml", "modelserver scrape port")
    check(jobs["envoy"]["static_configs"][0]["targets"] == [f"envoy:{PORTS['envoy_stats']}"]
          and jobs["envoy"]["metrics_path"] == PATHS["envoy_metrics"], "deploy/prometheus/prometheus.yml", "envoy scrape target")


def check_compose_authz_config() -> None:
    """deploy/compose/authz.toml is config/authz.toml plus container settings: the shared tables
    must be identical, and the container settings must match the contract."""
    import tomllib

    where = "deploy/compose/authz.toml"
    compose_cfg = tomllib.loads((ROOT / where).read_text())
    demo_path = ROOT / "config" / "authz.toml"
    check(demo_path.exists(), "config/authz.toml", "the demo config (source of deploy/compose/authz.toml) is missing")
    if demo_path.exists():
        demo = tomllib.loads(demo_path.read_text())
        for table in ("principals", "models"):
            check(compose_cfg.get(table) == demo.get(table), where, f"[{table}] differs from config/authz.toml")
        for table in ("request", "authn"):
            a, b = dict(compose_cfg.get(table, {})), dict(demo.get(table, {}))
            # Only file paths may differ (container paths).
            for issuer in a.get("issuers", []) + b.get("issuers", []):
                issuer.pop("jwks_file", None)
            check(a == b, where, f"[{table}] differs from config/authz.toml (other than file paths)")
        check(Path(compose_cfg["policy"]["schema"]).name == Path(demo["policy"]["schema"]).name
              and [Path(f).name for f in compose_cfg["policy"]["files"]] == [Path(f).name for f in demo["policy"]["files"]],
              where, "[policy] files differ from config/authz.toml")
    server = compose_cfg.get("server", {})
    check(server.get("grpc_addr") == f"0.0.0.0:{PORTS['authz_grpc']}", where, "grpc_addr must listen on the contract port of every interface")
    check(server.get("admin_addr") == f"0.0.0.0:{PORTS['authz_admin']}", where, "admin_addr must listen on the contract port of every interface")
    check(compose_cfg.get("rate_limit", {}).get("redis_url") == f"redis://redis:{PORTS['redis']}", where, "redis_url must name the compose Redis")
    audit_path = compose_cfg.get("audit", {}).get("path", "")
    check(audit_path.rstrip("/") == PATHS["authz_audit_dir"] and audit_path.endswith("/"), where,
          "[audit] path must be the contract's audit directory (with a trailing slash: a directory)")
    check(set(compose_cfg.get("request", {}).get("public_paths", [])) == set(CONTRACT["public_paths"]), where,
          "authz's public paths differ from the gateway's (deploy/contract.json)")


# ---------------------------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------------------------


def check_dockerfiles() -> None:
    expect = {
        "authz.Dockerfile": ([PORTS["authz_grpc"], PORTS["authz_admin"]], f"http://127.0.0.1:{PORTS['authz_admin']}{PATHS['authz_readyz']}"),
        "modelserver.Dockerfile": ([PORTS["modelserver_http"], PORTS["modelserver_grpc"], PORTS["modelserver_metrics"]],
                                   f"http://127.0.0.1:{PORTS['modelserver_http']}{PATHS['modelserver_ready']}"),
        "modelserver-gpu.Dockerfile": ([PORTS["modelserver_http"], PORTS["modelserver_grpc"], PORTS["modelserver_metrics"]],
                                       f"http://127.0.0.1:{PORTS['modelserver_http']}{PATHS['modelserver_ready']}"),
    }
    for name, (ports, probe) in expect.items():
        where = f"deploy/docker/{name}"
        text = (ROOT / where).read_text()
        expose = re.search(r"^EXPOSE (.+)$", text, re.M)
        check(expose is not None and sorted(int(p) for p in expose.group(1).split()) == sorted(ports), where, "EXPOSE differs from contract")
        check(probe in text, where, f"HEALTHCHECK does not probe {probe}")
        check(re.search(r"^USER 65532:65532$", text, re.M) is not None, where, "must run as uid 65532")
        check(" --release " in text, where, "must be a release build")
    dockerignore = (ROOT / ".dockerignore").read_text()
    cargo = (ROOT / "Cargo.toml").read_text()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", cargo)
    for m in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        check(f"!{m}/" in dockerignore, ".dockerignore", f"workspace member {m} is not sent to the image build (cargo would fail)")


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def named_ports(c: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def check_k8s(rendered: Path, overlay: str) -> None:
    where = f"k8s/overlays/{overlay} (rendered)"
    docs = load_all(rendered / f"{overlay}.yaml")
    deps = by_kind(docs, "Deployment")
    svcs = by_kind(docs, "Service")
    for name in ("authz", "modelserver", "gateway", "redis"):
        check(name in deps and name in svcs, where, f"{name} Deployment and Service expected")
    if not all(n in deps for n in ("authz", "modelserver", "gateway", "redis")):
        return
    for name, dep in deps.items():
        pod = dep["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              where, f"{name}: pod must be runAsNonRoot with seccomp RuntimeDefault")
        check(pod.get("automountServiceAccountToken") is False, where, f"{name}: service account token mounted")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("capabilities", {}).get("drop") == ["ALL"], where, f"{name}/{c['name']}: container security context")
            check("limits" in c.get("resources", {}), where, f"{name}/{c['name']}: no resource limits")

    authz = deps["authz"]
    check(authz["spec"]["replicas"] >= 2, where, "authz needs 2+ replicas")
    a = container(authz)
    check(named_ports(a) == {"grpc": PORTS["authz_grpc"], "admin": PORTS["authz_admin"]}, where, "authz container ports")
    check(a["readinessProbe"].get("grpc", {}).get("port") == PORTS["authz_grpc"]
          and a["livenessProbe"].get("grpc", {}).get("port") == PORTS["authz_grpc"], where, "authz needs gRPC readiness/liveness probes")
    check(PATHS["authz_config"] in a["args"], where, "authz --config path")
    check(any(v["mountPath"] == PATHS["authz_audit_dir"] for v in a["volumeMounts"]), where, "authz audit dir not mounted")
    check(any(d["spec"]["scaleTargetRef"]["name"] == "authz" for d in by_kind(docs, "HorizontalPodAutoscaler").values()), where, "authz HPA")
    check("authz" in by_kind(docs, "PodDisruptionBudget"), where, "authz PDB")
    check_k8s_authz_config(docs, authz, where)

    m = container(deps["modelserver"])
    check(named_ports(m) == {"http": PORTS["modelserver_http"], "grpc": PORTS["modelserver_grpc"], "metrics": PORTS["modelserver_metrics"]},
          where, "modelserver container ports")
    check(m["readinessProbe"].get("httpGet", {}).get("path") == PATHS["modelserver_ready"], where, "modelserver readiness path")
    args = m["args"]
    check(args[args.index("--http-port") + 1] == str(PORTS["modelserver_http"])
          and args[args.index("--grpc-port") + 1] == str(PORTS["modelserver_grpc"])
          and args[args.index("--metrics-port") + 1] == str(PORTS["modelserver_metrics"]), where, "modelserver flags")
    check_k8s_modelserver_config(docs, deps["modelserver"], where)
    gpu_limit = m.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if overlay == "gpu":
        check(gpu_limit == "1", where, "GPU overlay must request nvidia.com/gpu")
        pod = deps["modelserver"]["spec"]["template"]["spec"]
        check(bool(pod.get("nodeSelector")) and any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])),
              where, "GPU overlay needs a node selector and the nvidia.com/gpu toleration")
        check("gpu" in m["image"], where, "GPU overlay must use the GPU image")
    else:
        check(gpu_limit is None, where, "CPU overlay must not request GPUs")

    g = container(deps["gateway"])
    check(named_ports(g) == {"http": PORTS["envoy_ingress"], "stats": PORTS["envoy_stats"]}, where, "gateway container ports")
    check(g["readinessProbe"]["httpGet"]["path"] == PATHS["envoy_ready"], where, "gateway readiness path")
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("envoy-config")]
    k8s_render = (ROOT / "envoy/rendered/k8s.yaml").read_text()
    check(len(cms) == 1 and cms[0]["data"].get("envoy.yaml") == k8s_render, where, "gateway ConfigMap is not the k8s render of envoy/render.py")
    vols = deps["gateway"]["spec"]["template"]["spec"]["volumes"]
    check(cms and vols[0]["configMap"]["name"] == cms[0]["metadata"]["name"], where, "gateway does not mount the envoy ConfigMap")

    # Services: named ports matching the containers; the Envoy render's DNS names resolve to them.
    for name, dep in (("authz", authz), ("modelserver", deps["modelserver"]), ("gateway", deps["gateway"])):
        sp = {p["name"]: p["port"] for p in svcs[name]["spec"]["ports"]}
        check(sp == named_ports(container(dep)), where, f"Service {name} ports differ from its container ports")
    check(svcs["redis"]["spec"]["ports"][0]["port"] == PORTS["redis"], where, "redis port")
    for name in ("authz", "modelserver"):
        check(svcs[name]["spec"].get("clusterIP") == "None", where, f"Service {name} must be headless for Envoy's per-pod balancing")
    values = json.loads((ROOT / "envoy/values/k8s.json").read_text())
    ns = next(d for d in docs if d.get("kind") == "Namespace")["metadata"]["name"]
    check(values["authz_addr"] == f"authz.{ns}.svc.cluster.local:{PORTS['authz_grpc']}", "envoy/values/k8s.json", "authz_addr differs from the k8s Service")
    check(values["modelserver_http"] == f"modelserver.{ns}.svc.cluster.local:{PORTS['modelserver_http']}", "envoy/values/k8s.json", "modelserver_http differs")
    check(values["modelserver_grpc"] == f"modelserver.{ns}.svc.cluster.local:{PORTS['modelserver_grpc']}", "envoy/values/k8s.json", "modelserver_grpc differs")

    # NetworkPolicies: only the gateway reaches authz and modelserver; only authz reaches redis.
    nps = by_kind(docs, "NetworkPolicy")
    check("default-deny" in nps and nps["default-deny"]["spec"]["podSelector"] == {}, where, "default-deny NetworkPolicy missing")

    def peers(np_name: str, port: int) -> list[dict]:
        out = []
        for rule in nps.get(np_name, {}).get("spec", {}).get("ingress", []):
            if any(p.get("port") == port for p in rule.get("ports", [])):
                out.extend(rule.get("from", [{"anywhere": True}]))
        return out

    gateway_only = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]
    check(peers("authz", PORTS["authz_grpc"]) == gateway_only, where, "authz gRPC must admit only the gateway")
    check(peers("modelserver", PORTS["modelserver_http"]) == gateway_only and peers("modelserver", PORTS["modelserver_grpc"]) == gateway_only,
          where, "modelserver must admit only the gateway")
    check(peers("redis", PORTS["redis"]) == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "authz"}}}], where, "redis must admit only authz")

    # Span export: the services' OTLP/HTTP endpoint, and the egress that lets it through.
    def egress_ports(np_name: str) -> set[int]:
        return {p.get("port") for rule in nps.get(np_name, {}).get("spec", {}).get("egress", []) for p in rule.get("ports", [])}

    for name in ("authz", "modelserver"):
        env = {e["name"]: e.get("value") for e in container(deps[name]).get("env", [])}
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
        check(endpoint.endswith(f":{PORTS['otlp_http']}") and env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "http/json",
              where, f"{name} must export spans as OTLP/HTTP JSON to the collector's port {PORTS['otlp_http']}")
        check(PORTS["otlp_http"] in egress_ports(name), where, f"{name} NetworkPolicy must allow egress to OTLP/HTTP {PORTS['otlp_http']}")
    check(PORTS["otlp_grpc"] in egress_ports("gateway"), where, f"gateway NetworkPolicy must allow egress to OTLP/gRPC {PORTS['otlp_grpc']}")

    # Custom resources, by structure.
    for name, sm in by_kind(docs, "ServiceMonitor").items():
        sel = sm["spec"]["selector"]["matchLabels"]
        target = [s for s in svcs.values() if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        check(len(target) == 1, where, f"ServiceMonitor {name} selects {len(target)} Services")
        for ep in sm["spec"]["endpoints"]:
            check(bool(target) and ep["port"] in {p["name"] for p in target[0]["spec"]["ports"]}, where, f"ServiceMonitor {name} port {ep['port']} not on the Service")
    expected_paths = {"authz": PATHS["authz_metrics"], "modelserver": PATHS["modelserver_metrics"], "gateway": PATHS["envoy_metrics"]}
    for name, path in expected_paths.items():
        sm = by_kind(docs, "ServiceMonitor").get(name)
        check(sm is not None and sm["spec"]["endpoints"][0]["path"] == path, where, f"ServiceMonitor {name} path")
    rules = by_kind(docs, "PrometheusRule")
    check(len(rules) == 1, where, "one PrometheusRule expected")
    for pr in rules.values():
        for g_ in pr["spec"]["groups"]:
            check(bool(g_.get("name")) and bool(g_.get("rules")), where, "PrometheusRule group needs a name and rules")
            for r in g_["rules"]:
                check(("alert" in r) != ("record" in r) and isinstance(r.get("expr"), str), where, f"rule {r.get('alert') or r.get('record')} malformed")


def seconds(duration: str) -> float:
    """`5s`, `250ms`, `1m` (Envoy and compose durations) in seconds."""
    m = re.fullmatch(r"([0-9.]+)(ms|s|m)", duration.strip())
    if not m:
        raise ValueError(f"unreadable duration {duration!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]


def envoy_notice_seconds(target: str) -> float:
    """How long the Envoy render for `target` may keep routing new requests to a model server whose
    health turned NOT_SERVING: its active health check's interval times its unhealthy threshold,
    the longest over the model server clusters."""
    cfg = yaml.safe_load((ROOT / f"envoy/rendered/{target}.yaml").read_text())
    notice = 0.0
    for c in cfg["static_resources"]["clusters"]:
        if c["name"].startswith("modelserver"):
            for hc in c.get("health_checks", []):
                notice = max(notice, seconds(hc["interval"]) * hc.get("unhealthy_threshold", 1))
    return notice


def check_drain_window(where: str, toml_text: str, notice_s: float, kill_after_s: float, killer: str) -> None:
    """The model server's `[shutdown]` in `toml_text`: readiness stays off (while requests are still
    served) for at least `notice_s`, and grace plus drain end before `kill_after_s`."""
    import tomllib

    shutdown = tomllib.loads(toml_text).get("shutdown", {})
    grace_s = shutdown.get("readiness_grace_ms", 500) / 1000
    drain_s = shutdown.get("drain_timeout_ms", 30_000) / 1000
    check(grace_s >= notice_s, where,
          f"[shutdown] readiness_grace_ms ({grace_s:g} s) is shorter than the {notice_s:g} s the balancer needs to notice a drain")
    check(grace_s + drain_s <= kill_after_s, where,
          f"readiness grace + drain ({grace_s + drain_s:g} s) outlast {killer} ({kill_after_s:g} s)")


def check_k8s_modelserver_config(docs: list[dict], dep: dict, where: str) -> None:
    """The model server reads the base's modelserver.toml (ConfigMap modelserver-config), and its
    drain fits Envoy's health check, the pod's readinessProbe and terminationGracePeriodSeconds."""
    config_dir, config_name = PATHS["modelserver_config"].rsplit("/", 1)
    m = container(dep)
    args = m["args"]
    check("--config" in args and args[args.index("--config") + 1] == PATHS["modelserver_config"], where,
          "modelserver --config path differs from contract")
    pod = dep["spec"]["template"]["spec"]
    mount = next((v for v in m.get("volumeMounts", []) if v["mountPath"] == config_dir), None)
    volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), {})
    cm_name = volume.get("configMap", {}).get("name") or ""
    cm = by_kind(docs, "ConfigMap").get(cm_name)
    check(mount is not None and mount.get("readOnly") is True and cm is not None and cm_name.startswith("modelserver-config-"),
          where, f"modelserver must mount the base's generated ConfigMap modelserver-config read-only at {config_dir}")
    if cm is None or config_name not in cm.get("data", {}):
        check(False, where, f"no {config_name} for the model server")
        return
    probe = m.get("readinessProbe", {})
    notice = max(envoy_notice_seconds("k8s"), probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))
    check_drain_window(f"k8s/base/modelserver/config/{config_name}, as {where}", cm["data"][config_name], notice,
                       pod.get("terminationGracePeriodSeconds", 30), "terminationGracePeriodSeconds")


def check_k8s_authz_config(docs: list[dict], authz: dict, where: str) -> None:
    """The authz.toml the base ships (ConfigMap authz-config): container settings from the contract,
    audit records leaving the pod, the demo's tables and policies, and none of the demo's published
    API keys. (Whether its paths exist in the pod is scripts/check_k8s_authz_config.py's job: it runs
    `authz check-config` on the files as mounted.)"""
    import tomllib

    config_dir, config_name = PATHS["authz_config"].rsplit("/", 1)
    pod = authz["spec"]["template"]["spec"]
    mount = next((m for m in container(authz).get("volumeMounts", []) if m["mountPath"] == config_dir), None)
    volume = next((v for v in pod.get("volumes", []) if mount and v["name"] == mount["name"]), {})
    cm_name = volume.get("configMap", {}).get("name")
    cm = by_kind(docs, "ConfigMap").get(cm_name or "")
    check(mount is not None and mount.get("readOnly") is True and cm is not None, where,
          f"authz must mount a ConfigMap of the render read-only at {config_dir}")
    if cm is None:
        return
    check(cm_name.startswith("authz-config-"), where, "the authz ConfigMap must come from the base's configMapGenerator (hashed name, so changes roll the pods)")
    data = cm.get("data", {})
    check(config_name in data, where, f"ConfigMap {cm_name} has no {config_name}")
    if config_name not in data:
        return
    cfg = tomllib.loads(data[config_name])
    cfg_where = f"k8s/base/authz/config/authz.toml, as {where}"
    server = cfg.get("server", {})
    check(server.get("grpc_addr") == f"0.0.0.0:{PORTS['authz_grpc']}" and server.get("admin_addr") == f"0.0.0.0:{PORTS['authz_admin']}",
          cfg_where, "grpc_addr/admin_addr must listen on the contract ports of every interface")
    redis = by_kind(docs, "Service").get("redis")
    check(redis is not None and cfg.get("rate_limit", {}).get("redis_url") == f"redis://redis:{PORTS['redis']}", cfg_where,
          "redis_url must name the base's redis Service")
    audit = cfg.get("audit", {})
    check(audit.get("path") == PATHS["authz_audit_dir"] + "/", cfg_where, "[audit] path must be the contract's audit directory (trailing slash)")
    check(audit.get("stdout") is True, cfg_where,
          "[audit] stdout must be true: the audit volume is an emptyDir, so the container log is the record that leaves the pod")
    check(audit.get("file", True) is True, cfg_where, "[audit] file must stay on (the hash-chained file `authz audit verify` reads)")
    check(set(cfg.get("request", {}).get("public_paths", [])) == set(CONTRACT["public_paths"]), cfg_where,
          "authz's public paths differ from the gateway's (deploy/contract.json)")
    demo = tomllib.loads((ROOT / "config/authz.toml").read_text())
    for table in ("request", "models"):
        check(cfg.get(table) == demo.get(table), cfg_where, f"[{table}] differs from config/authz.toml")
    policy = cfg.get("policy", {})
    for path in [policy.get("schema", "")] + policy.get("files", []):
        name = path.rsplit("/", 1)[-1]
        source = ROOT / "config/policies" / name
        check(source.exists() and data.get(name) == source.read_text(), cfg_where,
              f"policy file {name} is not in the ConfigMap as a copy of config/policies/{name}")
    dev_keys = {k["sha256"] for k in demo.get("authn", {}).get("api_keys", [])}
    shipped = {k.get("sha256") for k in cfg.get("authn", {}).get("api_keys", [])}
    check(not (dev_keys & shipped), cfg_where, "ships a demo API key (its plaintext is published in config/README.md)")


# ---------------------------------------------------------------------------------------------
# NetworkPolicy reachability: which connections the rendered policies admit, mode by mode
# ---------------------------------------------------------------------------------------------


class Peer:
    """One end of a connection: a pod with its labels in a namespace with its labels."""

    def __init__(self, name: str, namespace: str, labels: dict[str, str]) -> None:
        self.name, self.namespace, self.labels = name, namespace, labels
        # Kubernetes sets this label on every namespace; the policies select namespaces by it.
        self.namespace_labels = {"kubernetes.io/metadata.name": namespace}

    def __repr__(self) -> str:
        return f"{self.name} ({self.namespace})"


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions; {} selects everything."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        op, key, values = e["operator"], e["key"], e.get("values", [])
        if not {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
                "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[op]():
            return False
    return True


def peer_matches(rule_peer: dict, peer: Peer, policy_ns: str) -> bool:
    """A NetworkPolicyPeer: podSelector alone means the policy's namespace; ipBlock never matches a
    pod here (the policies use none for pods)."""
    if "ipBlock" in rule_peer:
        return False
    ns_sel, pod_sel = rule_peer.get("namespaceSelector"), rule_peer.get("podSelector")
    ns_ok = selects(ns_sel, peer.namespace_labels) if ns_sel is not None else peer.namespace == policy_ns
    return ns_ok and (pod_sel is None or selects(pod_sel, peer.labels))


def port_matches(rule_ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    return any(p.get("protocol", "TCP") == protocol
               and ("port" not in p or p["port"] == port or (p.get("endPort") and p["port"] <= port <= p["endPort"]))
               for p in rule_ports)


def admitted(policies: list[dict], namespace: str, subject: Peer, other: Peer, port: int, protocol: str, direction: str) -> bool:
    """Whether `subject`'s policies let it talk to `other` (direction Ingress: other -> subject;
    Egress: subject -> other). A pod no policy isolates in that direction is open."""
    if subject.namespace != namespace:
        return True  # another namespace's policies are its owner's business
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [np for np in policies if selects(np["spec"]["podSelector"], subject.labels)
                 and direction in np["spec"].get("policyTypes", ["Ingress"] + (["Egress"] if "egress" in np["spec"] else []))]
    if not isolating:
        return True
    return any(port_matches(rule.get("ports"), port, protocol)
               and (not rule.get(peers_key) or any(peer_matches(rp, other, namespace) for rp in rule[peers_key]))
               for np in isolating for rule in np["spec"].get(key) or [])


def reachable(policies: list[dict], namespace: str, src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    """Both ends must admit the connection: the source's egress and the destination's ingress."""
    return (admitted(policies, namespace, src, dst, port, protocol, "Egress")
            and admitted(policies, namespace, dst, src, port, protocol, "Ingress"))


def check_network_modes(rendered: Path) -> None:
    """The NetworkPolicies of each mode admit exactly what that mode needs. Plain: the overlay's
    policies. Mesh: the overlay's plus k8s/istio's (they are applied together), with every pod of
    the namespace carrying the label Istio's injector adds to pods with a sidecar."""
    overlay = load_all(rendered / "cpu.yaml")
    istio = load_all(rendered / "istio.yaml")
    ns = next(d for d in overlay if d.get("kind") == "Namespace")["metadata"]["name"]
    sidecar = {"security.istio.io/tlsMode": "istio"}

    def workload(name: str, meshed: bool) -> Peer:
        return Peer(name, ns, {"app.kubernetes.io/name": name, **(sidecar if meshed else {})})

    istiod = Peer("istiod", "istio-system", {"app": "istiod", "istio.io/rev": "default"})
    kube_dns = Peer("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
    prometheus = Peer("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    mesh_client = Peer("mesh client", "apps", {"app": "client", **sidecar})
    plain_client = Peer("client without sidecar", "apps", {"app": "client"})
    metrics = {"authz": PORTS["authz_admin"], "modelserver": PORTS["modelserver_metrics"], "gateway": PORTS["envoy_stats"]}
    model_ports = (PORTS["modelserver_http"], PORTS["modelserver_grpc"])

    for mode, policies in (("plain", by_kind(overlay, "NetworkPolicy")), ("istio", {**by_kind(overlay, "NetworkPolicy"), **by_kind(istio, "NetworkPolicy")})):
        where = "k8s/overlays/cpu (rendered)" if mode == "plain" else "k8s/overlays/cpu + k8s/istio (rendered)"
        nps = list(policies.values())
        meshed = mode == "istio"
        w = {n: workload(n, meshed) for n in ("gateway", "authz", "modelserver", "redis")}

        def expect(src: Peer, dst: Peer, port: int, allowed: bool, why: str, protocol: str = "TCP") -> None:
            check(reachable(nps, ns, src, dst, port, protocol) == allowed, where,
                  f"{mode} mode: {src} -> {dst}:{port}/{protocol} must be {'allowed' if allowed else 'denied'} ({why})")

        # The architecture's paths, in both modes.
        expect(w["gateway"], w["authz"], PORTS["authz_grpc"], True, "Envoy asks authz")
        for port in model_ports:
            expect(w["gateway"], w["modelserver"], port, True, "Envoy forwards allowed requests")
        expect(w["authz"], w["redis"], PORTS["redis"], True, "rate-limit counters")
        for name, port in metrics.items():
            expect(prometheus, w[name], port, True, "Prometheus scrapes the metrics port")
        for name in w:
            for proto in ("UDP", "TCP"):
                expect(w[name], kube_dns, 53, True, "name resolution", proto)
        # Never, in either mode.
        expect(w["gateway"], w["redis"], PORTS["redis"], False, "only authz holds counters")
        expect(mesh_client, w["authz"], PORTS["authz_grpc"], False, "only the gateway and the model server's sidecar ask authz")
        expect(mesh_client, w["redis"], PORTS["redis"], False, "only authz holds counters")
        expect(mesh_client, w["modelserver"], PORTS["modelserver_metrics"], False, "metrics are for the monitoring namespace")
        for port in model_ports:
            expect(plain_client, w["modelserver"], port, False, "only the gateway, or a mesh client whose request the sidecar sends to authz")
        # What differs between the modes.
        for name in w:
            expect(w[name], istiod, 15012, meshed, "a sidecar's xDS and certificates; no sidecar, no need")
            expect(w[name], istiod, 15010, False, "plaintext xDS: sidecars use 15012")
        for port in model_ports:
            expect(mesh_client, w["modelserver"], port, meshed, "mesh clients call the model server through its sidecar, which asks authz")
        expect(w["modelserver"], w["authz"], PORTS["authz_grpc"], meshed, "the model server's sidecar makes the CUSTOM policy's ext_authz call")

    # The mesh paths come from k8s/istio itself, not from the plain base.
    istio_nps = list(by_kind(istio, "NetworkPolicy").values())
    check(any(np["spec"]["podSelector"] == {} and reachable(istio_nps, ns, workload("any", True), istiod, 15012)
              for np in istio_nps), "k8s/istio", "no NetworkPolicy lets every sidecar of the namespace reach istiod:15012")


def check_istio(rendered: Path) -> None:
    where = "k8s/istio"
    docs = load_all(rendered / "istio.yaml")
    op = yaml.safe_load((ROOT / "k8s/istio/istio-operator.yaml").read_text())
    providers = {p["name"]: p for p in op["spec"]["meshConfig"]["extensionProviders"]}
    for p in providers.values():
        grpc = p.get("envoyExtAuthzGrpc")
        check(grpc is not None, where, f"provider {p['name']} must be envoyExtAuthzGrpc")
        if grpc:
            check(grpc["port"] == PORTS["authz_grpc"] and grpc["service"].startswith("authz."), where, "provider must point at authz:9001")
            check(grpc.get("failOpen") is False, where, "provider must fail closed")
            body = grpc.get("includeRequestBodyInCheck", {})
            check(body.get("packAsBytes") is True and body.get("allowPartialMessage") is True, where, "provider must send the body peek as bytes")
    pols = by_kind(docs, "AuthorizationPolicy")
    custom = [p for p in pols.values() if p["spec"].get("action") == "CUSTOM"]
    check(len(custom) == 1, where, "one CUSTOM AuthorizationPolicy expected")
    for p in custom:
        check(p["spec"]["provider"]["name"] in providers, where, "CUSTOM policy names an unknown provider")
        check(p["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "modelserver"}, where, "CUSTOM policy must select the model server")
        not_paths = set(p["spec"]["rules"][0]["to"][0]["operation"]["notPaths"])
        check(not_paths == set(CONTRACT["public_paths"]), where, "CUSTOM policy's public paths differ from the contract (and the gateway)")
    for p in pols.values():
        check(p["spec"].get("action") in {"ALLOW", "DENY", "AUDIT", "CUSTOM"}, where, f"policy {p['metadata']['name']}: bad action")
    check_peer_authentication(rendered, docs)


def check_peer_authentication(rendered: Path, docs: list[dict]) -> None:
    """STRICT mTLS in the namespace, loosened (PERMISSIVE) only on the ports whose callers cannot be
    in the mesh: the metrics ports (Prometheus) and the gateway's ingress (clients outside the
    cluster). Each of those must be loosened, or scraping and ingress break in mesh mode."""
    where = "k8s/istio/peerauthentication.yaml"
    pas = by_kind(docs, "PeerAuthentication")
    default = [p for p in pas.values() if not p["spec"].get("selector")]
    check(len(default) == 1 and default[0]["spec"].get("mtls", {}).get("mode") == "STRICT", where,
          "one namespace-wide PeerAuthentication with mTLS STRICT expected")
    deps = by_kind(load_all(rendered / "cpu.yaml"), "Deployment")
    loosen = {"authz": {PORTS["authz_admin"]}, "modelserver": {PORTS["modelserver_metrics"]},
              "gateway": {PORTS["envoy_stats"], PORTS["envoy_ingress"]}}
    for name, dep in deps.items():
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        own = [p for p in pas.values() if p["spec"].get("selector") and selects(p["spec"]["selector"], pod_labels)]
        check(len(own) <= 1, where, f"{name}: several PeerAuthentications select it (Istio picks the oldest)")
        spec = own[0]["spec"] if own else {}
        check(spec.get("mtls", {}).get("mode", "STRICT") in ("STRICT", "UNSET"), where, f"{name}: workload mTLS must stay STRICT")
        port_modes = {int(k): v.get("mode") for k, v in spec.get("portLevelMtls", {}).items()}
        for port in named_ports(container(dep)).values():
            mode = port_modes.get(port, "STRICT")
            if port in loosen.get(name, set()):
                check(mode == "PERMISSIVE", where,
                      f"{name}: port {port} must be PERMISSIVE (its callers are outside the mesh: under STRICT they are refused)")
            else:
                check(mode == "STRICT", where, f"{name}: port {port} must stay STRICT (only meshed callers reach it)")
        check(set(port_modes) <= set(named_ports(container(dep)).values()), where, f"{name}: portLevelMtls names a port the pod does not serve")


# ---------------------------------------------------------------------------------------------
# Services' defaults, runbooks
# ---------------------------------------------------------------------------------------------


def source_text(crate: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((ROOT / crate / "src").rglob("*.rs")))


def mentions_path(source: str, path: str) -> bool:
    """A route path appears either literally or as its segments matched in order
    (`["v2", "health", "live"]`, as a router that matches segment slices writes it)."""
    segments = [p for p in path.split("/") if p]
    return path in source or ", ".join(f'"{p}"' for p in segments) in source


def check_service_defaults() -> None:
    authz = source_text("authz")
    for what, needle in (("principal header", HEADERS["principal"]), ("decision id header", HEADERS["decision_id"]),
                         ("gRPC port", str(PORTS["authz_grpc"])), ("admin port", str(PORTS["authz_admin"])),
                         ("readiness path", PATHS["authz_readyz"]), ("liveness path", PATHS["authz_healthz"]),
                         ("metrics path", PATHS["authz_metrics"]),
                         ("access reason header", HEADERS["access_reason"]), ("API key header", HEADERS["api_key"])):
        check(needle in authz, "authz/src", f"{what} {needle!r} (deploy/contract.json) not found in the service's source")
    ms = source_text("modelserver")
    for what, path in (("ready path", PATHS["modelserver_ready"]), ("live path", PATHS["modelserver_live"])):
        check(mentions_path(ms, path), "modelserver/src", f"{what} {path!r} (deploy/contract.json) not found in the service's source")
    for what, needle in (("--http-port", "http_port"), ("--grpc-port", "grpc_port"), ("--metrics-port", "metrics_port"),
                         ("--model-repository", "model_repository"), ("ORT_DYLIB_PATH", "ORT_DYLIB_PATH")):
        check(needle in ms, "modelserver/src", f"{what} {needle!r} (deploy/contract.json) not found in the service's source")


def check_telemetry_defaults() -> None:
    src = source_text("telemetry")
    for what, needle in (("OTLP traces path", PATHS["otlp_traces"]), ("endpoint variable", "OTEL_EXPORTER_OTLP_ENDPOINT"),
                         ("service name variable", "OTEL_SERVICE_NAME")):
        check(needle in src, "telemetry/src", f"{what} {needle!r} not found in the exporter's source")
    for crate in ("authz", "modelserver"):
        check("traceparent" in source_text(crate), f"{crate}/src", "the service does not read traceparent")


def check_runbooks() -> None:
    ops = (ROOT / "docs/operations.md").read_text() if (ROOT / "docs/operations.md").exists() else ""
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in ops.splitlines() if line.startswith("#")}
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for g_ in alerts["groups"]:
        for r in g_["rules"]:
            if "alert" in r:
                url = r.get("annotations", {}).get("runbook_url", "")
                anchor = url.partition("#")[2]
                check(url.startswith("docs/operations.md#") and anchor in anchors, "deploy/prometheus/alerts.yml",
                      f"alert {r['alert']}: runbook {url!r} has no heading in docs/operations.md")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    rendered = Path(sys.argv[1])
    for target in ("local", "compose", "k8s"):
        check_envoy(target)
    check_compose()
    check_dockerfiles()
    for overlay in ("cpu", "gpu"):
        check_k8s(rendered, overlay)
    check_istio(rendered)
    check_network_modes(rendered)
    check_service_defaults()
    check_telemetry_defaults()
    check_runbooks()
    for p in problems:
        print(f"INCONSISTENT: {p}")
    print(f"consistency: {checked - len(problems)} passed, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
