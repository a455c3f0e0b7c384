#!/usr/bin/env bash
# Runs the modelserver serving benchmark (modelserver/benches/serving.rs) on a GPU machine from a
# bundle made by scripts/gpu-bench-pack.sh, with no network: CUDA execution provider first, then
# the CPU execution provider on the same machine, side by side. Copied into the bundle as run.sh.
#
#   bash BUNDLE/run.sh            # BUNDLE defaults to this script's directory
#
# Settings (environment): GPU_BENCH_DEVICES ("cuda cpu"), BENCH_GPU (0), BENCH_SECONDS (2),
# BENCH_CONCURRENCY (1,8,32), BENCH_RESNET (1), BENCH_MODELS (all), GPU_BENCH_OUT
# (BUNDLE/results).
#
# Joins split parts, checks every file against MANIFEST.sha256, unpacks ONNX Runtime (and the
# CUDA/cuDNN wheels if packed) into BUNDLE/lib, records the GPU (nvidia-smi) and runs. A CUDA run
# never falls back to CPU: a model that cannot be placed on the GPU stops it with ONNX Runtime's
# reason. Results: GPU_BENCH_OUT/modelserver-cuda.json, modelserver.json and the logs.
set -euo pipefail

bundle="$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")}" && pwd)"
die() { printf 'gpu-bench: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'gpu-bench: %s\n' "$*" >&2; }

[[ -f "$bundle/MANIFEST.sha256" && -d "$bundle/bin" ]] \
  || die "$bundle is not a bundle from scripts/gpu-bench-pack.sh (no MANIFEST.sha256 or bin/)"
devices="${GPU_BENCH_DEVICES:-cuda cpu}"
results="${GPU_BENCH_OUT:-$bundle/results}"
mkdir -p "$results"

# Parts of files that were split for transport.
while IFS= read -r -d '' first; do
  whole="${first%.part-000}"
  cat "$whole".part-* > "$whole.joining" && mv "$whole.joining" "$whole" && rm "$whole".part-*
  log "joined $(basename "$whole")"
done < <(find "$bundle" -name '*.part-000' -print0)

(cd "$bundle" && sha256sum --quiet -c MANIFEST.sha256) \
  || die "files in $bundle do not match MANIFEST.sha256 (incomplete or damaged transfer)"
chmod +x "$bundle/bin/serving"  # joined parts, or a transfer that dropped the mode

unzip_to() { # wheel, directory
  if command -v python3 >/dev/null; then
    python3 -m zipfile -e "$1" "$2"
  elif command -v unzip >/dev/null; then
    unzip -q -o "$1" -d "$2"
  else
    die "neither python3 nor unzip is available to unpack $(basename "$1")"
  fi
}
lib="$bundle/lib"
if [[ ! -d "$lib" ]]; then
  mkdir -p "$lib.tmp"
  for wheel in "$bundle"/wheels/*.whl; do unzip_to "$wheel" "$lib.tmp"; done
  mv "$lib.tmp" "$lib"
fi
ort="$(find "$lib/onnxruntime/capi" -maxdepth 1 -name 'libonnxruntime.so*' -type f | sort | head -1)"
[[ -n "$ort" ]] || die "no libonnxruntime.so in the packed wheel"
export ORT_DYLIB_PATH="$ort"
# The CUDA provider library is loaded from beside libonnxruntime; the CUDA/cuDNN libraries from
# the packed NVIDIA wheels if any, else from the system.
ld="$lib/onnxruntime/capi"
for d in "$lib"/nvidia/*/lib; do [[ -d "$d" ]] && ld="$ld:$d"; done
export LD_LIBRARY_PATH="$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
  echo "bundle commit: $(cat "$bundle/COMMIT" 2>/dev/null || echo unknown)"
  echo "onnx runtime: $(cat "$bundle/ORT" 2>/dev/null || echo unknown) ($ORT_DYLIB_PATH)"
  echo "host: $(uname -srm), $(nproc) CPUs"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
  else
    echo "nvidia-smi: not found"
  fi
} | tee "$results/machine.txt" >&2

export BENCH_REPOSITORY="$bundle/repository" BENCH_OUT="$results" BENCH_RESNET="${BENCH_RESNET:-1}"
status=0
for device in $devices; do
  case "$device" in cuda|cpu) ;; *) die "GPU_BENCH_DEVICES: $device is not cuda or cpu" ;; esac
  if [[ "$device" == cuda ]] && ! command -v nvidia-smi >/dev/null; then
    log "warning: nvidia-smi is not on PATH; trying CUDA anyway (a missing driver fails the run)"
  fi
  log "running on $device"
  if ! BENCH_DEVICE="$device" "$bundle/bin/serving" 2>&1 | tee "$results/serving-$device.log"; then
    log "the $device run failed: see $results/serving-$device.log"
    status=1
  fi
done
log "results in $results"
exit "$status"
