"""ONNX export, graph optimisation, parity gate, int8 quantisation gate and packaging: one function per step.

Like Optimum's exporters, each step has explicit inputs and outputs; unlike Optimum, a failed parity check fails
the export and no package is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.export_spec import ExportSpec, Feeds

logger = logging.getLogger(__name__)

OPSET = 17
PACKAGE_FORMAT = "model-package/1"
GRAPH_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MAX_ACCURACY_DROP = 0.005
MIN_EMBEDDING_COSINE = 0.99
QUANTIZATION_METHOD = "dynamic-int8 reduce_range per_channel"
# Fusions the ORT transformer optimizer must achieve on a BERT graph; each tuple lists interchangeable fused ops.
REQUIRED_BERT_FUSIONS: tuple[tuple[str, ...], ...] = (
    ("Attention", "MultiHeadAttention"),
    ("SkipLayerNormalization",),
    ("Gelu", "BiasGelu", "FastGelu", "GemmFastGelu"),
)
VERSIONED_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "tokenizers")
ONNX_DATATYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}


class ExportError(RuntimeError):
    """The export step cannot produce a trustworthy graph."""


class OptimizationError(ExportError):
    """The transformer optimizer left fusions undone, so the shipped graph would be needlessly slow."""


class ParityError(ExportError):
    """ONNX Runtime disagrees with PyTorch on at least one real input; carries the whole report."""

    def __init__(self, report: ParityReport) -> None:
        self.report = report
        failing = "; ".join(
            f"{case.name} shape={case.shape}: max_abs_diff={case.max_abs_diff:.3g}"
            + (f" ({case.problem})" if case.problem else "")
            for case in report.failures
        )
        super().__init__(
            f"parity failed on {len(report.failures)} of {len(report.cases)} cases "
            f"(tolerance {report.tolerance:g}): {failing}"
        )


@dataclass(frozen=True)
class ParityCase:
    """One real input compared between PyTorch and ONNX Runtime."""

    name: str
    shape: list[int]
    max_abs_diff: float
    passed: bool
    argmax_agreement: float | None = None
    problem: str = ""


@dataclass(frozen=True)
class ParityReport:
    """Every case's worst difference, so one failed export names all its problems at once."""

    tolerance: float
    cases: list[ParityCase]

    @property
    def failures(self) -> list[ParityCase]:
        return [case for case in self.cases if not case.passed]

    @property
    def passed(self) -> bool:
        return bool(self.cases) and not self.failures

    @property
    def max_abs_diff(self) -> float:
        return max((case.max_abs_diff for case in self.cases), default=float("nan"))

    @property
    def argmax_agreement(self) -> float | None:
        agreements = [case.argmax_agreement for case in self.cases if case.argmax_agreement is not None]
        return min(agreements) if agreements else None

    def to_manifest(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "passed": self.passed,
            "tolerance": self.tolerance,
            "max_abs_diff": self.max_abs_diff,
        }
        if self.argmax_agreement is not None:
            record["argmax_agreement"] = self.argmax_agreement
        record["cases"] = [{k: v for k, v in asdict(case).items() if v is not None and v != ""} for case in self.cases]
        return record


@dataclass(frozen=True)
class OptimizationReport:
    """What the optimiser did, so a silently unfused graph is visible in the manifest."""

    method: str
    fused_ops: dict[str, int]


@dataclass(frozen=True)
class QuantizationDecision:
    """Whether int8 ships, measured on real validation data, and why."""

    applied: bool
    method: str
    metric: str
    fp32_metric: float | None
    int8_metric: float | None
    threshold: float | None
    reason: str
    fp32_size_bytes: int | None = None
    int8_size_bytes: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PackageBuild:
    """Timings of one build, for the closing report and the logs."""

    timings_s: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings_s[step] = round(time.perf_counter() - start, 3)
        logger.info("export step %s took %.2f s", step, self.timings_s[step])


# --------------------------------------------------------------------------------------------------- export


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


def _torch_inputs(spec: ExportSpec, feeds: Feeds) -> tuple[torch.Tensor, ...]:
    """Feeds as tensors on the module's device, so a model trained on a GPU exports and checks as it is."""
    device = next((p.device for p in spec.module.parameters()), torch.device("cpu"))
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])).to(device) for name in spec.input_names)


