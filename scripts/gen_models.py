#!/usr/bin/env python3
"""Generate the demo and conformance model repository (Triton layout) for modelserver.

Usage (with the bootstrap venv's python, which has `onnx` and `numpy`):

    python scripts/gen_models.py                 # writes ./models (committed)
    python scripts/gen_models.py --out DIR       # writes the same repository into DIR
    python scripts/gen_models.py --bench DIR     # also writes the large benchmark models into DIR
                                                 # (e.g. .tools/bench-models, never committed)

Every model is built from a fixed graph with fixed weights: the committed models use hand-written
weights (documented in models/README.md), the benchmark models use numpy's PCG64 generator with a
fixed seed. Output is byte-identical on every run (tests/conformance/test_generator.py checks it).

Each model is written as `<repo>/<name>/<version>/model.onnx` plus `<repo>/<name>/config.pbtxt`
(Triton's protobuf text format), except `noconfig-square`, which deliberately has no config so the
server must complete its metadata from the ONNX file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX opset 17 with IR version 8: both are well inside what onnxruntime 1.31 (and the `ort` crate's
# api-31) support, and old enough that any ONNX tooling reads them.
OPSET = 17
# `ai.onnx.ml` opset for CategoryMapper (the word -> id lookup in mission-summarizer).
ML_OPSET = 3
IR_VERSION = 8
PRODUCER = "gen_models.py"
PRODUCER_VERSION = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models"

# OIP datatype -> (ONNX element type, Triton config data_type).
TYPES = {
    "BOOL": (TensorProto.BOOL, "TYPE_BOOL"),
    "UINT8": (TensorProto.UINT8, "TYPE_UINT8"),
    "UINT16": (TensorProto.UINT16, "TYPE_UINT16"),
    "UINT32": (TensorProto.UINT32, "TYPE_UINT32"),
    "UINT64": (TensorProto.UINT64, "TYPE_UINT64"),
    "INT8": (TensorProto.INT8, "TYPE_INT8"),
    "INT16": (TensorProto.INT16, "TYPE_INT16"),
    "INT32": (TensorProto.INT32, "TYPE_INT32"),
    "INT64": (TensorProto.INT64, "TYPE_INT64"),
    "FP16": (TensorProto.FLOAT16, "TYPE_FP16"),
    "FP32": (TensorProto.FLOAT, "TYPE_FP32"),
    "FP64": (TensorProto.DOUBLE, "TYPE_FP64"),
    "BF16": (TensorProto.BFLOAT16, "TYPE_BF16"),
    "BYTES": (TensorProto.STRING, "TYPE_STRING"),
}


# --------------------------------------------------------------------------------------------
# Triton config.pbtxt
# --------------------------------------------------------------------------------------------


@dataclass
class Tensor:
    """One model input or output: OIP datatype and dims *without* the batch dimension."""

    name: str
    datatype: str
    dims: list[int]


@dataclass
class Config:
    """The subset of Triton's ModelConfig that the generator writes."""

    name: str
    max_batch_size: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    # None: no dynamic_batching block. Otherwise the fields to write inside it.
    dynamic_batching: dict | None = None
    version_policy_all: bool = False
    instance_count: int = 1

    def onnx_shape(self, t: Tensor) -> list[int | str]:
        """The ONNX shape of a tensor: a symbolic "batch" dimension first when batching."""
        dims: list[int | str] = [d if d >= 0 else f"d{i}" for i, d in enumerate(t.dims)]
        return (["batch"] + dims) if self.max_batch_size > 0 else dims

    def pbtxt(self) -> str:
        def tensors(kind: str, ts: list[Tensor]) -> list[str]:
            out = [f"{kind} ["]
            for i, t in enumerate(ts):
                dims = ", ".join(str(d) for d in t.dims)
                out += [
                    "  {",
                    f'    name: "{t.name}"',
                    f"    data_type: {TYPES[t.datatype][1]}",
                    f"    dims: [ {dims} ]",
                    "  }" + ("," if i + 1 < len(ts) else ""),
                ]
            out.append("]")
            return out

        lines = [
            f'name: "{self.name}"',
            'platform: "onnxruntime_onnx"',
            'backend: "onnxruntime"',
            f"max_batch_size: {self.max_batch_size}",
        ]
        if self.version_policy_all:
            lines += ["version_policy {", "  all {}", "}"]
        lines += tensors("input", self.inputs)
        lines += tensors("output", self.outputs)
        if self.dynamic_batching is not None:
            lines.append("dynamic_batching {")
            for k, v in self.dynamic_batching.items():
                if isinstance(v, list):
                    lines.append(f"  {k}: [ {', '.join(str(x) for x in v)} ]")
                else:
                    lines.append(f"  {k}: {v}")
            lines.append("}")
        lines += [
            "instance_group [",
            "  {",
            f"    count: {self.instance_count}",
            "    kind: KIND_CPU",
            "  }",
            "]",
        ]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# ONNX helpers
