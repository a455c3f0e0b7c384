"""Where the committed model repository is and how Python onnxruntime runs its models.

`run_onnxruntime` is the reference the conformance tests compare the server against: the same
model file, run in-process by the `onnxruntime` wheel.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "models"

_SESSIONS: dict[tuple[str, int], ort.InferenceSession] = {}


def session(model: str, version: int = 1) -> ort.InferenceSession:
    key = (model, version)
    if key not in _SESSIONS:
        path = MODELS_DIR / model / str(version) / "model.onnx"
        _SESSIONS[key] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def _is_bf16(array: np.ndarray) -> bool:
    return array.dtype.name == "bfloat16"


def run_onnxruntime(model: str, inputs: dict[str, np.ndarray], version: int = 1) -> list[np.ndarray]:
    """Outputs in the model's output order. BF16 travels as its raw 16-bit patterns: onnxruntime's
    Python API has no numpy type for it, so it is bound through OrtValues."""
    sess = session(model, version)
    if not any(_is_bf16(a) for a in inputs.values()):
        return sess.run(None, inputs)
    import ml_dtypes

    binding = sess.io_binding()
    for name, array in inputs.items():
        if _is_bf16(array):
            value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                np.ascontiguousarray(array).view(np.uint16), onnx_element_type=16
            )
            binding.bind_ortvalue_input(name, value)
        else:
            binding.bind_cpu_input(name, array)
    outputs = []
    for out in sess.get_outputs():
        # Only identity-bf16 has BF16 outputs; its output has its input's shape.
        assert out.type == "tensor(bfloat16)", f"mixed BF16 models are not supported here: {out}"
        buf = np.zeros(next(iter(inputs.values())).shape, dtype=np.uint16)
        binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, onnx_element_type=16))
        outputs.append(buf)
    sess.run_with_iobinding(binding)
    return [b.view(ml_dtypes.bfloat16) for b in outputs]
