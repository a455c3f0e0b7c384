#!/usr/bin/env bash
# Runs the whole gateway locally with real processes: redis-server, authz, modelserver and Envoy in
# front, each on its default port (8080 Envoy, 9901 Envoy admin, 9001/9002 authz, 8000/8001/8002
# modelserver, 6379 Redis). `make up` runs this after the bootstrap and a release build.
#
#  - runs `authz dev-init --out .dev`: creates the dev issuer key and JWKS when missing (an existing
#    key is kept) and renders the demo authz config from config/authz.toml;
#  - writes the run's configs into .run/ (authz.toml from .dev/authz.toml with this run's ports,
#    Redis and audit directory; envoy.yaml from envoy/render.py --target local);
#  - starts the four processes (logs in .run/logs/, audit in .run/audit/, its checkpoints' witness
#    file in .run/witness/), waits until every one is ready (and Envoy's health checks see authz
#    and the model server), then prints a ready-to-paste curl with a fresh token for analyst-1
#    against mission-summarizer through Envoy;
#  - on Ctrl-C or SIGTERM stops every process it started and checks that no port stays bound.
#
# AUTHZ_MODE chooses where authz decides (docs/embedded.md):
#  - `service` (the default): `authz serve`, called by Envoy's ext_authz filter;
#  - `embedded`: no authz process; Envoy loads libauthz_module.so (from the binaries' folder) as a
#    dynamic module that runs the same pipeline from the same authz.toml, and serves authz's
#    /readyz and /metrics on the authz admin port. The config is rendered by
#    envoy-module/render_embedded.py.
#
# A port already in use is an error naming the port and, where `ss` can tell, who holds it.
# Every port can be changed through the environment (ENVOY_PORT, ENVOY_ADMIN_PORT, AUTHZ_GRPC_PORT,
# AUTHZ_ADMIN_PORT, MODELSERVER_HTTP_PORT, MODELSERVER_GRPC_PORT, MODELSERVER_METRICS_PORT,
# REDIS_PORT), and so can the binaries' folder (UP_BIN_DIR, default target/release), the run folder
# (UP_RUN_DIR, default .run) and the dev-key folder (UP_DEV_DIR, default .dev).
# Expects the tools of scripts/bootstrap.sh on PATH (`source .tools/env`).
set -euo pipefail

# A script started with SIGINT ignored (launched in the background: `cmd &` from a script, nohup,
# some CI runners) cannot trap it: bash refuses traps on signals ignored at entry, so Ctrl-C to the
# group would stop the children and leave this script to report them as crashed. Re-run it once
# with SIGINT at its default disposition so the INT trap below holds however it was started.
if [[ -z "${UP_SIGINT_RESET:-}" ]] && command -v python3 >/dev/null \
  && python3 -c 'import signal, sys; sys.exit(signal.getsignal(signal.SIGINT) != signal.SIG_IGN)'; then
  export UP_SIGINT_RESET=1
  exec python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp("bash", ["bash"] + sys.argv[1:])' \
    "${BASH_SOURCE[0]}" "$@"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# Overridable for tests (e2e/tests/gateway_up.rs runs this script with debug builds and
# temporary directories): where the binaries are, where the run's files and the dev keys go.
BIN_DIR="${UP_BIN_DIR:-$TARGET/release}"
RUN="${UP_RUN_DIR:-$ROOT/.run}"
DEV="${UP_DEV_DIR:-$ROOT/.dev}"
AUTHZ="$BIN_DIR/authz"
MODELSERVER="$BIN_DIR/modelserver"
AUTHZ_MODE="${AUTHZ_MODE:-service}"
MODULE="$BIN_DIR/libauthz_module.so"
LOGS="$RUN/logs"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-60}"

ENVOY_PORT="${ENVOY_PORT:-8080}"
ENVOY_ADMIN_PORT="${ENVOY_ADMIN_PORT:-9901}"
AUTHZ_GRPC_PORT="${AUTHZ_GRPC_PORT:-9001}"
AUTHZ_ADMIN_PORT="${AUTHZ_ADMIN_PORT:-9002}"
MODELSERVER_HTTP_PORT="${MODELSERVER_HTTP_PORT:-8000}"
MODELSERVER_GRPC_PORT="${MODELSERVER_GRPC_PORT:-8001}"
MODELSERVER_METRICS_PORT="${MODELSERVER_METRICS_PORT:-8002}"
REDIS_PORT="${REDIS_PORT:-6379}"

