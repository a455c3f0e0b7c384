"""Each committed model computes what models/README.md says, checked in Python onnxruntime.

The references below are written from the README's description in plain numpy, so a change to a
model's meaning fails here before any server is involved. Needs no modelserver.
"""

import numpy as np
import onnxruntime as ort
import pytest

from models_under_test import MODELS_DIR, run_onnxruntime, session

THREAT_W = np.array(
    [
        [-1.0, 1.5, 0.5],
        [-0.5, 1.0, 0.25],
        [-1.0, 1.5, 1.0],
        [-1.5, 1.0, 2.5],
        [-2.0, 0.5, 4.0],
        [-1.5, 1.0, 3.0],
        [-1.0, 1.0, 2.0],
        [-1.0, 2.0, 1.5],
    ]
)
THREAT_B = np.array([2.0, 0.0, -2.0])
THREAT_CLASSES = ["benign", "suspicious", "malicious"]

TOPICS = ["general", "logistics", "reconnaissance", "medical", "security"]
# A few words from the README's table: word -> (topic, urgency weight).
MISSION_WORDS = {
    "urgent": (None, 2.0),
    "medevac": ("medical", 2.0),
    "casualties": ("medical", 1.5),
    "checkpoint": ("security", 0.0),
    "routine": (None, -1.0),
    "fuel": ("logistics", 0.0),
    "convoy": ("logistics", 0.0),
    "drone": ("reconnaissance", 0.0),
    "attack": ("security", 1.5),
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_every_model_loads_in_onnxruntime():
    paths = sorted(MODELS_DIR.glob("*/*/model.onnx"))
    assert len(paths) >= 20, paths
    for path in paths:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_threat_triage_is_a_softmax_over_the_documented_linear_layer():
    rng = np.random.default_rng(7)
    x = np.vstack([np.zeros(8), np.ones(8), rng.uniform(0, 1, size=(6, 8))]).astype(np.float32)
    probs, labels = run_onnxruntime("threat-triage", {"FEATURES": x})
    logits = x.astype(np.float64) @ THREAT_W + THREAT_B
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert [row[0] for row in labels.tolist()] == [THREAT_CLASSES[i] for i in logits.argmax(axis=1)]
    assert labels[0, 0] == "benign" and labels[1, 0] == "malicious"


@pytest.mark.parametrize(
    "words",
    [
        ["urgent", "medevac", "for", "two", "casualties", "at", "the", "checkpoint"],
        ["routine", "fuel", "convoy", "", ""],
        ["drone", "attack", "attack", "urgent", "now?"],
        ["nothing", "known", "here"],
        ["URGENT", "Medevac"],  # case-sensitive: unknown words
    ],
)
def test_mission_summarizer_scores_keywords_as_documented(words):
    summary, scores, urgency = run_onnxruntime("mission-summarizer", {"TEXT": np.array([words], dtype=object)})
    expected = np.array([0.5, 0, 0, 0, 0])
    u = -2.0
    for w in words:
        topic, weight = MISSION_WORDS.get(w, (None, 0.0))
        if topic is not None:
            expected[TOPICS.index(topic)] += 1.0
        u += weight
    np.testing.assert_allclose(scores[0], expected, rtol=1e-6)
    np.testing.assert_allclose(urgency[0, 0], sigmoid(u), rtol=1e-5)
    assert summary[0, 0] == TOPICS[int(expected.argmax())]


def test_benchmark_echo_returns_its_text():
    text = np.array([["hello"], ["naïve 🚀"], [""]], dtype=object)
    (echo,) = run_onnxruntime("benchmark-echo", {"TEXT": text})
    assert echo.tolist() == text.tolist()


@pytest.mark.parametrize("name,dtype,shape", [("simple-fp32", np.float32, (3, 16)), ("simple-int64", np.int64, (16,))])
def test_simple_adds_and_subtracts(name, dtype, shape):
    a = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    b = np.full(shape, 3, dtype=dtype)
    if dtype == np.int64:
        a = a + np.int64(2**60)
    out0, out1 = run_onnxruntime(name, {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(out0, a + b)
    np.testing.assert_array_equal(out1, a - b)


def test_versioned_scale_multiplies_by_its_version():
    x = np.array([[1.0, -2.0, 3.5, 0.0]], dtype=np.float32)
    for version in (1, 2):
        (out,) = run_onnxruntime("versioned-scale", {"INPUT": x}, version=version)
        np.testing.assert_array_equal(out, x * version)


def test_noconfig_square_has_no_config_and_squares():
    assert not (MODELS_DIR / "noconfig-square" / "config.pbtxt").exists()
    x = np.array([[1.0, -2.0, 3.0, 0.5]], dtype=np.float32)
    (out,) = run_onnxruntime("noconfig-square", {"INPUT": x})
    np.testing.assert_array_equal(out, x * x)


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("identity-bool", np.bool_),
        ("identity-uint8", np.uint8),
        ("identity-uint16", np.uint16),
        ("identity-uint32", np.uint32),
        ("identity-uint64", np.uint64),
        ("identity-int8", np.int8),
        ("identity-int16", np.int16),
        ("identity-int32", np.int32),
        ("identity-int64", np.int64),
        ("identity-fp32", np.float32),
        ("identity-fp64", np.float64),
    ],
)
def test_identity_models_return_their_input(name, dtype):
    x = (np.arange(10).reshape(2, 5) % (2 if dtype == np.bool_ else 10)).astype(dtype)
    (out,) = run_onnxruntime(name, {"INPUT": x})
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


def test_identity_fp16_and_bytes_have_no_batch_dimension():
    x = np.array([0.5, -1.25, 65504.0], dtype=np.float16)
    (out,) = run_onnxruntime("identity-fp16", {"INPUT": x})
    np.testing.assert_array_equal(out, x)
    s = np.array(["a", "", "ünïcode"], dtype=object)
    (out,) = run_onnxruntime("identity-bytes", {"INPUT": s})
    assert out.tolist() == s.tolist()


def test_identity_bf16_returns_its_bits():
    import ml_dtypes

    x = np.array([[1.0, -2.5, 3.0e38]], dtype=ml_dtypes.bfloat16)
    (out,) = run_onnxruntime("identity-bf16", {"INPUT": x})
    np.testing.assert_array_equal(out.view(np.uint16), x.view(np.uint16))


@pytest.mark.parametrize("config_path", sorted(MODELS_DIR.glob("*/config.pbtxt")), ids=lambda p: p.parent.name)
def test_config_pbtxt_is_a_triton_model_config_agreeing_with_the_onnx_file(config_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    model = config_path.parent.name
    assert config.name == model
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    version = max(int(p.name) for p in config_path.parent.iterdir() if p.name.isdigit())
    sess = session(model, version)
    batch = [-1] if config.max_batch_size > 0 else []
    for declared, actual in ((config.input, sess.get_inputs()), (config.output, sess.get_outputs())):
        assert [t.name for t in declared] == [v.name for v in actual]
        for t, v in zip(declared, actual):
            onnx_dims = [d if isinstance(d, int) else -1 for d in v.shape]
            assert batch + list(t.dims) == onnx_dims, f"{model} {t.name}"
            type_name = model_config_pb2.DataType.Name(t.data_type)
            assert ORT_TYPES[v.type] == type_name, f"{model} {t.name}"


ORT_TYPES = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(string)": "TYPE_STRING",
}
