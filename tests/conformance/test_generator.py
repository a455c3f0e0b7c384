"""The model generator is reproducible: regenerating gives the committed models/ byte for byte.

Pure Python (onnx + numpy); needs no modelserver.
"""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "scripts" / "gen_models.py"
COMMITTED = REPO_ROOT / "models"


def model_files(root: Path) -> dict[str, bytes]:
    """Every generated file under root (README.md is hand-written and not generated)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def generate(out: Path) -> dict[str, bytes]:
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True)
    return model_files(out)


def test_regenerating_reproduces_the_committed_models_byte_for_byte(tmp_path):
    committed = model_files(COMMITTED)
    regenerated = generate(tmp_path / "models")
    assert sorted(regenerated) == sorted(committed), "generator and models/ disagree on the file list"
    stale = [name for name in committed if committed[name] != regenerated[name]]
    assert not stale, f"models/ is stale; rerun scripts/gen_models.py. Differing files: {stale}"


def test_two_runs_write_identical_bytes(tmp_path):
    assert generate(tmp_path / "a") == generate(tmp_path / "b")


def test_committed_models_stay_small():
    sizes = {name: len(data) for name, data in model_files(COMMITTED).items()}
    too_big = {name: size for name, size in sizes.items() if size > 16 * 1024}
    assert not too_big, f"committed models must stay tiny: {too_big}"