say() { printf 'up: %s\n' "$*"; }
die() { printf 'up: ERROR: %s\n' "$*" >&2; exit 1; }

# ---- prerequisites ----------------------------------------------------------------------------
for tool in envoy redis-server redis-cli python3 curl; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH: run scripts/bootstrap.sh and \`source .tools/env\` (or \`make up\`)"
done
for bin in "$AUTHZ" "$MODELSERVER"; do
  [[ -x "$bin" ]] || die "$bin is missing: build it with \`cargo build --release --bins\` (or \`make up\`)"
done
case "$AUTHZ_MODE" in
  service) ;;
  embedded)
    [[ -f "$MODULE" ]] || die "$MODULE is missing: build it with \`cargo build --release -p envoy-module\` (or \`make up\`)" ;;
  *) die "AUTHZ_MODE must be service or embedded, not '$AUTHZ_MODE'" ;;
esac
[[ -n "${ORT_DYLIB_PATH:-}" && -f "$ORT_DYLIB_PATH" ]] \
  || die "ORT_DYLIB_PATH does not name libonnxruntime: run scripts/bootstrap.sh and \`source .tools/env\`"

# ---- ports ------------------------------------------------------------------------------------
PORTS=(
  "$ENVOY_PORT:Envoy ingress:ENVOY_PORT"
  "$ENVOY_ADMIN_PORT:Envoy admin:ENVOY_ADMIN_PORT"
  "$AUTHZ_GRPC_PORT:authz gRPC:AUTHZ_GRPC_PORT"
  "$AUTHZ_ADMIN_PORT:authz admin:AUTHZ_ADMIN_PORT"
  "$MODELSERVER_HTTP_PORT:modelserver REST:MODELSERVER_HTTP_PORT"
  "$MODELSERVER_GRPC_PORT:modelserver gRPC:MODELSERVER_GRPC_PORT"
  "$MODELSERVER_METRICS_PORT:modelserver metrics:MODELSERVER_METRICS_PORT"
  "$REDIS_PORT:Redis:REDIS_PORT"
)

# Exit 0 when a listener could bind 127.0.0.1:PORT (SO_REUSEADDR, as the servers set it, so
# connections in TIME_WAIT do not count as taken).
port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

holder() {
  command -v ss >/dev/null && ss -Hltnp "sport = :$1" 2>/dev/null | sed 's/^/    /' || true
}

seen=" "
for entry in "${PORTS[@]}"; do
  IFS=: read -r port what var <<<"$entry"
  [[ "$seen" != *" $port "* ]] || die "port $port is configured twice (check the *_PORT variables)"
  seen+="$port "
  if ! port_free "$port"; then
    die "port $port ($what) is already in use; stop what holds it or set $var to another port.
$(holder "$port")"
  fi
done

# ---- configuration ----------------------------------------------------------------------------
mkdir -p "$LOGS" "$RUN/audit" "$RUN/witness" "$RUN/redis"
# dev-init creates the dev issuer key and JWKS when missing and keeps an existing key (tokens
# minted earlier stay valid); the demo config is rendered afresh from config/authz.toml each time,
# so edits there take effect on the next `make up`.
[[ -f "$DEV/issuer-key.pem" ]] || say "creating $DEV (dev issuer key, JWKS, demo config)"
"$AUTHZ" dev-init --out "$DEV" --template "$ROOT/config/authz.toml" >"$LOGS/authz-dev-init.log" 2>&1 \
  || die "authz dev-init failed:
$(cat "$LOGS/authz-dev-init.log")"

# The run's authz config: .dev/authz.toml with this run's listen addresses, Redis and audit
# directory, and signed audit checkpoints (every 1000 records or 1 s, the default) with the dev key
# dev-init writes and a witness file in the run folder (`authz audit verify .run/audit/
# --checkpoints .run/witness/checkpoints.jsonl --public-key .dev/audit-checkpoint-key.pub.pem`).
# A line-oriented edit of the TOML `authz dev-init` writes: a key is replaced inside
# its [table], added under the table's header, or the table is appended.
python3 - "$DEV/authz.toml" "$RUN/authz.toml" \
  "server" "grpc_addr" "\"127.0.0.1:$AUTHZ_GRPC_PORT\"" \
  "server" "admin_addr" "\"127.0.0.1:$AUTHZ_ADMIN_PORT\"" \
  "rate_limit" "redis_url" "\"redis://127.0.0.1:$REDIS_PORT\"" \
  "audit" "path" "\"$RUN/audit/\"" \
  "audit.checkpoint" "signing_key" "\"$DEV/audit-checkpoint-key.pem\"" \
  "audit.checkpoint" "witness_file" "\"$RUN/witness/checkpoints.jsonl\"" <<'PY'
