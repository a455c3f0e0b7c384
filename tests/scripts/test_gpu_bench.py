"""scripts/gpu-bench.sh, the bundle's run.sh, on bundles laid out as scripts/gpu-bench-pack.sh
lays them out: parts joined, the manifest enforced, ONNX Runtime unpacked and found, every device
run, a failed run reported in the exit status.

The benchmark binary in these bundles is a small shell script that records what it was given and
fails where told to: this tests the runner's own logic. The real binary and a real ONNX Runtime
wheel go through the same runner in the manual check docs/benchmarks and modelserver/README.md
describe (`scripts/gpu-bench-pack.sh --ort-package onnxruntime`), which needs a release build.
"""

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "scripts" / "gpu-bench.sh"

# Records its environment per device; fails for the devices listed in FAKE_FAIL.
FAKE_SERVING = """#!/usr/bin/env bash
set -eu
{
  echo "device=$BENCH_DEVICE"
  echo "ort=$ORT_DYLIB_PATH"
  echo "ld=$LD_LIBRARY_PATH"
  echo "repository=$BENCH_REPOSITORY"
} > "$BENCH_OUT/fake-$BENCH_DEVICE.txt"
for d in ${FAKE_FAIL:-}; do
  if [ "$d" = "$BENCH_DEVICE" ]; then echo "fake: cannot run on $d" >&2; exit 3; fi
done
echo "fake serving table for $BENCH_DEVICE"
"""


def make_bundle(root: Path, *, split_bytes: int | None = None, cuda_libs: bool = True) -> Path:
    bundle = root / "bundle"
    (bundle / "bin").mkdir(parents=True)
    (bundle / "wheels").mkdir()
    (bundle / "repository" / "add" / "1").mkdir(parents=True)
    (bundle / "repository" / "add" / "config.pbtxt").write_text("instance_group [ { kind: KIND_CPU } ]\n")
    (bundle / "repository" / "add" / "1" / "model.onnx").write_bytes(os.urandom(4096))
    serving = bundle / "bin" / "serving"
    serving.write_text(FAKE_SERVING)
    serving.chmod(0o755)
    with zipfile.ZipFile(bundle / "wheels" / "onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as z:
        z.writestr("onnxruntime/capi/libonnxruntime.so.1.31.1", b"\x7fELF not really")
        z.writestr("onnxruntime/capi/libonnxruntime_providers_cuda.so", b"")
        z.writestr("onnxruntime/__init__.py", "")
    if cuda_libs:
        with zipfile.ZipFile(bundle / "wheels" / "nvidia_cudnn_cu12-9.0.0-py3-none-manylinux_2_27_x86_64.whl", "w") as z:
            z.writestr("nvidia/cudnn/lib/libcudnn.so.9", b"")
    (bundle / "COMMIT").write_text("0" * 40 + "\n")
    (bundle / "ORT").write_text("onnxruntime-gpu 1.31.1\n")
    lines = []
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        lines.append(f"{digest}  ./{f.relative_to(bundle)}")
    (bundle / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    (bundle / "run.sh").write_bytes(RUNNER.read_bytes())
    if split_bytes:
        # As the pack script does: everything but the runner and the manifest.
        for f in [p for p in bundle.rglob("*") if p.is_file() and p.stat().st_size > split_bytes
                  and p.name not in ("run.sh", "MANIFEST.sha256")]:
            data = f.read_bytes()
            for n, start in enumerate(range(0, len(data), split_bytes)):
                (f.parent / f"{f.name}.part-{n:03d}").write_bytes(data[start:start + split_bytes])
            f.unlink()
    return bundle


def run(bundle: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "GPU_BENCH_"))}
    full_env.pop("ORT_DYLIB_PATH", None)
    full_env.update(env)
    return subprocess.run(["bash", str(bundle / "run.sh")], env=full_env, capture_output=True, text=True, timeout=60)


def recorded(bundle: Path, device: str) -> dict:
    text = (bundle / "results" / f"fake-{device}.txt").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_split_bundle_is_joined_checked_unpacked_and_run_on_every_device(tmp_path):
    bundle = make_bundle(tmp_path, split_bytes=300)
    assert (bundle / "repository" / "add" / "1" / "model.onnx.part-013").exists()
    assert not (bundle / "bin" / "serving").exists()  # split too (over 300 bytes)

    result = run(bundle)

    assert result.returncode == 0, result.stderr
    assert (bundle / "repository" / "add" / "1" / "model.onnx").stat().st_size == 4096
    assert not list(bundle.rglob("*.part-*"))
    for device in ("cuda", "cpu"):
        seen = recorded(bundle, device)
        assert seen["device"] == device
        assert seen["ort"] == str(bundle / "lib" / "onnxruntime" / "capi" / "libonnxruntime.so.1.31.1")
        assert seen["ld"].split(":")[:2] == [str(bundle / "lib" / "onnxruntime" / "capi"),
                                             str(bundle / "lib" / "nvidia" / "cudnn" / "lib")]
        assert seen["repository"] == str(bundle / "repository")
        assert f"fake serving table for {device}" in (bundle / "results" / f"serving-{device}.log").read_text()
    machine = (bundle / "results" / "machine.txt").read_text()
    assert "onnxruntime-gpu 1.31.1" in machine and "bundle commit: " + "0" * 40 in machine


def test_a_failed_device_run_fails_the_script_and_the_others_still_run(tmp_path):
    bundle = make_bundle(tmp_path, cuda_libs=False)

    result = run(bundle, FAKE_FAIL="cuda")

    assert result.returncode == 1
    assert "the cuda run failed" in result.stderr
    assert "fake: cannot run on cuda" in (bundle / "results" / "serving-cuda.log").read_text()
    assert recorded(bundle, "cpu")["ld"] == str(bundle / "lib" / "onnxruntime" / "capi")


def test_a_damaged_transfer_is_refused_before_anything_runs(tmp_path):
    bundle = make_bundle(tmp_path)
    model = bundle / "repository" / "add" / "1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))

    result = run(bundle)

    assert result.returncode != 0
    assert "do not match MANIFEST.sha256" in result.stderr
    assert not (bundle / "results" / "fake-cuda.txt").exists()
    assert not (bundle / "lib").exists()


def test_a_missing_part_is_refused(tmp_path):
    bundle = make_bundle(tmp_path, split_bytes=1000)
    (bundle / "repository" / "add" / "1" / "model.onnx.part-002").unlink()

    result = run(bundle)

    assert result.returncode != 0
    assert "do not match MANIFEST.sha256" in result.stderr


@pytest.mark.parametrize("devices,message", [("tpu", "is not cuda or cpu")])
def test_unknown_device_is_an_error(tmp_path, devices, message):
    bundle = make_bundle(tmp_path)
    result = run(bundle, GPU_BENCH_DEVICES=devices)
    assert result.returncode != 0 and message in result.stderr


def test_a_directory_that_is_not_a_bundle_is_named(tmp_path):
    (tmp_path / "run.sh").write_bytes(RUNNER.read_bytes())
    result = subprocess.run(["bash", str(tmp_path / "run.sh")], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "is not a bundle from scripts/gpu-bench-pack.sh" in result.stderr
