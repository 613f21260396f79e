"""The export step as a whole: export, optimise, prove parity, maybe quantise, and write one verified package.

A failed parity check fails the export and no package is written; every step's result lands in the typed manifest.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from functions.monitoring.reference import profile_package
from functions.runtime.package import GRAPH_FILE, GraphSpec, Manifest, write_package
from training.export import OPSET, ExportError, OptimizationReport, export_onnx, graph_io, optimize_graph
from training.export_spec import ExportSpec
from training.graph_scoring import test_metrics
from training.parity import ParityReport, validate_parity
from training.publish import staged_package
from training.quantization import QuantizationDecision, gate_quantization, quantize_graph

logger = logging.getLogger(__name__)

VERSIONED_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "tokenizers")
QuantizationGate = Callable[[ExportSpec, Path, Path], QuantizationDecision]


@dataclass
class PackageBuild:
    """Timings of one build, recorded in the manifest and the debug log."""

    timings_s: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings_s[step] = round(time.perf_counter() - start, 3)
        logger.debug("export step %s took %.2f s", step, self.timings_s[step])


@dataclass(frozen=True)
class ShippedGraph:
    """The graph that goes into the package, and why it is that one; fp32_path is what a GPU serves."""

    path: Path
    fp32_path: Path
    precision: str
    optimization: OptimizationReport
    parity: ParityReport
    quantization: QuantizationDecision


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_graph(
    spec: ExportSpec, scratch: Path, build: PackageBuild, *, quantize: bool, gpu: bool, gate: QuantizationGate
) -> ShippedGraph:
    """Export, optimise and prove parity; then quantise the CPU graph and keep int8 only if the gate passes.

    A GPU-served model's Triton repository always takes the fp32 graph; its model.onnx is what CPUs serve
    (a Lambda placement, the local stack without an endpoint), so it goes through the same gate.
    """
    raw, fp32 = scratch / "exported.onnx", scratch / "optimized.onnx"
    with build.timed("export"):
        export_onnx(spec, raw)
    with build.timed("optimize"):
        optimization = optimize_graph(spec, raw, fp32, use_gpu=gpu)
    with build.timed("parity"):
        parity = validate_parity(spec, fp32)
    if not quantize:
        decision = QuantizationDecision.not_quantized("quantisation disabled", spec.int8_recipe.method)
    else:
        int8 = scratch / "quantized.onnx"
        with build.timed("quantize"):
            # CPU-fused ops (FusedConv, FusedGemm) have no int8 kernels: quantise the unfused export instead.
            if spec.transformer is None:
                quantize_graph(raw, int8, spec.int8_recipe, preprocess=True)
            else:
                quantize_graph(fp32, int8, spec.int8_recipe)
        with build.timed("quantization_gate"):
            decision = gate(spec, fp32, int8)
        if decision.applied:
            return ShippedGraph(int8, fp32, "int8", optimization, parity, decision)
    return ShippedGraph(fp32, fp32, "fp32", optimization, parity, decision)


def build_package(
    spec: ExportSpec,
    out_dir: Path,
    *,
    name: str,
    version: str,
    metrics: dict[str, Any],
    source: dict[str, Any],
    quantize: bool = True,
    triton_max_batch_size: int | None = None,
    tensorrt: bool = False,
    gate: QuantizationGate = gate_quantization,
) -> Path:
    """Export, optimise, prove parity, maybe quantise, and write the package atomically; ParityError leaves none.

    A model served by Triton on a GPU (triton_max_batch_size set) also ships a Triton repository of the fp32 graph.
    """
    if spec.manifest is None:
        raise ExportError(f"the export spec of {name} declares no manifest part (task, inputs, outputs, labels)")
    out_dir = Path(out_dir)
    build = PackageBuild()
    gpu = triton_max_batch_size is not None
    with tempfile.TemporaryDirectory(prefix=f"export-{name}-") as scratch, staged_package(out_dir) as staging:
        shipped = prepare_graph(spec, Path(scratch), build, quantize=quantize, gpu=gpu, gate=gate)
        logger.info("quantisation: %s", shipped.quantization.reason)
        with build.timed("test_metric"):
            shipped_metrics = test_metrics(spec, shipped.path)
        shutil.copyfile(shipped.path, staging / GRAPH_FILE)
        for file_name, file_path in spec.package_files.items():
            (staging / file_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file_path, staging / file_name)
        tensors = graph_io(staging / GRAPH_FILE)
        manifest = Manifest(
            name=name,
            version=version,
            **dict(spec.manifest),
            graph=GraphSpec(
                file=GRAPH_FILE,
                opset=OPSET,
                precision=shipped.precision,
                inputs=tensors.inputs,
                outputs=tensors.outputs,
            ).model_copy(update={"optimization": asdict(shipped.optimization)}),
            metrics={**metrics, **shipped_metrics},
            parity=shipped.parity.to_record(),
            quantization=shipped.quantization.to_record(),
            files={},  # write_package records every file, the Triton archive included
            source=source,
            versions=library_versions(),
        )
        if spec.reference_inputs:
            with build.timed("monitoring_reference"):
                reference = profile_package(staging, manifest, spec.reference_inputs, spec.reference_data)
            manifest = manifest.model_copy(update={"monitoring_reference": reference})
        if triton_max_batch_size is not None:
            from training.triton_repository import write_triton_repository

            with build.timed("triton"):
                write_triton_repository(staging, manifest, shipped.fp32_path, triton_max_batch_size, tensorrt=tensorrt)
        write_package(
            staging, manifest.model_copy(update={"export_timings_s": build.timings_s, "created_at": _utc_now()})
        )
    return out_dir
