#!/usr/bin/env bash
# Packs everything the modelserver serving benchmark needs to run on a GPU machine that has an
# NVIDIA driver but no network and no Rust toolchain: the benchmark binary (release), the
# benchmark model repository (already generated, so no Python `onnx` is needed there), the
# ONNX Runtime GPU wheel of the same version as the CPU one this checkout uses, optionally the
# CUDA and cuDNN runtime wheels that wheel asks for (onnxruntime-gpu 1.31.1: CUDA 13, cuDNN 9),
# scripts/gpu-bench.sh as run.sh, and a SHA-256 manifest.
#
#   scripts/gpu-bench-pack.sh OUT_DIR [--cuda-libs] [--split-mb N] [--ort-package NAME]
#
#   --cuda-libs        also pack the NVIDIA CUDA runtime, cuBLAS, cuDNN, cuFFT, cuRAND, NVRTC and
#                      nvJitLink wheels (onnxruntime-gpu's `cuda` and `cudnn` extras; several GB)
#                      for a machine with only the driver (one new enough for that CUDA) installed
#   --split-mb N       split files over N MiB into N MiB parts (run.sh joins and checks them), for
#                      transports that limit a file's size
#   --ort-package P    the wheel to pack (default onnxruntime-gpu; `onnxruntime` packs the CPU
#                      build, to try the bundle on a machine without a GPU)
#
# Then, on the GPU machine: `bash OUT_DIR/run.sh` (see scripts/gpu-bench.sh).
# Needs `source .tools/env` (cargo, the venv's python3 with onnx and onnxruntime) and PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { printf 'gpu-bench-pack: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'gpu-bench-pack: %s\n' "$*" >&2; }

out="" cuda_libs=0 split_mb=0 package="onnxruntime-gpu"
while (($#)); do
  case "$1" in
    --cuda-libs) cuda_libs=1 ;;
    --split-mb) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--split-mb needs a positive number"; split_mb="$2"; shift ;;
    --ort-package) [[ $# -ge 2 ]] || die "--ort-package needs a name"; package="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$out" ]] || die "one OUT_DIR only"; out="$1" ;;
  esac
  shift
done
[[ -n "$out" ]] || die "usage: scripts/gpu-bench-pack.sh OUT_DIR [--cuda-libs] [--split-mb N] [--ort-package NAME]"
[[ ! -e "$out" || -z "$(ls -A "$out")" ]] || die "$out exists and is not empty"
command -v cargo >/dev/null || die "cargo is not on PATH: \`source .tools/env\`"
version="$(python3 -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null)" \
  || die "the venv's onnxruntime is missing: run scripts/bootstrap.sh and \`source .tools/env\`"
python3 -c 'import onnx' 2>/dev/null || die "the venv's onnx is missing: run scripts/bootstrap.sh"

mkdir -p "$out/bin" "$out/wheels"
out="$(cd "$out" && pwd)"

log "building the serving benchmark (release)"
exe="$(cd "$ROOT" && cargo bench --locked -p modelserver --bench serving --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "serving" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$exe" ]] || die "cargo did not report the serving benchmark's executable"
# Without its debug info (a smaller bundle); symbols stay, for backtraces.
if command -v strip >/dev/null; then strip --strip-debug -o "$out/bin/serving" "$exe"; else cp "$exe" "$out/bin/serving"; fi

log "generating the benchmark repository"
BENCH_WRITE_REPOSITORY="$out/repository" BENCH_RESNET=1 "$out/bin/serving" >/dev/null

log "downloading $package $version"
spec="$package==$version"
if ((cuda_libs)); then spec="$package[cuda,cudnn]==$version"; fi
python3 -m pip download --quiet --only-binary=:all: --dest "$out/wheels" "$spec" \
  || die "pip could not download $spec"
# Only the runtime libraries are used; Python dependencies (numpy, protobuf, ...) are not.
find "$out/wheels" -name '*.whl' ! -name 'onnxruntime*' ! -name 'nvidia_*' -delete
ls "$out/wheels"/onnxruntime*.whl >/dev/null 2>&1 || die "no $package wheel was downloaded"

cp "$ROOT/scripts/gpu-bench.sh" "$out/run.sh"
chmod +x "$out/run.sh"
git -C "$ROOT" rev-parse HEAD > "$out/COMMIT" 2>/dev/null || echo unknown > "$out/COMMIT"
echo "$package $version" > "$out/ORT"

(cd "$out" && find . -type f ! -name MANIFEST.sha256 -print0 | sort -z | xargs -0 sha256sum > MANIFEST.sha256)

if ((split_mb)); then
  while IFS= read -r -d '' big; do
    split -b "${split_mb}M" -d -a 3 "$big" "$big.part-"
    rm "$big"
    log "split $(basename "$big") into $(ls "$big".part-* | wc -l) parts"
  done < <(find "$out" -type f -size +"${split_mb}M" ! -name run.sh ! -name MANIFEST.sha256 -print0)
fi

log "bundle ready: $out ($(du -sh "$out" | cut -f1)); on the GPU machine run: bash $(basename "$out")/run.sh"
