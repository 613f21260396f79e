"""How close the graph gets to what this CPU can do: measured fp32 matmul peak and the model's FLOPs from its graph."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

MATMUL_OPS = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}


@dataclass(frozen=True)
class Peak:
    """Best sustained fp32 GFLOP/s from a large square matmul, and which library reached it."""

    gflops: float
    library: str
    size: int
    threads: int


def _best_of(run: Callable[[], object], flops: float, repeats: int) -> float:
    run()  # warm-up: page in the buffers, spin up the thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def measure_fp32_peak(threads: int, *, size: int = 2048, repeats: int = 5) -> Peak:
    """The machine's practical fp32 ceiling with `threads` threads: max over OpenBLAS (numpy) and MKL (torch).

    Why the best of several runs: the peak is a ceiling, and neighbours on a shared box only ever push times up.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3
    results: dict[str, float] = {}
    with threadpool_limits(limits=threads):
        results["numpy/OpenBLAS"] = _best_of(lambda: a @ b, flops, repeats)
    try:
        import torch
    except ImportError:  # torch is a training dependency; the peak still stands on numpy alone
        pass
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.inference_mode():
            results["torch/MKL"] = _best_of(lambda: torch.mm(ta, tb), flops, repeats)
        torch.set_num_threads(previous)
    library = max(results, key=results.__getitem__)
    return Peak(gflops=results[library], library=library, size=size, threads=threads)


def _fix_input_dims(model: onnx.ModelProto, dims: dict[str, list[int]]) -> None:
    for graph_input in model.graph.input:
        if graph_input.name not in dims:
            continue
        shape = graph_input.type.tensor_type.shape
        for axis, value in zip(shape.dim, dims[graph_input.name], strict=True):
            axis.ClearField("dim_param")
            axis.dim_value = value


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {init.name: list(init.dims) for init in model.graph.initializer}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[info.name] = [d.dim_value for d in tensor.shape.dim]
    return shapes


def matmul_flops(model_path: Path, input_dims: dict[str, list[int]]) -> int:
    """FLOPs of one inference, counted as 2·M·K·N over every MatMul/Gemm once all shapes are concrete.

    Counted on the plain (unfused, standard-op) graph: a fused Attention op hides its matmuls inside one node.
    Raises ValueError if any matmul's shapes stay unknown, so a wrong count is never published.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(model_path))
    del model.graph.value_info[:]  # symbolic shapes recorded at export time would block concrete propagation
    _fix_input_dims(model, input_dims)
    # ORT's symbolic inference follows Shape→Gather→Reshape chains that onnx's own inference gives up on.
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = _static_shapes(inferred)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in MATMUL_OPS:
            continue
        a_name, b_name = node.input[0], node.input[1]
        if a_name not in shapes or b_name not in shapes:
            raise ValueError(f"{node.op_type} {node.name!r}: input shapes unknown after inference")
        a, b = shapes[a_name], shapes[b_name]
        if node.op_type == "Gemm":
            attrs = {attr.name: attr.i for attr in node.attribute}
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            n = b[0] if attrs.get("transB") else b[1]
            total += 2 * m * k * n
            continue
        a_full = [1] * max(0, 2 - len(a)) + a
        b_full = b + [1] * max(0, 2 - len(b)) if len(b) == 1 else b
        m, k = a_full[-2], a_full[-1]
        n = b_full[-1]
        batch = np.broadcast_shapes(tuple(a_full[:-2]), tuple(b_full[:-2]))
        total += 2 * int(np.prod(batch, dtype=np.int64)) * m * k * n
    if total == 0:
        raise ValueError(f"{model_path.name}: no MatMul/Gemm found")
    return total
