#!/usr/bin/env bash
# What the gateway costs: `make bench` runs this after the bootstrap and a release build.
#
# Starts modelserver (models/), redis-server, authz and one Envoy per variant on free loopback
# ports, checks each variant answers and enforces, then measures with wrk on benchmark-echo as the
# load-tester principal, variants interleaved A B C D per concurrency and round:
#   A  Envoy -> modelserver, no authorization (the floor)
#   B  Envoy + ext_authz authz (JWT, Cedar, in-process rate limit, audit fsync)
#   C  as B with the Redis rate-limit store
#   D  Envoy's own jwt_authn + rbac + local_ratelimit for the demo policy
#   N  Envoy + ext_authz to an allow-all gRPC server (authz/examples/ext_authz_floor.rs): the
#      floor of any ext_authz service, so B - N is what authz itself adds
# Prints a table, writes bench-results/gateway.json and bench-results/gateway.png.
# Then (BENCH_SERVING=0 skips it) the model server alone: benchmark-echo at BENCH_SERVING_CONCURRENCY
# (1,8,32) on three modelservers, dynamic batching busy / always / off, interleaved, beside the
# empty round trip GET /v2/health/live; a second table and bench-results/modelserver-batching.json.
# docs/benchmarks.md explains the variants and how to read the numbers.
#
# Settings (environment): BENCH_VARIANTS (A,B,C,D,N,M,R), BENCH_EXTRA (experiments, see --help),
# BENCH_CONCURRENCY (1,16,64), BENCH_ROUNDS (3), BENCH_DURATION (5, seconds per run), BENCH_WARMUP (2), BENCH_PORT_BASE (unset: free ports; else
# consecutive ports from there, each checked free), BENCH_MODEL_REPOSITORY (models/),
# BENCH_OUT (bench-results/). Extra arguments go to bench/bench.py (see --help).
# Expects the tools of scripts/bootstrap.sh on PATH (`source .tools/env`) and release binaries in
# ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

# Help needs none of the tools or binaries checked below.
for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    exec python3 "$ROOT/bench/bench.py" --help
  fi
done

for tool in envoy redis-server wrk python3; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH: run scripts/bootstrap.sh and \`source .tools/env\` (or \`make bench\`)"
done
for bin in authz modelserver; do
  [[ -x "$BIN/$bin" ]] || die "$BIN/$bin is missing: build it with \`cargo build --release --bins\` (or \`make bench\`)"
done
[[ -n "${ORT_DYLIB_PATH:-}" && -f "$ORT_DYLIB_PATH" ]] \
  || die "ORT_DYLIB_PATH does not name libonnxruntime: run scripts/bootstrap.sh and \`source .tools/env\`"
python3 -c 'import matplotlib' 2>/dev/null \
  || die "matplotlib is missing from $(command -v python3): run scripts/bootstrap.sh and \`source .tools/env\`"

exec python3 "$ROOT/bench/bench.py" --bin-dir "$BIN" "$@"
