"""Health, server and model metadata, model configuration and repository index, as tritonclient
reads them over HTTP and gRPC, checked against the model files themselves."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from models_under_test import MODELS_DIR, session

ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}


def model_versions() -> dict[str, list[str]]:
    return {
        d.name: sorted((v.name for v in d.iterdir() if v.is_dir() and v.name.isdigit()), key=int)
        for d in sorted(MODELS_DIR.iterdir())
        if d.is_dir()
    }


MODELS = sorted(model_versions())


def committed_config(model: str) -> model_config_pb2.ModelConfig | None:
    path = MODELS_DIR / model / "config.pbtxt"
    if not path.exists():
        return None
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def onnx_signature(model: str) -> dict[str, dict[str, tuple[str, list[int]]]]:
    """{"inputs"|"outputs": {name: (datatype, shape with -1 for symbolic dims)}} from ONNX."""
    version = int(model_versions()[model][-1])
    sess = session(model, version)

    def sig(values):
        return {
            v.name: (ORT_TO_OIP[v.type], [d if isinstance(d, int) else -1 for d in v.shape]) for v in values
        }

    return {"inputs": sig(sess.get_inputs()), "outputs": sig(sess.get_outputs())}


# --- health ---------------------------------------------------------------------------------


def test_server_is_live_and_ready(http_client, grpc_client):
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()


@pytest.mark.parametrize("model", MODELS)
def test_every_model_is_ready(http_client, grpc_client, model):
    assert http_client.is_model_ready(model), f"{model} not ready over HTTP"
    assert grpc_client.is_model_ready(model), f"{model} not ready over gRPC"
    for version in model_versions()[model]:
        assert http_client.is_model_ready(model, version)
        assert grpc_client.is_model_ready(model, version)


def not_ready(client, model: str, version: str = "") -> bool:
    """Not ready: either a `false` answer or an error (Triton's gRPC may answer an unknown model
    with NOT_FOUND rather than ready=false); both are what a client sees as "not ready"."""
    try:
        return not client.is_model_ready(model, version)
    except InferenceServerException:
        return True


def test_unknown_model_and_version_are_not_ready(http_client, grpc_client):
    for client in (http_client, grpc_client):
        assert not_ready(client, "no-such-model")
        assert not_ready(client, "simple-fp32", "99")


def test_grpc_health_service_says_serving(modelserver):
    # grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""); the response's
    # field 1 is the status enum and SERVING is 1, i.e. the bytes 08 01.
    with grpc.insecure_channel(modelserver.grpc_url) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        assert check(b"", timeout=10) == b"\x08\x01"


# --- metadata -------------------------------------------------------------------------------


def test_server_metadata(http_client, grpc_client):
    meta = http_client.get_server_metadata()
    assert meta["name"] and meta["version"], meta
    assert isinstance(meta.get("extensions", []), list)
    gmeta = grpc_client.get_server_metadata()
    assert gmeta.name == meta["name"] and gmeta.version == meta["version"]


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata_describes_the_onnx_model(http_client, grpc_client, model):
    want = onnx_signature(model)
    meta = http_client.get_model_metadata(model)
    assert meta["name"] == model
    assert meta["platform"] == "onnxruntime_onnx"
    assert sorted(meta["versions"], key=int) == model_versions()[model]
    for kind in ("inputs", "outputs"):
        got = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta[kind]}
        assert got == want[kind], f"HTTP {kind}"

    gmeta = grpc_client.get_model_metadata(model)
    assert gmeta.name == model and gmeta.platform == "onnxruntime_onnx"
    assert sorted(gmeta.versions, key=int) == model_versions()[model]
    for kind in ("inputs", "outputs"):
        got = {t.name: (t.datatype, list(t.shape)) for t in getattr(gmeta, kind)}
        assert got == want[kind], f"gRPC {kind}"


def test_model_metadata_for_one_version(http_client):
    meta = http_client.get_model_metadata("versioned-scale", "1")
    assert meta["name"] == "versioned-scale"


# --- configuration --------------------------------------------------------------------------


def expected_config(model: str) -> model_config_pb2.ModelConfig:
    config = committed_config(model)
    if config is not None:
        return config
    # noconfig-square: completed from ONNX, the symbolic first dimension being the batch dimension.
    sig = onnx_signature(model)
    config = model_config_pb2.ModelConfig(name=model)
    for kind, field in (("inputs", config.input), ("outputs", config.output)):
        for name, (datatype, shape) in sig[kind].items():
            dt = model_config_pb2.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")
            field.add(name=name, data_type=dt, dims=shape[1:])
    return config


def assert_config_matches(got: model_config_pb2.ModelConfig, want: model_config_pb2.ModelConfig, where: str):
    assert got.name == want.name, where
    if want.max_batch_size:
        assert got.max_batch_size == want.max_batch_size, where
    else:
        # Either given as 0 in config.pbtxt, or (no config) chosen by the server, but then > 0.
        if committed_config(want.name) is None:
            assert got.max_batch_size > 0, f"{where}: a symbolic first dim should make the model batchable"
        else:
            assert got.max_batch_size == 0, where
    for kind in ("input", "output"):
        g = {t.name: (t.data_type, list(t.dims)) for t in getattr(got, kind)}
        w = {t.name: (t.data_type, list(t.dims)) for t in getattr(want, kind)}
        assert g == w, f"{where} {kind}"
    assert got.HasField("dynamic_batching") == want.HasField("dynamic_batching"), where
    if want.HasField("dynamic_batching"):
        assert (
            got.dynamic_batching.max_queue_delay_microseconds == want.dynamic_batching.max_queue_delay_microseconds
        ), where


@pytest.mark.parametrize("model", MODELS)
def test_model_config(http_client, grpc_client, model):
    want = expected_config(model)
    http_json = http_client.get_model_config(model)
    # Triton answers with the ModelConfig message in protobuf's JSON mapping; parse it the same way
    # perf_analyzer and the Python client's users do.
    got = json_format.ParseDict(http_json, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
    assert_config_matches(got, want, "HTTP /config")
    gconfig = grpc_client.get_model_config(model).config
    assert_config_matches(gconfig, want, "gRPC ModelConfig")


def test_model_config_of_one_version(http_client, grpc_client):
    want = expected_config("versioned-scale")
    got = json_format.ParseDict(
        http_client.get_model_config("versioned-scale", "1"), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
    )
    assert_config_matches(got, want, "HTTP /versions/1/config")
    assert_config_matches(grpc_client.get_model_config("versioned-scale", "2").config, want, "gRPC version 2")


def test_model_config_json_uses_triton_names(http_client):
    config = http_client.get_model_config("threat-triage")
    assert config["name"] == "threat-triage"
    assert config["max_batch_size"] == 32
    assert [i["name"] for i in config["input"]] == ["FEATURES"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in config["input"][0]["dims"]] == [8]
    assert {o["name"]: o["data_type"] for o in config["output"]} == {
        "PROBABILITIES": "TYPE_FP32",
        "LABEL": "TYPE_STRING",
    }


# --- repository -----------------------------------------------------------------------------


def test_repository_index_lists_every_model_ready(http_client, grpc_client):
    index = http_client.get_model_repository_index()
    ready = {(m["name"], m.get("version", "")) for m in index if m.get("state") == "READY"}
    for model, versions in model_versions().items():
        assert any(name == model for name, _ in ready), f"{model} missing or not READY in {index}"
        if model == "versioned-scale":
            assert {v for name, v in ready if name == model} >= set(versions), index
    gindex = grpc_client.get_model_repository_index()
    gready = {m.name for m in gindex.models if m.state == "READY"}
    assert gready >= set(MODELS), gindex


def test_metrics_use_triton_names(http_client, modelserver):
    import numpy as np
    import tritonclient.http as httpclient

    i0 = httpclient.InferInput("INPUT", [1, 4], "FP32")
    i0.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    http_client.infer("noconfig-square", [i0])
    with urllib.request.urlopen(modelserver.metrics_url, timeout=10) as r:
        text = r.read().decode()
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and 'model="noconfig-square"' in line
    ]
    assert lines, f"no nv_inference_request_success for noconfig-square in:\n{text[:3000]}"
    assert 'version="1"' in lines[0]
    assert float(lines[0].rsplit(" ", 1)[1]) >= 1