# --------------------------------------------------------------------------------------------


def value_info(cfg: Config, t: Tensor) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(t.name, TYPES[t.datatype][0], cfg.onnx_shape(t))


def const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name=name)


def string_const(name: str, values: list[str]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.STRING, [len(values)], [v.encode() for v in values])


def build_model(cfg: Config, nodes, initializers=(), doc: str = "", ml: bool = False) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        cfg.name.replace("-", "_"),
        [value_info(cfg, t) for t in cfg.inputs],
        [value_info(cfg, t) for t in cfg.outputs],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string=doc,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass
class Model:
    """A generated model: its config and one ONNX graph per version."""

    config: Config
    versions: dict[int, onnx.ModelProto]
    write_config: bool = True


def write_model(repo: Path, m: Model) -> None:
    mdir = repo / m.config.name
    for version, model in m.versions.items():
        vdir = mdir / str(version)
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "model.onnx").write_bytes(model.SerializeToString())
    if m.write_config:
        (mdir / "config.pbtxt").write_text(m.config.pbtxt())


# --------------------------------------------------------------------------------------------
# Demo models
# --------------------------------------------------------------------------------------------


def benchmark_echo() -> Model:
    """BYTES identity: ECHO = TEXT."""
    cfg = Config(
        name="benchmark-echo",
        max_batch_size=64,
        inputs=[Tensor("TEXT", "BYTES", [1])],
        outputs=[Tensor("ECHO", "BYTES", [1])],
        dynamic_batching={"max_queue_delay_microseconds": 100},
    )
    nodes = [helper.make_node("Identity", ["TEXT"], ["ECHO"])]
    return Model(cfg, {1: build_model(cfg, nodes, doc="Echoes its BYTES input TEXT as ECHO.")})


# threat-triage: the 8 indicator features, each scaled by the caller to [0, 1].
THREAT_FEATURES = [
    "failed_login_rate",
    "off_hours_activity",
    "geo_anomaly",
    "privilege_escalation",
    "malware_signature_match",
    "data_exfiltration_volume",
    "known_bad_ip",
    "analyst_flagged",
]
THREAT_CLASSES = ["benign", "suspicious", "malicious"]
# Weights: rows are features (in THREAT_FEATURES order), columns are classes (benign, suspicious,
# malicious). Every indicator argues against "benign"; the soft indicators (odd hours, many failed
# logins, analyst flag) argue mostly for "suspicious", the hard ones (malware signature, exfiltration,
# privilege escalation, known bad IP) for "malicious".
THREAT_WEIGHTS = np.array(
    [
        [-1.0, 1.5, 0.5],
        [-0.5, 1.0, 0.25],
        [-1.0, 1.5, 1.0],
        [-1.5, 1.0, 2.5],
        [-2.0, 0.5, 4.0],
        [-1.5, 1.0, 3.0],
        [-1.0, 1.0, 2.0],
        [-1.0, 2.0, 1.5],
    ],
    dtype=np.float32,
)
# Bias: with no indicator present the model says benign with high confidence.
THREAT_BIAS = np.array([2.0, 0.0, -2.0], dtype=np.float32)


