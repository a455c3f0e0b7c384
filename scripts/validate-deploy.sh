#!/usr/bin/env bash
# Validates every deployment artifact the repository ships, with the real tools:
#   1. Envoy: renders up to date (envoy/render.py --check), `envoy --mode validate` on each render
#      (plus one render with e2e-style ephemeral ports, and the embedded render with the module
#      loaded: needs `make build`), and envoy/tests/envoy_config_test.py
#      (the config's behaviour against real Envoy on loopback);
#   2. monitoring: renders up to date, `promtool check` of rules and config, `promtool test rules`,
#      and every dashboard query parses;
#   3. compose: `docker-compose config -q`, with and without the gpu and embedded profiles;
#   4. Kubernetes: `kubectl kustomize` of the base, each overlay and the Istio set, `kubernetes-validate --strict`
#      on the result (custom resources are checked for structure by step 6), and `authz check-config`
#      on the authz ConfigMap laid out as the pod mounts it (scripts/check_k8s_authz_config.py; needs
#      the authz binary: `make build`, or AUTHZ=path);
#   5. checkov on the Dockerfiles and the rendered manifests (skips, with reasons: deploy/checkov.yaml);
#   6. scripts/check_deploy_consistency.py: ports, paths and headers agree everywhere; each mode's
#      NetworkPolicies (plain overlays, overlays + Istio set) admit exactly the paths it needs.
# Runs every step, prints each failure, and exits non-zero if any failed. Tools come from
# scripts/bootstrap.sh (.tools/); it says what is missing rather than skipping a step.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -f .tools/env ]] && source .tools/env
CHECKOV="${CHECKOV:-$ROOT/.tools/checkov-venv/bin/checkov}"
PY="${PYTHON:-python3}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failures=()
passed=0

step() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf 'ok: %s\n' "$*"; }
fail() { failures+=("$*"); printf 'FAIL: %s\n' "$*" >&2; }
# run NAME CMD...: runs CMD, keeps its output in $WORK/log, reports ok/FAIL with the output on failure.
run() {
  local name="$1"; shift
  if "$@" >"$WORK/log" 2>&1; then ok "$name"; else fail "$name"; tail -n 40 "$WORK/log" >&2; fi
}
need() {
  local tool="$1" hint="$2"
  if command -v "$tool" >/dev/null 2>&1 || [[ -x "$tool" ]]; then return 0; fi
  fail "$tool is missing ($hint)"; return 1
}

# --- 1. Envoy -----------------------------------------------------------------------------
step "Envoy configuration"
run "envoy renders match envoy/render.py + envoy/values" "$PY" envoy/render.py --check
# The embedded mode's compose render (not run through `envoy --mode validate`: validating loads the
# dynamic module, which loads the authz.toml it names, a path inside the container).
run "envoy/rendered/compose-embedded.yaml matches envoy-module/render_embedded.py" bash -c \
  "$PY envoy-module/render_embedded.py --target compose --authz-config /etc/authz/authz.toml \
     --out '$WORK/compose-embedded.yaml' && diff -u envoy/rendered/compose-embedded.yaml '$WORK/compose-embedded.yaml'"
if need envoy "run scripts/bootstrap.sh"; then
  for f in envoy/rendered/local.yaml envoy/rendered/compose.yaml envoy/rendered/k8s.yaml; do
    run "envoy --mode validate $f" envoy --mode validate -c "$f"
  done
  "$PY" envoy/render.py --target local --listen-port 18080 --admin-port 19901 --authz-addr 127.0.0.1:19001 \
    --modelserver-http 127.0.0.1:18000 --modelserver-grpc 127.0.0.1:18001 --otlp-addr 127.0.0.1:14317 \
    --out "$WORK/ephemeral.yaml" && run "envoy --mode validate (local render with CLI ports and tracing)" envoy --mode validate -c "$WORK/ephemeral.yaml"
  # The embedded mode's render, validated with the module loaded: validating creates the filter
  # config, so the module loads the authz.toml it names (a dev-init one here, its ports moved to
  # ephemeral ones) and an ABI or config problem fails the step. Needs `make build`'s
  # libauthz_module.so and authz (under $CARGO_TARGET_DIR when set).
  target_dir="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
  authz_bin="${AUTHZ:-$target_dir/authz}"
  if [[ -f "$target_dir/libauthz_module.so" && -x "$authz_bin" ]]; then
    run "envoy --mode validate (embedded render, module loaded)" bash -c "
      '$authz_bin' dev-init --out '$WORK/embedded-dev' >/dev/null &&
      sed -i -e 's|^admin_addr = .*|admin_addr = \"127.0.0.1:0\"|' \
             -e 's|^grpc_addr = .*|grpc_addr = \"127.0.0.1:0\"|' '$WORK/embedded-dev/authz.toml' &&
      '$PY' envoy-module/render_embedded.py --authz-config '$WORK/embedded-dev/authz.toml' \
        --out '$WORK/embedded.yaml' --listen-port 18180 --admin-port 19991 &&
      ENVOY_DYNAMIC_MODULES_SEARCH_PATH='$target_dir' envoy --mode validate -c '$WORK/embedded.yaml'"
  else
    fail "envoy --mode validate (embedded render): $target_dir/libauthz_module.so or $authz_bin is missing (run make build)"
  fi
  # What the config does, against real Envoy on loopback (public paths, header stripping, body
  # peek, fail closed, blocked APIs, normalisation, access log).
  if "$PY" envoy/tests/envoy_config_test.py >"$WORK/log" 2>&1; then
    ok "envoy config behaviour ($(tail -n 1 "$WORK/log"))"
  else
    fail "envoy config behaviour (envoy/tests/envoy_config_test.py)"; grep -v '^PASS' "$WORK/log" >&2
  fi
