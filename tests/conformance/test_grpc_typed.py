"""ModelInfer with typed `contents` (not `raw_input_contents`), as non-Python gRPC clients send it.

tritonclient always sends raw contents, so these requests are built with its generated stub.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from models_under_test import run_onnxruntime

# model, datatype, contents field, values, numpy dtype
CASES = [
    ("identity-fp32", "FP32", "fp32_contents", [1.5, -2.0, 0.0, 3.25], np.float32),
    ("identity-fp64", "FP64", "fp64_contents", [0.1, -1e300], np.float64),
    ("identity-int64", "INT64", "int64_contents", [2**62, -(2**62), 0], np.int64),
    ("identity-int32", "INT32", "int_contents", [-5, 7, 2**31 - 1], np.int32),
    ("identity-int8", "INT8", "int_contents", [-128, 127, 0], np.int8),
    ("identity-uint64", "UINT64", "uint64_contents", [2**64 - 1, 0], np.uint64),
    ("identity-uint16", "UINT16", "uint_contents", [65535, 1], np.uint16),
    ("identity-bool", "BOOL", "bool_contents", [True, False, True], np.bool_),
]


@pytest.fixture(scope="module")
def stub(modelserver):
    with grpc.insecure_channel(modelserver.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("model,datatype,field,values,dtype", CASES, ids=[c[0] for c in CASES])
def test_typed_contents(stub, model, datatype, field, values, dtype):
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="INPUT", datatype=datatype, shape=[1, len(values)])
    getattr(tensor.contents, field).extend(values)
    response = stub.ModelInfer(request, timeout=30)
    (expected,) = run_onnxruntime(model, {"INPUT": np.array([values], dtype=dtype)})
    out = response.outputs[0]
    assert out.name == "OUTPUT" and out.datatype == datatype and list(out.shape) == [1, len(values)]
    # Triton answers in raw_output_contents whatever the request used.
    if response.raw_output_contents:
        got = np.frombuffer(response.raw_output_contents[0], dtype=dtype).reshape(1, -1)
    else:
        got = np.array([list(getattr(out.contents, field))], dtype=dtype)
    np.testing.assert_array_equal(got, expected)


def test_typed_bytes_contents(stub):
    request = service_pb2.ModelInferRequest(model_name="identity-bytes")
    tensor = request.inputs.add(name="INPUT", datatype="BYTES", shape=[3])
    tensor.contents.bytes_contents.extend([b"alpha", "ünï".encode(), b""])
    response = stub.ModelInfer(request, timeout=30)
    if response.raw_output_contents:
        raw = response.raw_output_contents[0]
        got, off = [], 0
        while off < len(raw):
            (n,) = np.frombuffer(raw[off : off + 4], dtype="<u4")
            got.append(raw[off + 4 : off + 4 + int(n)])
            off += 4 + int(n)
    else:
        got = list(response.outputs[0].contents.bytes_contents)
    assert got == [b"alpha", "ünï".encode(), b""]
