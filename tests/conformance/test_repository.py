"""Repository API (explicit unload and load) and statistics, as tritonclient drives them."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# Polling bound for an unload/load to show in readiness (Triton's unload may finish asynchronously).
SETTLE_S = 10.0


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {SETTLE_S} s waiting for {what}")
        time.sleep(0.1)


def is_ready(client, model: str) -> bool:
    try:
        return client.is_model_ready(model)
    except InferenceServerException:
        return False


@pytest.mark.parametrize(
    "protocol,model,module",
    [("http", "identity-int8", httpclient), ("grpc", "identity-int16", grpcclient)],
)
def test_unload_then_load(http_client, grpc_client, protocol, model, module):
    client = http_client if protocol == "http" else grpc_client
    dtype = np.int8 if model.endswith("int8") else np.int16
    x = np.array([[1, 2, 3]], dtype=dtype)

    def call():
        i = module.InferInput("INPUT", [1, 3], "INT8" if dtype == np.int8 else "INT16")
        i.set_data_from_numpy(x)
        return client.infer(model, [i]).as_numpy("OUTPUT")

    np.testing.assert_array_equal(call(), x)
    client.unload_model(model)
    try:
        wait_for(lambda: not is_ready(client, model), f"{model} to unload")
        with pytest.raises(InferenceServerException) as err:
            call()
        status = err.value.status() or ""
        # An unloaded model is unavailable (503) or, as Triton says, unknown / not found (404);
        # either way a clear error, never an answer.
        assert status in ("404", "503", "400", "StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND"), err.value
        index = http_client.get_model_repository_index()
        states = {m["name"]: m.get("state") for m in index}
        assert states.get(model) != "READY", index
    finally:
        client.load_model(model)
    wait_for(lambda: is_ready(client, model), f"{model} to load again")
    np.testing.assert_array_equal(call(), x)


def test_load_of_an_unknown_model_fails(http_client, grpc_client):
    with pytest.raises(InferenceServerException):
        http_client.load_model("no-such-model")
    with pytest.raises(InferenceServerException):
        grpc_client.load_model("no-such-model")


def success_count_http(client, model: str) -> int:
    stats = client.get_inference_statistics(model)
    (entry,) = [s for s in stats["model_stats"] if s["name"] == model]
    return int(entry["inference_stats"]["success"]["count"])


def success_count_grpc(client, model: str) -> int:
    stats = client.get_inference_statistics(model)
    (entry,) = [s for s in stats.model_stats if s.name == model]
    return int(entry.inference_stats.success.count)


def test_statistics_count_successful_requests(http_client, grpc_client):
    model = "identity-uint32"
    before_http = success_count_http(http_client, model)
    before_grpc = success_count_grpc(grpc_client, model)
    assert before_http == before_grpc
    for _ in range(3):
        i = httpclient.InferInput("INPUT", [1, 2], "UINT32")
        i.set_data_from_numpy(np.array([[1, 2]], dtype=np.uint32))
        http_client.infer(model, [i])
    assert success_count_http(http_client, model) == before_http + 3
    assert success_count_grpc(grpc_client, model) == before_grpc + 3