import sys
src, dst, *edits = sys.argv[1:]
lines = open(src).read().splitlines()
for i in range(0, len(edits), 3):
    table, key, value = edits[i:i + 3]
    header = f"[{table}]"
    try:
        start = next(n for n, l in enumerate(lines) if l.strip() == header)
    except StopIteration:
        lines += ["", header, f"{key} = {value}"]
        continue
    end = next((n for n in range(start + 1, len(lines)) if lines[n].lstrip().startswith("[")), len(lines))
    for n in range(start + 1, end):
        if lines[n].split("=", 1)[0].strip() == key:
            lines[n] = f"{key} = {value}"
            break
    else:
        lines.insert(start + 1, f"{key} = {value}")
open(dst, "w").write("# Written by scripts/up.sh from .dev/authz.toml for this run.\n" + "\n".join(lines) + "\n")
PY
"$AUTHZ" check-config --config "$RUN/authz.toml" >"$LOGS/authz-check-config.log" 2>&1 \
  || die "the authz config $RUN/authz.toml is invalid:
$(cat "$LOGS/authz-check-config.log")"

RENDER_PORTS=(--listen-port "$ENVOY_PORT" --admin-port "$ENVOY_ADMIN_PORT"
  --modelserver-http "127.0.0.1:$MODELSERVER_HTTP_PORT"
  --modelserver-grpc "127.0.0.1:$MODELSERVER_GRPC_PORT")
if [[ "$AUTHZ_MODE" == embedded ]]; then
  # Envoy finds the module by name in ENVOY_DYNAMIC_MODULES_SEARCH_PATH: a folder of its own.
  mkdir -p "$RUN/modules"
  cp "$MODULE" "$RUN/modules/libauthz_module.so"
  python3 envoy-module/render_embedded.py --authz-config "$RUN/authz.toml" "${RENDER_PORTS[@]}" \
    --out "$RUN/envoy.yaml"
else
  python3 envoy/render.py --target local "${RENDER_PORTS[@]}" \
    --authz-addr "127.0.0.1:$AUTHZ_GRPC_PORT" --out "$RUN/envoy.yaml"
fi

# ---- processes --------------------------------------------------------------------------------
declare -A PIDS=()
ORDER=()   # start order; stopped in reverse