def threat_triage() -> Model:
    """PROBABILITIES = softmax(FEATURES @ W + b); LABEL = class name of the argmax."""
    cfg = Config(
        name="threat-triage",
        max_batch_size=32,
        inputs=[Tensor("FEATURES", "FP32", [len(THREAT_FEATURES)])],
        outputs=[
            Tensor("PROBABILITIES", "FP32", [len(THREAT_CLASSES)]),
            Tensor("LABEL", "BYTES", [1]),
        ],
        dynamic_batching={"max_queue_delay_microseconds": 200},
    )
    inits = [
        const("W", THREAT_WEIGHTS),
        const("b", THREAT_BIAS),
        string_const("classes", THREAT_CLASSES),
    ]
    nodes = [
        helper.make_node("MatMul", ["FEATURES", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["PROBABILITIES"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["class_index"], axis=1, keepdims=1),
        helper.make_node("Gather", ["classes", "class_index"], ["LABEL"], axis=0),
    ]
    doc = "Linear threat triage over 8 indicator features: softmax over benign/suspicious/malicious."
    return Model(cfg, {1: build_model(cfg, nodes, inits, doc=doc)})


# mission-summarizer: a keyword-bag model. Each known (lowercase) word adds its row of weights; the
# columns are the five topics and one urgency score.
MISSION_TOPICS = ["general", "logistics", "reconnaissance", "medical", "security"]
MISSION_TOPIC_BIAS = np.array([0.5, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
MISSION_URGENCY_BIAS = np.float32(-2.0)
# word -> (topic or None, urgency weight). A topic word adds 1.0 to its topic's score.
MISSION_VOCAB: list[tuple[str, str | None, float]] = [
    ("supply", "logistics", 0.0),
    ("supplies", "logistics", 0.0),
    ("fuel", "logistics", 0.0),
    ("convoy", "logistics", 0.0),
    ("resupply", "logistics", 0.5),
    ("ammunition", "logistics", 0.5),
    ("transport", "logistics", 0.0),
    ("rations", "logistics", 0.0),
    ("patrol", "reconnaissance", 0.0),
    ("surveillance", "reconnaissance", 0.0),
    ("observe", "reconnaissance", 0.0),
    ("scout", "reconnaissance", 0.0),
    ("drone", "reconnaissance", 0.0),
    ("recon", "reconnaissance", 0.0),
    ("sighting", "reconnaissance", 0.5),
    ("movement", "reconnaissance", 0.0),
    ("casualty", "medical", 1.5),
    ("casualties", "medical", 1.5),
    ("injured", "medical", 1.0),
    ("medevac", "medical", 2.0),
    ("wounded", "medical", 1.0),
    ("medic", "medical", 0.5),
    ("triage", "medical", 0.5),
    ("hospital", "medical", 0.0),
    ("breach", "security", 1.0),
    ("intrusion", "security", 1.0),
    ("perimeter", "security", 0.0),
    ("checkpoint", "security", 0.0),
    ("hostile", "security", 1.0),
    ("threat", "security", 0.5),
    ("attack", "security", 1.5),
    ("urgent", None, 2.0),
    ("immediately", None, 2.0),
    ("asap", None, 1.5),
    ("priority", None, 1.0),
    ("now", None, 0.5),
    ("routine", None, -1.0),
    ("scheduled", None, -0.5),
]


def mission_table() -> np.ndarray:
    """Row 0 is the unknown/padding word (all zeros); row i+1 is MISSION_VOCAB[i]."""
    table = np.zeros((len(MISSION_VOCAB) + 1, len(MISSION_TOPICS) + 1), dtype=np.float32)
    for i, (_, topic, urgency) in enumerate(MISSION_VOCAB):
        if topic is not None:
            table[i + 1, MISSION_TOPICS.index(topic)] = 1.0
        table[i + 1, len(MISSION_TOPICS)] = urgency
    return table


def mission_summarizer() -> Model:
    """Keyword-bag topic + urgency over a list of lowercase words (one per BYTES element)."""
    cfg = Config(
        name="mission-summarizer",
        max_batch_size=16,
        inputs=[Tensor("TEXT", "BYTES", [-1])],
        outputs=[
            Tensor("SUMMARY", "BYTES", [1]),
            Tensor("TOPIC_SCORES", "FP32", [len(MISSION_TOPICS)]),
            Tensor("URGENCY", "FP32", [1]),
        ],
        dynamic_batching={"max_queue_delay_microseconds": 200},
    )
    n_topics = len(MISSION_TOPICS)
    inits = [
        const("table", mission_table()),
        const("topic_bias", MISSION_TOPIC_BIAS),
        const("urgency_bias", np.array([MISSION_URGENCY_BIAS], dtype=np.float32)),
        const("sum_axes", np.array([1], dtype=np.int64)),
        const("topic_start", np.array([0], dtype=np.int64)),
        const("topic_end", np.array([n_topics], dtype=np.int64)),
        const("urgency_end", np.array([n_topics + 1], dtype=np.int64)),
        const("col_axis", np.array([1], dtype=np.int64)),
        string_const("topics", MISSION_TOPICS),
    ]
    nodes = [
        helper.make_node(
            "CategoryMapper",
            ["TEXT"],
            ["word_ids"],
            domain="ai.onnx.ml",
            cats_strings=[w for w, _, _ in MISSION_VOCAB],
            cats_int64s=list(range(1, len(MISSION_VOCAB) + 1)),
            default_int64=0,
        ),
        helper.make_node("Gather", ["table", "word_ids"], ["word_rows"], axis=0),
        helper.make_node("ReduceSum", ["word_rows", "sum_axes"], ["totals"], keepdims=0),
        helper.make_node("Slice", ["totals", "topic_start", "topic_end", "col_axis"], ["topic_raw"]),
        helper.make_node("Add", ["topic_raw", "topic_bias"], ["TOPIC_SCORES"]),
        helper.make_node("Slice", ["totals", "topic_end", "urgency_end", "col_axis"], ["urgency_raw"]),
        helper.make_node("Add", ["urgency_raw", "urgency_bias"], ["urgency_logit"]),
        helper.make_node("Sigmoid", ["urgency_logit"], ["URGENCY"]),
        helper.make_node("ArgMax", ["TOPIC_SCORES"], ["topic_index"], axis=1, keepdims=1),
        helper.make_node("Gather", ["topics", "topic_index"], ["SUMMARY"], axis=0),
    ]
    doc = "Keyword-bag mission summarizer: topic label, topic scores and an urgency in (0, 1)."
    return Model(cfg, {1: build_model(cfg, nodes, inits, doc=doc, ml=True)})


# --------------------------------------------------------------------------------------------
# Conformance models
# --------------------------------------------------------------------------------------------


def simple(datatype: str, max_batch_size: int, dynamic: bool) -> Model:
    """Triton's `simple` shape: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, dims [16]."""
    cfg = Config(
        name=f"simple-{datatype.lower()}",
        max_batch_size=max_batch_size,
        inputs=[Tensor("INPUT0", datatype, [16]), Tensor("INPUT1", datatype, [16])],
        outputs=[Tensor("OUTPUT0", datatype, [16]), Tensor("OUTPUT1", datatype, [16])],
        dynamic_batching={"max_queue_delay_microseconds": 100} if dynamic else None,
    )
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
    ]
    return Model(cfg, {1: build_model(cfg, nodes, doc="OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.")})


def identity(datatype: str, max_batch_size: int = 8) -> Model:
    """OUTPUT = INPUT for one datatype, any length."""
    cfg = Config(
        name=f"identity-{datatype.lower()}",
        max_batch_size=max_batch_size,
        inputs=[Tensor("INPUT", datatype, [-1])],
        outputs=[Tensor("OUTPUT", datatype, [-1])],
    )
    nodes = [helper.make_node("Identity", ["INPUT"], ["OUTPUT"])]
    return Model(cfg, {1: build_model(cfg, nodes, doc=f"Identity over {datatype}.")})


def versioned_scale() -> Model:
    """Version v computes OUTPUT = INPUT * v; all versions are served (version_policy all)."""
    cfg = Config(
        name="versioned-scale",
        max_batch_size=8,
        inputs=[Tensor("INPUT", "FP32", [4])],
        outputs=[Tensor("OUTPUT", "FP32", [4])],
        version_policy_all=True,
    )
    versions = {}
    for v in (1, 2):
        nodes = [helper.make_node("Mul", ["INPUT", "scale"], ["OUTPUT"])]
        inits = [const("scale", np.array([float(v)], dtype=np.float32))]
        versions[v] = build_model(cfg, nodes, inits, doc=f"Version {v}: OUTPUT = INPUT * {v}.")
    return Model(cfg, versions)


def noconfig_square() -> Model:
    """No config.pbtxt: OUTPUT = INPUT * INPUT over FP32 [batch, 4]; metadata comes from ONNX."""
    cfg = Config(
        name="noconfig-square",
        max_batch_size=8,  # only shapes the ONNX graph (symbolic first dim); no config is written
        inputs=[Tensor("INPUT", "FP32", [4])],
        outputs=[Tensor("OUTPUT", "FP32", [4])],
    )
    nodes = [helper.make_node("Mul", ["INPUT", "INPUT"], ["OUTPUT"])]
    return Model(cfg, {1: build_model(cfg, nodes, doc="OUTPUT = INPUT * INPUT.")}, write_config=False)


def committed_models() -> list[Model]:
    models = [benchmark_echo(), mission_summarizer(), threat_triage()]
    models.append(simple("FP32", max_batch_size=8, dynamic=True))
    # INT64 without batching: covers max_batch_size 0 and values beyond 2^53 in JSON.
    models.append(simple("INT64", max_batch_size=0, dynamic=False))
    for dt in TYPES:
        # BYTES and FP16 without batching, the rest with a batch dimension: both paths get covered.
        models.append(identity(dt, max_batch_size=0 if dt in ("BYTES", "FP16") else 8))
    models += [versioned_scale(), noconfig_square()]
    return models


# --------------------------------------------------------------------------------------------
# Benchmark models (not committed)
# --------------------------------------------------------------------------------------------

BENCH_SEED = 20261128


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(gain * np.sqrt(2.0 / fan_in))).astype(np.float32)


def bench_mlp(name: str, dynamic: bool) -> Model:
    """MLP 256 -> 1024 -> 1024 -> 16 (ReLU): ~1.3 M MACs per row; weight-bound, so batching pays."""
    rng = np.random.default_rng(BENCH_SEED)
    sizes = [256, 1024, 1024, 16]
    cfg = Config(
        name=name,
        max_batch_size=32,
        inputs=[Tensor("INPUT", "FP32", [sizes[0]])],
        outputs=[Tensor("OUTPUT", "FP32", [sizes[-1]])],
        # 150 us: with closed-loop clients a longer delay is mostly idle time (500 us gave 0.81-1.01x
        # the in-process loop at c=8 and 150 us 1.11-1.34x, side by side; c=32 unchanged or better).
        dynamic_batching={"max_queue_delay_microseconds": 150} if dynamic else None,
    )
    nodes, inits, x = [], [], "INPUT"
    for i in range(len(sizes) - 1):
        w, b = f"w{i}", f"b{i}"
        inits += [
            const(w, he_normal(rng, (sizes[i], sizes[i + 1]), sizes[i])),
            const(b, np.zeros(sizes[i + 1], dtype=np.float32)),
        ]
        last = i == len(sizes) - 2
        y = "OUTPUT" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, w, b], [y if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [y]))
        x = y
    return Model(cfg, {1: build_model(cfg, nodes, inits, doc="Benchmark MLP with generated weights.")})


