"""Concurrent requests to dynamically batched models each get back their own results.

The server may merge these requests into one batch; whatever it does, request k must see the
outputs for its own inputs, in order. Sent through tritonclient's async APIs, 16 at a time.
"""

from __future__ import annotations

import queue

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from models_under_test import run_onnxruntime

N = 16


def simple_inputs(k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = 1 + k % 2  # mix batch sizes 1 and 2
    a = np.full((rows, 16), k, dtype=np.float32) + np.arange(16, dtype=np.float32)
    b = np.full((rows, 16), k * 0.5, dtype=np.float32)
    return a, b


def test_http_concurrent_requests_get_their_own_results(http_client):
    pending = []
    for k in range(N):
        a, b = simple_inputs(k)
        inputs = [httpclient.InferInput("INPUT0", list(a.shape), "FP32"), httpclient.InferInput("INPUT1", list(b.shape), "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        pending.append((k, a, b, http_client.async_infer("simple-fp32", inputs)))
    for k, a, b, req in pending:
        result = req.get_result(timeout=60)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b, err_msg=f"request {k}")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b, err_msg=f"request {k}")


def test_grpc_concurrent_bytes_requests_get_their_own_text(grpc_client):
    done: queue.Queue = queue.Queue()
    texts = {}
    for k in range(N):
        text = np.array([[f"request {k}: " + "é" * k]], dtype=object)
        texts[k] = text
        i = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        i.set_data_from_numpy(text)
        grpc_client.async_infer(
            "benchmark-echo", [i], callback=lambda result, error, k=k: done.put((k, result, error)), request_id=str(k)
        )
    for _ in range(N):
        k, result, error = done.get(timeout=60)
        assert error is None, f"request {k}: {error}"
        assert result.as_numpy("ECHO").tolist() == [[texts[k][0, 0].encode()]], f"request {k}"


def test_http_concurrent_triage_rows_match_onnxruntime(http_client):
    rng = np.random.default_rng(5)
    pending = []
    for k in range(N):
        x = rng.uniform(0, 1, size=(1, 8)).astype(np.float32)
        i = httpclient.InferInput("FEATURES", [1, 8], "FP32")
        i.set_data_from_numpy(x)
        pending.append((x, http_client.async_infer("threat-triage", [i])))
    for x, req in pending:
        result = req.get_result(timeout=60)
        probs, labels = run_onnxruntime("threat-triage", {"FEATURES": x})
        np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), probs, rtol=1e-6, atol=1e-7)
        assert result.as_numpy("LABEL").tolist() == [[labels[0, 0].encode()]]
