"""bench/bench.py's paired comparison of an extra variant with its base (round by round)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench  # noqa: E402


def run(variant: str, rnd: int, rps: float, c: int = 16) -> bench.RunResult:
    return bench.RunResult(variant, c, rnd, int(rps), 1.0, rps, {}, {}, {})


def test_the_ratio_is_taken_round_by_round_then_the_median(monkeypatch):
    monkeypatch.setitem(bench.VARIANTS, "H", {**bench.VARIANTS["B"], "base": "B"})
    # Drift moves both variants together; the paired ratios stay near 1 although the medians of
    # the two variants differ by 11% (155 against 140).
    runs = [run("B", 1, 100), run("H", 1, 95), run("B", 2, 200), run("H", 2, 210),
            run("B", 3, 150), run("H", 3, 150), run("B", 4, 130), run("H", 4, 160)]
    rows = bench.paired(runs, ["B", "H"], [16])
    assert rows == [{"variant": "H", "base": "B", "concurrency": 16, "rounds": 4,
                     "median_ratio": 1.025, "min_ratio": 0.95, "max_ratio": 1.2308}]


def test_variants_without_a_base_or_a_missing_round_are_left_out(monkeypatch):
    monkeypatch.setitem(bench.VARIANTS, "H", {**bench.VARIANTS["B"], "base": "B"})
    runs = [run("A", 1, 300), run("B", 1, 100), run("H", 2, 90)]
    assert bench.paired(runs, ["A", "B", "H"], [16]) == []
    # The base did not run at all.
    assert bench.paired([run("H", 1, 90)], ["H"], [16]) == []