stop_all() {
  trap '' INT TERM   # a second Ctrl-C must not interrupt the cleanup
  local name pid i
  for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
    name="${ORDER[i]}"; pid="${PIDS[$name]}"
    kill -TERM "$pid" 2>/dev/null || true
  done
  # authz and modelserver drain in-flight requests on SIGTERM; give them a bounded while.
  local deadline=$((SECONDS + 15))
  for name in "${ORDER[@]}"; do
    pid="${PIDS[$name]}"
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) did not stop after SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  local bound=()
  for entry in "${PORTS[@]}"; do
    IFS=: read -r port what _ <<<"$entry"
    port_free "$port" || bound+=("$port ($what)")
  done
  if ((${#bound[@]})); then
    say "WARNING: still bound after stopping: ${bound[*]}"
  elif ((${#ORDER[@]})); then
    say "stopped ${ORDER[*]}; no port left bound"
  fi
}
on_signal() { say "stopping"; exit 130; }
trap stop_all EXIT
trap on_signal INT TERM

start() {  # start NAME LOG CMD...
  local name="$1" log="$2"; shift 2
  : >"$log"
  "$@" >>"$log" 2>&1 &
  PIDS[$name]=$!
  ORDER+=("$name")
  say "started $name (pid ${PIDS[$name]}, log ${log#"$ROOT"/})"
}

start redis-server "$LOGS/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
  --save "" --appendonly no --dir "$RUN/redis"
if [[ "$AUTHZ_MODE" == service ]]; then
  start authz "$LOGS/authz.log" "$AUTHZ" serve --config "$RUN/authz.toml"
fi
start modelserver "$LOGS/modelserver.log" "$MODELSERVER" serve --model-repository "$ROOT/models" \
  --address 127.0.0.1 --http-port "$MODELSERVER_HTTP_PORT" --grpc-port "$MODELSERVER_GRPC_PORT" \
  --metrics-port "$MODELSERVER_METRICS_PORT"
start envoy "$LOGS/envoy.log" env ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$RUN/modules" \
  envoy -c "$RUN/envoy.yaml" --use-dynamic-base-id --log-level warn --drain-time-s 1

# wait_for NAME DESCRIPTION CHECK...: polls CHECK until it succeeds; fails when NAME exits first
# or after READY_TIMEOUT_S, showing the end of NAME's log.
wait_for() {
  local name="$1" what="$2"; shift 2
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      die "$name exited before $what; the end of its log:
$(tail -n 30 "$LOGS/$name.log" 2>/dev/null || tail -n 30 "$LOGS/${name%-server}.log")"
    fi
    ((SECONDS < deadline)) || die "$what: not ready after ${READY_TIMEOUT_S}s; see $LOGS/"
    sleep 0.2
  done
}
clusters_healthy() {
  local out
  out="$(curl -fsS "http://127.0.0.1:$ENVOY_ADMIN_PORT/clusters")" || return 1
  local clusters=(modelserver_http modelserver_grpc)
  [[ "$AUTHZ_MODE" == embedded ]] || clusters+=(authz)
  for c in "${clusters[@]}"; do
    grep -q "^$c::.*::health_flags::healthy$" <<<"$out" || return 1
  done
}

wait_for redis-server "Redis answers PING" redis-cli -p "$REDIS_PORT" ping
if [[ "$AUTHZ_MODE" == service ]]; then
  wait_for authz "authz is ready" curl -fsS "http://127.0.0.1:$AUTHZ_ADMIN_PORT/readyz"
fi
wait_for modelserver "the model server is ready" curl -fsS "http://127.0.0.1:$MODELSERVER_HTTP_PORT/v2/health/ready"
wait_for envoy "Envoy is ready" curl -fsS "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready"
if [[ "$AUTHZ_MODE" == embedded ]]; then
  wait_for envoy "the authz module is ready" curl -fsS "http://127.0.0.1:$AUTHZ_ADMIN_PORT/readyz"
  AUTHZ_SAYS="authz inside Envoy (AUTHZ_MODE=embedded; /metrics and /readyz on :$AUTHZ_ADMIN_PORT)"
else
  AUTHZ_SAYS="authz :$AUTHZ_GRPC_PORT/:$AUTHZ_ADMIN_PORT"
fi
wait_for envoy "Envoy's health checks pass for authz and the model server" clusters_healthy
wait_for envoy "the gateway answers /v2/health/ready" curl -fsS "http://127.0.0.1:$ENVOY_PORT/v2/health/ready"

TOKEN="$("$AUTHZ" token --sub analyst-1 --roles analyst,mission-user --ttl 1h --key "$DEV/issuer-key.pem")"

cat <<EOF

The gateway is up: Envoy on http://127.0.0.1:$ENVOY_PORT (admin :$ENVOY_ADMIN_PORT), $AUTHZ_SAYS,
modelserver :$MODELSERVER_HTTP_PORT/:$MODELSERVER_GRPC_PORT/:$MODELSERVER_METRICS_PORT, Redis :$REDIS_PORT.
Logs: ${LOGS#"$ROOT"/}/   Audit: ${RUN#"$ROOT"/}/audit/ (witness: ${RUN#"$ROOT"/}/witness/)   Dev keys and demo config: ${DEV#"$ROOT"/}/

Try it (a token for analyst-1, valid for 1 hour):

curl -s http://127.0.0.1:$ENVOY_PORT/v2/models/mission-summarizer/infer \\
  -H 'Authorization: Bearer $TOKEN' \\
  -H 'x-access-reason: triage of the overnight field reports' \\
  -H 'content-type: application/json' \\
  -d '{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 8], "data": ["urgent", "medevac", "for", "two", "casualties", "at", "the", "checkpoint"]}]}'

More tokens: ${AUTHZ#"$ROOT"/} token --sub security-1 --roles security-engineer,mission-user --key ${DEV#"$ROOT"/}/issuer-key.pem
Press Ctrl-C to stop everything.
EOF

# Run until a signal arrives or one of the processes dies (then stop the rest and fail).
set +e
wait -n "${PIDS[@]}"
rc=$?
set -e
for name in "${ORDER[@]}"; do
  if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
    say "ERROR: $name exited unexpectedly (status $rc); see $LOGS/"
  fi
done
exit 1
