"""Bad requests get the protocol's error answer: `{"error": "..."}` with 400/404 over REST,
INVALID_ARGUMENT/NOT_FOUND over gRPC, and a message naming the problem; the server keeps serving.

REST requests here are written by hand (http.client) because tritonclient refuses to build most of
them; gRPC ones use tritonclient's generated stub for the same reason.
"""

from __future__ import annotations

import http.client
import json
import struct

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

ONES16 = [1.0] * 16


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {"unparsed": raw[:500].decode("utf-8", "replace")}
    return resp.status, payload


def simple_request(**overrides) -> dict:
    request = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": ONES16},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": ONES16},
        ]
    }
    request.update(overrides)
    return request


def assert_error(status: int, body: dict, want_status: int, *mentions: str) -> None:
    assert status == want_status, f"status {status}, want {want_status}; body {body}"
    assert isinstance(body.get("error"), str) and body["error"], f"not an OIP error body: {body}"
    for word in mentions:
        assert word.lower() in body["error"].lower(), f"error {body['error']!r} does not mention {word!r}"


def test_valid_request_is_accepted(modelserver):
    """The baseline the error cases below differ from in exactly one way."""
    status, body = post(modelserver, "/v2/models/simple-fp32/infer", json.dumps(simple_request()).encode())
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["OUTPUT0"]["data"] == [2.0] * 16
    assert outputs["OUTPUT1"]["data"] == [0.0] * 16


def test_unknown_model_is_404(modelserver):
    status, body = post(modelserver, "/v2/models/no-such-model/infer", json.dumps(simple_request()).encode())
    assert_error(status, body, 404, "no-such-model")


def test_unknown_version_is_404(modelserver):
    status, body = post(modelserver, "/v2/models/simple-fp32/versions/7/infer", json.dumps(simple_request()).encode())
    assert_error(status, body, 404)


def test_malformed_json_is_400(modelserver):
    status, body = post(modelserver, "/v2/models/simple-fp32/infer", b'{"inputs": [')
    assert_error(status, body, 400)


BAD_INPUTS = {
    "wrong-datatype": (
        [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
         {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": ONES16}],
        "INPUT0",
    ),
    "data-shorter-than-shape": (
        [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": ONES16[:15]},
         {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": ONES16}],
        "INPUT0",
    ),
    "wrong-fixed-dim": (
        [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 15], "data": ONES16[:15]},
         {"name": "INPUT1", "datatype": "FP32", "shape": [1, 15], "data": ONES16[:15]}],
        "INPUT",
    ),
    "missing-input": ([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": ONES16}], "INPUT1"),
    "unknown-input": (
        [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": ONES16},
         {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": ONES16},
         {"name": "INPUT9", "datatype": "FP32", "shape": [1, 16], "data": ONES16}],
        "INPUT9",
    ),
    "batch-over-max-batch-size": (
        [{"name": "INPUT0", "datatype": "FP32", "shape": [9, 16], "data": [1.0] * 144},
         {"name": "INPUT1", "datatype": "FP32", "shape": [9, 16], "data": [1.0] * 144}],
        "",
    ),
    "string-in-fp32-data": (
        [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": ["x"] * 16},
         {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": ONES16}],
        "INPUT0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_400_and_name_the_problem(modelserver, case):
    inputs, mention = BAD_INPUTS[case]
    status, body = post(modelserver, "/v2/models/simple-fp32/infer", json.dumps({"inputs": inputs}).encode())
    assert_error(status, body, 400, *([mention] if mention else []))


def test_unknown_requested_output_is_400(modelserver):
    request = simple_request(outputs=[{"name": "OUTPUT7"}])
    status, body = post(modelserver, "/v2/models/simple-fp32/infer", json.dumps(request).encode())
    assert_error(status, body, 400, "OUTPUT7")


def test_huge_declared_shape_is_rejected_without_allocating(modelserver):
    request = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 2**40], "data": [1.0]}]}
    status, body = post(modelserver, "/v2/models/identity-fp32/infer", json.dumps(request).encode())
    assert_error(status, body, 400, "INPUT")
    status, _ = post(modelserver, "/v2/models/simple-fp32/infer", json.dumps(simple_request()).encode())
    assert status == 200, "the server should still serve after the rejected request"


def binary_request(header: dict, payload: bytes, claimed_header_len: int | None = None):
    head = json.dumps(header).encode()
    length = len(head) if claimed_header_len is None else claimed_header_len
    return head + payload, {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}


def test_binary_extension_round_trip(modelserver):
    a = np.arange(16, dtype=np.float32)
    header = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}],
    }
    body, headers = binary_request(header, a.tobytes() + a.tobytes())
    status, resp = post(modelserver, "/v2/models/simple-fp32/infer", body, headers)
    assert status == 200, resp
    assert resp["outputs"][0]["name"] == "OUTPUT0"
    assert resp["outputs"][0]["data"] == (a + a).tolist()


def test_binary_header_length_past_the_body_is_400(modelserver):
    header = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 4}}]}
    body, headers = binary_request(header, struct.pack("<f", 1.0), claimed_header_len=10_000)
    status, resp = post(modelserver, "/v2/models/identity-fp32/infer", body, headers)
    assert_error(status, resp, 400)


