"""The trained module as an optimised ONNX graph: export with the TorchScript exporter, then fuse offline.

Like Optimum's exporters, each step has explicit inputs and outputs; `training.packaging.build_package` runs them
with the parity gate and quantisation in between.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from functions.runtime.package import Datatype, TensorSpec
from training.export_spec import ExportSpec, Feeds
from training.job_logging import quiet_libraries

OPSET = 17
# Fusions the ORT transformer optimizer must achieve on a BERT graph; each tuple lists interchangeable fused ops.
REQUIRED_BERT_FUSIONS: tuple[tuple[str, ...], ...] = (
    ("Attention", "MultiHeadAttention"),
    ("SkipLayerNormalization",),
    ("Gelu", "BiasGelu", "FastGelu", "GemmFastGelu"),
)
ONNX_DATATYPES: dict[int, Datatype] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}


class ExportError(RuntimeError):
    """The export step cannot produce a trustworthy graph."""


class OptimizationError(ExportError):
    """The transformer optimizer left fusions undone, so the shipped graph would be needlessly slow."""


@dataclass(frozen=True)
class OptimizationReport:
    """What the optimiser did, so a silently unfused graph is visible in the manifest."""

    method: str
    fused_ops: dict[str, int]


@dataclass(frozen=True)
class GraphIO:
    """The graph's tensors in Open Inference Protocol terms."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@contextlib.contextmanager
def eager_attention(module: torch.nn.Module) -> Iterator[None]:
    """Trace Hugging Face models with eager attention: the SDPA path does not fuse into ORT's Attention op."""
    switched: list[tuple[Any, str]] = []
    for sub in module.modules():
        config = getattr(sub, "config", None)
        setter = getattr(sub, "set_attn_implementation", None)
        current = getattr(config, "_attn_implementation", None)
        if callable(setter) and current not in (None, "eager"):
            setter("eager")
            switched.append((sub, current))
    try:
        yield
    finally:
        for sub, previous in switched:
            sub.set_attn_implementation(previous)


def torch_inputs(spec: ExportSpec, feeds: Feeds) -> tuple[torch.Tensor, ...]:
    """Feeds as tensors on the module's device, so a model trained on a GPU exports and checks as it is."""
    device = next((p.device for p in spec.module.parameters()), torch.device("cpu"))
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])).to(device) for name in spec.input_names)


def export_onnx(spec: ExportSpec, path: Path, opset: int = OPSET) -> Path:
    """Export with the TorchScript exporter: on BERT it yields a graph the ORT transformer optimizer fully fuses."""
    if not spec.parity_cases:
        raise ExportError("the export spec has no parity cases, so there is no real input to trace with")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = spec.module.eval()
    example = torch_inputs(spec, spec.parity_cases[0][1])
    with eager_attention(module), torch.inference_mode(), warnings.catch_warnings(), quiet_libraries():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        # dynamo=True (torch 2.13) emits opset 18 and a graph the BERT optimizer cannot fuse; TorchScript fuses fully.
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _op_counts(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def optimize_graph(spec: ExportSpec, source: Path, target: Path, *, use_gpu: bool = False) -> OptimizationReport:
    """Fuse the graph offline so every serving cold start skips it; BERT gets the transformer optimizer."""
    with quiet_libraries():
        if spec.transformer is not None:
            method, fused = _optimize_bert(spec.transformer, source, target, use_gpu=use_gpu)
        else:
            method, fused = _optimize_offline(source, target, use_gpu=use_gpu)
    onnx.checker.check_model(str(target), full_check=False)
    return OptimizationReport(method=method, fused_ops=dict(sorted(fused.items())))


def _optimize_bert(
    transformer: tuple[int, int], source: Path, target: Path, *, use_gpu: bool
) -> tuple[str, dict[str, int]]:
    from onnxruntime.transformers.optimizer import optimize_model

    num_heads, hidden_size = transformer
    # ORT's own graph pass for a GPU needs a CUDA build; without one, only the provider-neutral fusions run
    # (opt_level 0 says so, where ORT would log an error and skip the pass all the same).
    gpu_pass = use_gpu and "CUDAExecutionProvider" in ort.get_available_providers()
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        use_gpu=use_gpu,
        opt_level=None if gpu_pass or not use_gpu else 0,
    )
    fused = {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}
    missing = [
        "/".join(alternatives)
        for alternatives in REQUIRED_BERT_FUSIONS
        if not any(fused.get(op, 0) for op in alternatives)
    ]
    if missing:
        raise OptimizationError(f"the BERT optimizer did not fuse {', '.join(missing)}; fused: {fused}")
    optimized.save_model_to_file(str(target))
    return f"onnxruntime.transformers bert (num_heads={num_heads}, hidden_size={hidden_size})", fused


def _optimize_offline(source: Path, target: Path, *, use_gpu: bool) -> tuple[str, dict[str, int]]:
    # Layout (level 99) rewrites are hardware-specific and must not be saved; extended fusions are CPU-made,
    # so a graph bound for a GPU keeps to the provider-neutral basic level.
    levels = ort.GraphOptimizationLevel
    level = levels.ORT_ENABLE_BASIC if use_gpu else levels.ORT_ENABLE_EXTENDED
    before = _op_counts(source)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    after = _op_counts(target)
    fused = {op: count for op, count in after.items() if count > before.get(op, 0)}
    return f"onnxruntime offline graph optimisation ({level.name})", fused


def graph_io(path: Path) -> GraphIO:
    """The graph's tensors in Open Inference Protocol terms: -1 for every symbolic dimension."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in ONNX_DATATYPES:
            raise ExportError(f"tensor {value.name} has ONNX type {tensor.elem_type}, which the package cannot carry")
        shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        return TensorSpec(name=value.name, datatype=ONNX_DATATYPES[tensor.elem_type], shape=shape)

    return GraphIO(
        inputs=[describe(v) for v in graph.input if v.name not in initializers],
        outputs=[describe(v) for v in graph.output],
    )