def export_onnx(spec: ExportSpec, path: Path, opset: int = OPSET) -> Path:
    """Export with the TorchScript exporter: on BERT it yields a graph the ORT transformer optimizer fully fuses."""
    if not spec.parity_cases:
        raise ExportError("the export spec has no parity cases, so there is no real input to trace with")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = spec.module.eval()
    example = _torch_inputs(spec, spec.parity_cases[0][1])
    with eager_attention(module), torch.inference_mode(), warnings.catch_warnings():
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


# --------------------------------------------------------------------------------------------------- optimise


def _op_counts(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def optimize_graph(spec: ExportSpec, source: Path, target: Path, *, use_gpu: bool = False) -> OptimizationReport:
    """Fuse the graph offline so every serving cold start skips it; BERT gets the transformer optimizer."""
    if spec.transformer is not None:
        from onnxruntime.transformers.optimizer import optimize_model

        num_heads, hidden_size = spec.transformer
        optimized = optimize_model(
            str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=use_gpu
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
        method = f"onnxruntime.transformers bert (num_heads={num_heads}, hidden_size={hidden_size})"
    else:
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
        method = f"onnxruntime offline graph optimisation ({level.name})"
    onnx.checker.check_model(str(target), full_check=False)
    return OptimizationReport(method=method, fused_ops=dict(sorted(fused.items())))


# --------------------------------------------------------------------------------------------------- validate


def open_session(path: Path) -> ort.InferenceSession:
    """A CPU session as serving opens it."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_torch(spec: ExportSpec, feeds: Feeds) -> list[np.ndarray]:
    with torch.inference_mode():
        outputs = spec.module.eval()(*_torch_inputs(spec, feeds))
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [output.detach().float().cpu().numpy() for output in outputs]


def _is_classifier(spec: ExportSpec) -> bool:
    return spec.validation_labels is not None


def _compare_case(
    spec: ExportSpec, name: str, feeds: Feeds, expected: list[np.ndarray], actual: list[np.ndarray]
) -> ParityCase:
    shape = list(feeds[spec.input_names[0]].shape)
    if len(expected) != len(actual):
        return ParityCase(name, shape, float("inf"), False, problem=f"{len(actual)} outputs, expected {len(expected)}")
    worst = 0.0
    for output_name, want, got in zip(spec.output_names, expected, actual, strict=True):
        if want.shape != got.shape:
            problem = f"{output_name} shape {got.shape} != {want.shape}"
            return ParityCase(name, shape, float("inf"), False, problem=problem)
        if not np.all(np.isfinite(got)):
            return ParityCase(name, shape, float("inf"), False, problem=f"{output_name} has non-finite values")
        worst = max(worst, float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64)), initial=0.0)))
    agreement = None
    if _is_classifier(spec):
        agreement = float(np.mean(expected[0].argmax(axis=-1) == actual[0].argmax(axis=-1)))
    return ParityCase(name, shape, worst, worst <= spec.tolerance, argmax_agreement=agreement)


def validate_parity(spec: ExportSpec, onnx_path: Path) -> ParityReport:
    """Compare PyTorch and ONNX Runtime on every real parity case; raise one ParityError naming every failure."""
    session = open_session(onnx_path)
    cases = []
    for name, feeds in spec.parity_cases:
        expected = _run_torch(spec, feeds)
        try:
            actual = session.run(spec.output_names, {k: feeds[k] for k in spec.input_names})
        except Exception as error:  # onnxruntime raises its own untyped errors; the case fails, the others still run
            shape = list(feeds[spec.input_names[0]].shape)
            cases.append(ParityCase(name, shape, float("inf"), False, problem=f"onnxruntime: {error}"[:300]))
            continue
        cases.append(_compare_case(spec, name, feeds, expected, actual))
    report = ParityReport(tolerance=spec.tolerance, cases=cases)
    if not report.passed:
        raise ParityError(report)
    return report


# --------------------------------------------------------------------------------------------------- quantise


def quantize_graph(source: Path, target: Path, *, preprocess: bool = False) -> Path:
    """Dynamic int8 with 7-bit weights: without VNNI, full-range int8 products can saturate on AVX2.

    preprocess runs ORT's quant_pre_process (shape inference, basic optimisation) on an unfused export; a graph
    already fused by the BERT optimizer goes in as it is, since the quantizer knows its Attention ops.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if preprocess:
        prepared = target.with_name(f"{target.stem}.prepared.onnx")
        quant_pre_process(source, prepared)
        source = prepared
    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        # Shape inference cannot type tensors behind fused contrib ops (Attention); every float tensor here is FP32.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return target


def run_graph(path: Path, batches: list[Feeds], input_names: list[str]) -> np.ndarray:
    """The first output over all batches, concatenated in order."""
    session = open_session(path)
    output = session.get_outputs()[0].name
    return np.concatenate([session.run([output], {k: feeds[k] for k in input_names})[0] for feeds in batches])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=-1) == labels))


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Worst row-wise cosine similarity: the gate must hold for every sentence, not on average."""
    dot = np.sum(reference * candidate, axis=-1)
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(candidate, axis=-1)
    return float(np.min(dot / np.maximum(norms, 1e-12)))


def gate_quantization(
    spec: ExportSpec,
    fp32_path: Path,
    int8_path: Path,
    *,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    min_embedding_cosine: float = MIN_EMBEDDING_COSINE,
) -> QuantizationDecision:
    """Keep int8 only if it holds up on real validation data: accuracy drop for classifiers, cosine for embedders."""
    sizes = {"fp32_size_bytes": fp32_path.stat().st_size, "int8_size_bytes": int8_path.stat().st_size}
    if not spec.validation_feeds:
        return QuantizationDecision(
            False, QUANTIZATION_METHOD, "none", None, None, None, "no validation data to gate int8 on", **sizes
        )
    fp32 = run_graph(fp32_path, spec.validation_feeds, spec.input_names)
    int8 = run_graph(int8_path, spec.validation_feeds, spec.input_names)
    if spec.validation_labels is not None:
        labels = np.asarray(spec.validation_labels)
        fp32_acc, int8_acc = accuracy(fp32, labels), accuracy(int8, labels)
        drop = fp32_acc - int8_acc
        applied = drop <= max_accuracy_drop
        verdict = "within" if applied else "exceeds"
        reason = f"validation accuracy drop {drop:.4f} {verdict} the allowed {max_accuracy_drop}"
        return QuantizationDecision(
            applied, QUANTIZATION_METHOD, "val_accuracy", fp32_acc, int8_acc, max_accuracy_drop, reason, **sizes
        )
    cosine = min_cosine(fp32, int8)
    applied = cosine >= min_embedding_cosine
    verdict = "meets" if applied else "is below"
    reason = f"min cosine int8 vs fp32 {cosine:.5f} {verdict} the required {min_embedding_cosine}"
    return QuantizationDecision(
        applied, QUANTIZATION_METHOD, "min_cosine_vs_fp32", 1.0, cosine, min_embedding_cosine, reason, **sizes
    )


def _not_quantized(reason: str) -> QuantizationDecision:
    return QuantizationDecision(False, QUANTIZATION_METHOD, "none", None, None, None, reason)


def test_metrics(spec: ExportSpec, path: Path) -> dict[str, float]:
    """The shipped graph's own test figure, so the manifest never reports the PyTorch model's."""
    if spec.validation_labels is None or not spec.test_feeds or spec.test_labels is None:
        return {}
    return {"test_accuracy": accuracy(run_graph(path, spec.test_feeds, spec.input_names), np.asarray(spec.test_labels))}


test_metrics.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


# --------------------------------------------------------------------------------------------------- package


def graph_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The graph's tensors in Open Inference Protocol terms: -1 for every symbolic dimension."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        datatype = ONNX_DATATYPES.get(tensor.elem_type, str(tensor.elem_type))
        return {"name": value.name, "datatype": datatype, "shape": shape}

    return {
        "inputs": [describe(v) for v in graph.input if v.name not in initializers],
        "outputs": [describe(v) for v in graph.output],
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_records(package_dir: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the package except the manifest that lists them."""
    return {
        path.relative_to(package_dir).as_posix(): {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
        for path in sorted(package_dir.rglob("*"))
        if path.is_file() and path.relative_to(package_dir).as_posix() != MANIFEST_FILE
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


STAGING_PREFIX = ".staging-"


@contextlib.contextmanager
def _staging_dir(out_dir: Path) -> Iterator[Path]:
    """A temp dir beside out_dir, renamed into place only when the block succeeds; removed otherwise.

    A mount point (SageMaker's /opt/ml/model) cannot be renamed, so there the staging dir lives inside it and
    its files replace the old ones only on success, manifest last: a package without a manifest is no package.
    """
    in_place = out_dir.is_dir() and os.path.ismount(out_dir)
    root = out_dir if in_place else out_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{STAGING_PREFIX}", dir=root))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the published package unreadable to other users (Lambda's)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if in_place:
        for child in out_dir.iterdir():
            if child == staging:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        for child in sorted(staging.iterdir(), key=lambda c: c.name == MANIFEST_FILE):
            child.rename(out_dir / child.name)
        staging.rmdir()
        return
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}")
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    gate: Callable[[ExportSpec, Path, Path], QuantizationDecision] = gate_quantization,
) -> Path:
    """Export, optimise, prove parity, maybe quantise, and write the package atomically; ParityError leaves none.

    A model served by Triton on a GPU (triton_max_batch_size set) ships the fp32 graph and its Triton repository.
    """
    out_dir = Path(out_dir)
    build = PackageBuild()
    with tempfile.TemporaryDirectory(prefix=f"export-{name}-") as scratch_dir, _staging_dir(out_dir) as staging:
        scratch = Path(scratch_dir)
        raw, fp32 = scratch / "exported.onnx", scratch / "optimized.onnx"
        with build.timed("export"):
            export_onnx(spec, raw)
        with build.timed("optimize"):
            optimization = optimize_graph(spec, raw, fp32, use_gpu=triton_max_batch_size is not None)
        with build.timed("parity"):
            parity = validate_parity(spec, fp32)

        shipped = fp32
        if triton_max_batch_size is not None:
            decision = _not_quantized("GPU target (Triton): the fp32 graph ships")
        elif not quantize:
            decision = _not_quantized("quantisation disabled")
        else:
            int8 = scratch / "quantized.onnx"
            with build.timed("quantize"):
                # CPU-fused ops (FusedConv, FusedGemm) have no int8 kernels: quantise the unfused export instead.
                if spec.transformer is None:
                    quantize_graph(raw, int8, preprocess=True)
                else:
                    quantize_graph(fp32, int8)
                decision = gate(spec, fp32, int8)
            if decision.applied:
                shipped = int8
        logger.info("quantisation: %s", decision.reason)

        with build.timed("test_metric"):
            shipped_metrics = test_metrics(spec, shipped)
        shutil.copyfile(shipped, staging / GRAPH_FILE)
        for file_name, file_path in spec.package_files.items():
            (staging / file_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file_path, staging / file_name)

        manifest: dict[str, Any] = {"format": PACKAGE_FORMAT, "name": name, "version": version}
        manifest.update(spec.manifest)
        manifest["graph"] = {
            "file": GRAPH_FILE,
            "opset": OPSET,
            "precision": "int8" if shipped != fp32 else "fp32",
            **graph_io(staging / GRAPH_FILE),
            "optimization": asdict(optimization),
        }
        manifest["metrics"] = {**metrics, **shipped_metrics}
        manifest["parity"] = parity.to_manifest()
        manifest["quantization"] = decision.to_manifest()

        if triton_max_batch_size is not None:
            from training.triton import write_triton_repository

            with build.timed("triton"):
                write_triton_repository(staging, manifest, fp32, triton_max_batch_size, tensorrt=tensorrt)

        manifest["files"] = file_records(staging)
        manifest["source"] = source
        manifest["versions"] = library_versions()
        manifest["export_timings_s"] = build.timings_s
        manifest["created_at"] = _utc_now()
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir
