"""One `infer` call, four ways a Triton client sends it.

- `http-json`:   tritonclient.http, tensors as JSON arrays, outputs requested as JSON.
- `http-binary`: tritonclient.http, tensors in Triton's binary extension, outputs requested binary.
- `http-default`: tritonclient.http, binary inputs and no outputs named (all outputs come back,
  binary, through the request-level `binary_data_output` parameter).
- `grpc`:        tritonclient.grpc, tensors in `raw_input_contents`.

Every variant returns {output name: numpy array}, BYTES elements decoded to `str` so that JSON and
binary answers compare alike.
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

PROTOCOLS = ["http-json", "http-binary", "http-default", "grpc"]


def triton_datatype(array: np.ndarray) -> str:
    if array.dtype.name == "bfloat16":
        return "BF16"
    return np_to_triton_dtype(array.dtype)


def decode_bytes(array: np.ndarray) -> np.ndarray:
    """BYTES come back as bytes (binary) or str (JSON); make them all str."""
    if array.dtype != np.object_:
        return array
    flat = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.ravel().tolist()]
    return np.array(flat, dtype=object).reshape(array.shape)


def infer(
    protocol: str,
    clients: dict,
    model: str,
    inputs: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    version: str = "",
) -> dict[str, np.ndarray]:
    """Run one inference; `outputs` None means "all the model's outputs" (listed from metadata
    except for http-default, which asks for none and so gets all)."""
    if protocol.startswith("http"):
        return _infer_http(protocol, clients["http"], model, inputs, outputs, version)
    if protocol == "grpc":
        return _infer_grpc(clients["grpc"], model, inputs, outputs, version)
    raise ValueError(protocol)


def _output_names(client, model: str, version: str, is_grpc: bool) -> list[str]:
    meta = client.get_model_metadata(model, version)
    if is_grpc:
        return [o.name for o in meta.outputs]
    return [o["name"] for o in meta["outputs"]]


def _infer_http(protocol, client, model, inputs, outputs, version):
    binary = protocol != "http-json"
    request_inputs = []
    for name, array in inputs.items():
        i = httpclient.InferInput(name, list(array.shape), triton_datatype(array))
        i.set_data_from_numpy(array, binary_data=binary)
        request_inputs.append(i)
    if protocol == "http-default" and outputs is None:
        requested = None
        names = _output_names(client, model, version, is_grpc=False)
    else:
        names = outputs if outputs is not None else _output_names(client, model, version, is_grpc=False)
        requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = client.infer(model, request_inputs, model_version=version, outputs=requested)
    response = result.get_response()
    got = {o["name"] for o in response.get("outputs", [])}
    assert got == set(names), f"asked for outputs {sorted(names)}, the response has {sorted(got)}"
    return {n: decode_bytes(result.as_numpy(n)) for n in names}


def _infer_grpc(client, model, inputs, outputs, version):
    request_inputs = []
    for name, array in inputs.items():
        i = grpcclient.InferInput(name, list(array.shape), triton_datatype(array))
        i.set_data_from_numpy(array)
        request_inputs.append(i)
    names = outputs if outputs is not None else _output_names(client, model, version, is_grpc=True)
    requested = [grpcclient.InferRequestedOutput(n) for n in names]
    result = client.infer(model, request_inputs, model_version=version, outputs=requested)
    got = {o.name for o in result.get_response().outputs}
    assert got == set(names), f"asked for outputs {sorted(names)}, the response has {sorted(got)}"
    return {n: decode_bytes(result.as_numpy(n)) for n in names}