# Input side of the benchmark conv net. 160x160 (~0.95 GFLOPs) runs in ~30 ms on 2 CPU cores; 224
# (~1.8 GFLOPs, ImageNet's size) took ~64 ms there, above the 5-50 ms the benchmark wants.
BENCH_IMAGE = 160


def bench_resnet18(name: str, dynamic: bool, image: int = BENCH_IMAGE) -> Model:
    """ResNet-18-shaped conv net (11.7 M parameters, ~1.8 GFLOPs at 224x224) with generated weights.

    Batch norm is folded into the convolutions (conv + bias), as inference graphs usually are.
    """
    rng = np.random.default_rng(BENCH_SEED + 1)
    cfg = Config(
        name=name,
        max_batch_size=8,
        inputs=[Tensor("INPUT", "FP32", [3, image, image])],
        outputs=[Tensor("LOGITS", "FP32", [1000])],
        dynamic_batching={"max_queue_delay_microseconds": 2000} if dynamic else None,
    )
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool, gain: float = 1.0) -> str:
        i = counter[0]
        counter[0] += 1
        w, b, y = f"conv{i}_w", f"conv{i}_b", f"conv{i}"
        inits.append(const(w, he_normal(rng, (cout, cin, k, k), cin * k * k, gain)))
        inits.append(const(b, np.zeros(cout, dtype=np.float32)))
        pad = k // 2
        nodes.append(
            helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        )
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + "_relu"]))
            return y + "_relu"
        return y

    x = conv("INPUT", 3, 64, 7, 2, relu=True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool0"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin, block = "pool0", 64, 0
    for stage, cout in enumerate([64, 128, 256, 512]):
        for j in range(2):
            stride = 2 if (stage > 0 and j == 0) else 1
            h = conv(x, cin, cout, 3, stride, relu=True)
            # A small gain on the block's last conv keeps activations bounded through the residuals.
            h = conv(h, cout, cout, 3, 1, relu=False, gain=0.3)
            skip = conv(x, cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else x
            nodes.append(helper.make_node("Add", [h, skip], [f"block{block}_sum"]))
            nodes.append(helper.make_node("Relu", [f"block{block}_sum"], [f"block{block}"]))
            x, cin, block = f"block{block}", cout, block + 1
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["features"], axis=1))
    inits.append(const("fc_w", he_normal(rng, (512, 1000), 512)))
    inits.append(const("fc_b", np.zeros(1000, dtype=np.float32)))
    nodes.append(helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["LOGITS"]))
    return Model(cfg, {1: build_model(cfg, nodes, inits, doc="ResNet-18-shaped benchmark net, generated weights.")})


def bench_models(image: int = BENCH_IMAGE) -> list[Model]:
    return [
        bench_mlp("bench-mlp", dynamic=False),
        bench_mlp("bench-mlp-batched", dynamic=True),
        bench_resnet18("bench-resnet18", dynamic=False, image=image),
        bench_resnet18("bench-resnet18-batched", dynamic=True, image=image),
    ]


# --------------------------------------------------------------------------------------------


def generate(out: Path, models: list[Model]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for m in models:
        write_model(out, m)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository to write (default: ./models)")
    parser.add_argument("--bench", type=Path, help="also write the benchmark models into this directory")
    parser.add_argument("--bench-image", type=int, default=BENCH_IMAGE, help="conv net input side (default: %(default)s)")
    parser.add_argument("--no-demo", action="store_true", help="with --bench: skip the committed models")
    args = parser.parse_args(argv)

    if not args.no_demo:
        generate(args.out, committed_models())
        print(f"wrote demo and conformance models to {args.out}")
    if args.bench is not None:
        generate(args.bench, bench_models(args.bench_image))
        print(f"wrote benchmark models to {args.bench}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