fi

# --- 2. Monitoring ------------------------------------------------------------------------
step "Prometheus rules and Grafana dashboard"
run "monitoring renders match deploy/prometheus + deploy/grafana" "$PY" deploy/render_monitoring.py --check
if need promtool "Debian package prometheus; run scripts/bootstrap.sh"; then
  run "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
  run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
  run "promtool test rules (alert unit tests)" bash -c "cd deploy/prometheus && promtool test rules alerts_test.yml"
  "$PY" - "$WORK/dashboard-rules.yml" <<'PYEOF'
import json, sys
dash = json.load(open("deploy/grafana/dashboards/inference-gateway.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
PYEOF
  run "every dashboard query parses (promtool)" promtool check rules "$WORK/dashboard-rules.yml"
fi

# --- 3. Compose ---------------------------------------------------------------------------
step "compose.yaml"
if need docker-compose "Debian package docker-compose; run scripts/bootstrap.sh"; then
  run "docker-compose config" docker-compose -f compose.yaml config -q
  run "docker-compose --profile gpu config" docker-compose -f compose.yaml --profile gpu config -q
  run "docker-compose --profile embedded config" docker-compose -f compose.yaml --profile embedded config -q
fi

# --- 4. Kubernetes ------------------------------------------------------------------------
step "Kubernetes manifests"
mkdir -p "$WORK/k8s"
if need kubectl "kubectl with kustomize (the machine image ships it)"; then
  for target in base overlays/cpu overlays/gpu istio; do
    name="$(basename "$target")"
    if kubectl kustomize "k8s/$target" >"$WORK/k8s/$name.yaml" 2>"$WORK/log"; then
      ok "kubectl kustomize k8s/$target"
    else
      fail "kubectl kustomize k8s/$target"; cat "$WORK/log" >&2
    fi
  done
  cp k8s/istio/istio-operator.yaml "$WORK/k8s/istio-operator.yaml"
  # The config authz reads in the pod: every path in it must be on a volume the container mounts,
  # and authz must accept it (a missing policy or JWKS file is exit 64 and a crash-looping pod).
  if "$PY" scripts/check_k8s_authz_config.py "$WORK/k8s/cpu.yaml" "$WORK/k8s/gpu.yaml" >"$WORK/log" 2>&1; then
    ok "authz check-config on the rendered authz ConfigMap, as mounted: $(tail -n 1 "$WORK/log" | sed 's/.*: ok /ok /')"
  else
    fail "authz check-config on the rendered authz ConfigMap (scripts/check_k8s_authz_config.py)"; cat "$WORK/log" >&2
  fi
  if need kubernetes-validate "PyPI kubernetes-validate; run scripts/bootstrap.sh"; then
    for f in "$WORK"/k8s/base.yaml "$WORK"/k8s/cpu.yaml "$WORK"/k8s/gpu.yaml "$WORK"/k8s/istio.yaml; do
      # Built-in kinds strictly; custom resources (no schema here) are reported as warnings and
      # checked for structure in step 6.
      if kubernetes-validate --strict --quiet "$f" >"$WORK/log" 2>&1 && ! grep -q '^ERROR' "$WORK/log"; then
        ok "kubernetes-validate --strict $(basename "$f")"
      else
        fail "kubernetes-validate --strict $(basename "$f")"; grep -v "Couldn't find schema" "$WORK/log" >&2
      fi
    done
  fi
fi

# --- 5. checkov ---------------------------------------------------------------------------
step "checkov (Dockerfiles and rendered manifests)"
if need "$CHECKOV" "its own virtualenv, made by scripts/bootstrap.sh"; then
  export BC_SKIP_MAPPING=TRUE
  run "checkov Dockerfiles" "$CHECKOV" --config-file deploy/checkov.yaml --framework dockerfile -d deploy/docker
  run "checkov compose-only Dockerfiles" "$CHECKOV" --config-file deploy/checkov.yaml --framework dockerfile -d deploy/compose
  run "checkov Kubernetes manifests" "$CHECKOV" --config-file deploy/checkov.yaml --framework kubernetes -d "$WORK/k8s"
fi

# --- 6. Consistency -----------------------------------------------------------------------
step "Consistency of ports, paths and headers"
if "$PY" -c 'import yaml' 2>/dev/null; then
  if "$PY" scripts/check_deploy_consistency.py "$WORK/k8s" >"$WORK/log" 2>&1; then
    ok "check_deploy_consistency.py ($(grep '^consistency:' "$WORK/log"))"
  else
    fail "check_deploy_consistency.py"; cat "$WORK/log" >&2
  fi
else
  fail "PyYAML is missing for $PY (source .tools/env after scripts/bootstrap.sh)"
fi

printf '\nvalidate-deploy: %d passed, %d failed\n' "$passed" "${#failures[@]}"
if ((${#failures[@]})); then
  printf '  failed: %s\n' "${failures[@]}" >&2
  exit 1
fi
