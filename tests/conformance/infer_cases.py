"""Inference requests for every demo and conformance model, with the inputs they send.

Expected outputs are not written here: each test runs the same model file in Python onnxruntime
(`models_under_test.run_onnxruntime`) and compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass
class InferCase:
    id: str
    model: str
    inputs: dict[str, np.ndarray]
    version: str = ""
    # Values JSON cannot carry (NaN, infinities) or the client refuses to send as JSON (BF16).
    json_ok: bool = True
    # Exact equality, or a tolerance for computed floats (batched kernels may round differently).
    rtol: float = 0.0


def _ints(dtype, shape) -> np.ndarray:
    info = np.iinfo(dtype)
    values = [info.min, info.max, 0, 1, info.max - 1, info.min + 1 if info.min else 2, 7, 42, 100, 3]
    return np.resize(np.array(values, dtype=dtype), shape)


def identity_cases() -> list[InferCase]:
    cases = []
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64):
        name = f"identity-{np.dtype(dtype).name}"
        cases.append(InferCase(name, name, {"INPUT": _ints(dtype, (2, 5))}))
    cases.append(
        InferCase("identity-bool", "identity-bool", {"INPUT": np.array([[True, False, True], [False, False, True]])})
    )
    finite32 = np.array([[0.0, -0.0, 1.5, -2.25, 3.4028235e38], [1.17549435e-38, 1e-45, -7.0, 0.1, 1e10]], dtype=np.float32)
    cases.append(InferCase("identity-fp32", "identity-fp32", {"INPUT": finite32}))
    cases.append(
        InferCase(
            "identity-fp32-nonfinite",
            "identity-fp32",
            {"INPUT": np.array([[np.nan, np.inf, -np.inf]], dtype=np.float32)},
            json_ok=False,
        )
    )
    finite64 = np.array([[0.1, -1e300, 5e-324, 2.0**53 + 2, np.pi]], dtype=np.float64)
    cases.append(InferCase("identity-fp64", "identity-fp64", {"INPUT": finite64}))
    # identity-fp16 has no batch dimension: shape [n].
    fp16 = np.array([0.0, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 0.333], dtype=np.float16)
    cases.append(InferCase("identity-fp16", "identity-fp16", {"INPUT": fp16}))
    bf16 = np.array([[1.0, -2.5, 3.0e38, 1e-30, 0.1]], dtype=ml_dtypes.bfloat16)
    cases.append(InferCase("identity-bf16", "identity-bf16", {"INPUT": bf16}, json_ok=False))
    # identity-bytes has no batch dimension either.
    text = np.array(["", "plain ascii", "naïve café", "🚀 rocket", "x" * 1000], dtype=object)
    cases.append(InferCase("identity-bytes", "identity-bytes", {"INPUT": text}))
    return cases


def demo_cases() -> list[InferCase]:
    rng = np.random.default_rng(20261128)
    features = np.vstack(
        [
            np.zeros(8),
            [0.9, 1.0, 0.8, 0, 0, 0, 0, 1.0],
            [0, 0, 0, 1.0, 1.0, 0.5, 1.0, 0],
            rng.uniform(0, 1, size=(3, 8)),
        ]
    ).astype(np.float32)
    words = np.array(
        [
            ["urgent", "medevac", "for", "two", "casualties", "at", "the", "checkpoint"],
            ["routine", "fuel", "convoy", "to", "the", "depot", "", ""],
            ["drone", "sighting", "near", "perimeter", "hostile", "movement", "attack", "now"],
        ],
        dtype=object,
    )
    return [
        InferCase("benchmark-echo", "benchmark-echo", {"TEXT": np.array([["hello, gateway"], ["ünïcödé 🚀"]], dtype=object)}),
        InferCase("threat-triage", "threat-triage", {"FEATURES": features}, rtol=1e-6),
        InferCase("mission-summarizer", "mission-summarizer", {"TEXT": words}, rtol=1e-6),
    ]


def simple_cases() -> list[InferCase]:
    a = np.arange(32, dtype=np.float32).reshape(2, 16) * np.float32(0.5)
    b = np.linspace(-3, 3, 32, dtype=np.float32).reshape(2, 16)
    big = np.array([2**62, -(2**62), 2**53 + 1, -(2**53) - 1] + list(range(12)), dtype=np.int64)
    ones = np.array([1] * 8 + [-7] * 8, dtype=np.int64)
    return [
        InferCase("simple-fp32", "simple-fp32", {"INPUT0": a, "INPUT1": b}),
        InferCase("simple-int64", "simple-int64", {"INPUT0": big, "INPUT1": ones}),
    ]


def other_cases() -> list[InferCase]:
    x = np.array([[1.0, -2.0, 3.5, 0.25], [4.0, 5.0, -6.0, 0.0]], dtype=np.float32)
    return [
        InferCase("versioned-scale-v1", "versioned-scale", {"INPUT": x}, version="1"),
        InferCase("versioned-scale-v2", "versioned-scale", {"INPUT": x}, version="2"),
        InferCase("noconfig-square", "noconfig-square", {"INPUT": x}),
    ]


ALL_CASES = demo_cases() + simple_cases() + identity_cases() + other_cases()