def test_binary_data_size_disagreeing_with_shape_is_400(modelserver):
    header = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 8}}]}
    body, headers = binary_request(header, b"\0" * 8)
    status, resp = post(modelserver, "/v2/models/identity-fp32/infer", body, headers)
    assert_error(status, resp, 400, "INPUT")


# --- gRPC -----------------------------------------------------------------------------------


def grpc_status(exc: InferenceServerException) -> str:
    return exc.status() or ""


def test_grpc_unknown_model_is_not_found(grpc_client):
    i = grpcclient.InferInput("INPUT", [1, 1], "FP32")
    i.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer("no-such-model", [i])
    assert grpc_status(err.value) == "StatusCode.NOT_FOUND", err.value


def test_grpc_wrong_datatype_is_invalid_argument(grpc_client):
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        i = grpcclient.InferInput(name, [1, 16], "INT32")
        i.set_data_from_numpy(np.ones((1, 16), dtype=np.int32))
        inputs.append(i)
    with pytest.raises(InferenceServerException) as err:
        grpc_client.infer("simple-fp32", inputs)
    assert grpc_status(err.value) == "StatusCode.INVALID_ARGUMENT", err.value
    assert "INPUT0" in err.value.message()


def test_grpc_raw_contents_length_mismatch_is_invalid_argument(modelserver):
    request = service_pb2.ModelInferRequest(model_name="identity-fp32")
    request.inputs.add(name="INPUT", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(b"\0" * 12)  # 3 floats for a [1, 4] tensor
    with grpc.insecure_channel(modelserver.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_non_utf8_bytes_are_rejected_naming_the_input(http_client, grpc_client, protocol):
    # ONNX Runtime's string tensors are C strings of UTF-8 text; bytes that are not must be refused
    # with a clear error, never truncated or mangled.
    import tritonclient.http as httpclient

    module, client = (httpclient, http_client) if protocol == "http" else (grpcclient, grpc_client)
    i = module.InferInput("INPUT", [2], "BYTES")
    i.set_data_from_numpy(np.array([b"\xff\xfe", b"ok"], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        client.infer("identity-bytes", [i])
    assert grpc_status(err.value) in ("400", "StatusCode.INVALID_ARGUMENT"), err.value
    assert "INPUT" in err.value.message()


@pytest.mark.parametrize(
    "call,message",
    [
        ("SystemSharedMemoryStatus", service_pb2.SystemSharedMemoryStatusRequest()),
        ("CudaSharedMemoryStatus", service_pb2.CudaSharedMemoryStatusRequest()),
        ("TraceSetting", service_pb2.TraceSettingRequest()),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_grpc_methods_not_offered_are_unimplemented(modelserver, call, message):
    with grpc.insecure_channel(modelserver.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, call)(message, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_stream_infer_is_unimplemented(modelserver):
    with grpc.insecure_channel(modelserver.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="identity-fp32")]), timeout=10))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
