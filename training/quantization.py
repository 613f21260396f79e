"""Dynamic int8 and the gates that decide whether it ships, measured on real held-out data.

Classifiers keep int8 if validation accuracy drops by at most half a point. Embeddings are used for ranking, so
their gate is retrieval quality: on at least 2,000 held-out texts, the top-10 nearest neighbours under int8 must
overlap those under fp32 and the embeddings must stay close to fp32 on average.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from training.export_spec import DEFAULT_RECIPE, ExportSpec, QuantizationRecipe
from training.graph_scoring import accuracy, cosines, neighbour_overlap, run_graph
from training.job_logging import quiet_libraries

MAX_ACCURACY_DROP = 0.005
NEIGHBOURS = 10
MIN_NEIGHBOUR_OVERLAP = 0.95
MIN_MEAN_COSINE = 0.99
MIN_RETRIEVAL_TEXTS = 2000


@dataclass(frozen=True)
class QuantizationDecision:
    """Whether int8 ships, measured on real held-out data, and why: the gate, its thresholds and its figures."""

    applied: bool
    method: str
    metric: str
    fp32_metric: float | None
    int8_metric: float | None
    threshold: float | None
    reason: str
    fp32_size_bytes: int | None = None
    int8_size_bytes: int | None = None
    gate: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)

    @classmethod
    def not_quantized(cls, reason: str, method: str = DEFAULT_RECIPE.method) -> QuantizationDecision:
        return cls(False, method, "none", None, None, None, reason)

    def to_record(self) -> dict[str, Any]:
        """The manifest's quantization record: every field, unmeasured ones as null."""
        return asdict(self)


def graph_node_names(path: Path) -> list[str]:
    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]


def quantize_graph(
    source: Path, target: Path, recipe: QuantizationRecipe = DEFAULT_RECIPE, *, preprocess: bool = False
) -> Path:
    """Dynamic int8 as the recipe says, leaving its sensitive nodes in fp32.

    preprocess runs ORT's quant_pre_process (shape inference, basic optimisation) on an unfused export; a graph
    already fused by the BERT optimizer goes in as it is, since the quantizer knows its Attention ops.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with quiet_libraries():  # the quantizer logs a line per tensor, and advises the pre-processing skipped here
        if preprocess:
            prepared = target.with_name(f"{target.stem}.prepared.onnx")
            quant_pre_process(source, prepared)
            source = prepared
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            nodes_to_exclude=recipe.excluded(graph_node_names(source)),
            # Shape inference cannot type tensors behind fused contrib ops (Attention); every float tensor is FP32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return target


def gate_quantization(
    spec: ExportSpec,
    fp32_path: Path,
    int8_path: Path,
    *,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    min_neighbour_overlap: float = MIN_NEIGHBOUR_OVERLAP,
    min_mean_cosine: float = MIN_MEAN_COSINE,
    min_retrieval_texts: int = MIN_RETRIEVAL_TEXTS,
) -> QuantizationDecision:
    """Keep int8 only if it holds up on held-out data: accuracy drop for classifiers, retrieval for embedders."""
    sizes: dict[str, Any] = {"fp32_size_bytes": fp32_path.stat().st_size, "int8_size_bytes": int8_path.stat().st_size}
    method = spec.int8_recipe.method
    if not spec.validation_feeds:
        return replace(QuantizationDecision.not_quantized("no validation data to gate int8 on", method), **sizes)
    fp32 = run_graph(fp32_path, spec.validation_feeds, spec.input_names)
    int8 = run_graph(int8_path, spec.validation_feeds, spec.input_names)
    if spec.validation_labels is None:
        return _retrieval_gate(fp32, int8, method, sizes, min_neighbour_overlap, min_mean_cosine, min_retrieval_texts)
    labels = np.asarray(spec.validation_labels)
    fp32_acc, int8_acc = accuracy(fp32, labels), accuracy(int8, labels)
    drop = fp32_acc - int8_acc
    applied = drop <= max_accuracy_drop
    verdict = "within" if applied else "exceeds"
    return QuantizationDecision(
        applied,
        method,
        "val_accuracy",
        fp32_acc,
        int8_acc,
        max_accuracy_drop,
        f"validation accuracy drop {drop:.4f} {verdict} the allowed {max_accuracy_drop}",
        **sizes,
        gate="validation accuracy: int8 may lose at most max_accuracy_drop against fp32",
        thresholds={"max_accuracy_drop": max_accuracy_drop},
        figures={"fp32_val_accuracy": fp32_acc, "int8_val_accuracy": int8_acc, "accuracy_drop": drop},
    )


def retrieval_figures(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """What the retrieval gate judges: neighbour overlap and cosine of int8 against fp32 on the same texts."""
    similarity = cosines(fp32, int8)
    return {
        "texts": float(len(fp32)),
        f"top{NEIGHBOURS}_neighbour_overlap": neighbour_overlap(fp32, int8, NEIGHBOURS)
        if len(fp32) > NEIGHBOURS
        else 0.0,
        "mean_cosine": float(np.mean(similarity)),
        "min_cosine": float(np.min(similarity)),
    }


def _retrieval_gate(
    fp32: np.ndarray,
    int8: np.ndarray,
    method: str,
    sizes: dict[str, Any],
    min_overlap: float,
    min_mean_cosine: float,
    min_texts: int,
) -> QuantizationDecision:
    """Embeddings rank texts: int8 must find the same neighbours as fp32 and stay close to it on average."""
    figures = retrieval_figures(fp32, int8)
    overlap = figures[f"top{NEIGHBOURS}_neighbour_overlap"]
    thresholds = {
        f"min_top{NEIGHBOURS}_neighbour_overlap": min_overlap,
        "min_mean_cosine": min_mean_cosine,
        "min_texts": float(min_texts),
    }
    failures = [
        f"{name} {figures[name]:.4f} < {threshold:g}"
        for name, threshold in zip(("texts", f"top{NEIGHBOURS}_neighbour_overlap", "mean_cosine"),
                                   (min_texts, min_overlap, min_mean_cosine), strict=True)
        if figures[name] < threshold
    ]  # fmt: skip
    summary = (
        f"top-{NEIGHBOURS} neighbour overlap {overlap:.4f}, mean cosine {figures['mean_cosine']:.5f} "
        f"on {len(fp32)} held-out texts"
    )
    reason = f"{summary} meet the retrieval gate" if not failures else f"{summary}: {'; '.join(failures)}"
    return QuantizationDecision(
        not failures,
        method,
        f"top{NEIGHBOURS}_neighbour_overlap_vs_fp32",
        1.0,
        overlap,
        min_overlap,
        reason,
        **sizes,
        gate=f"retrieval vs fp32: top-{NEIGHBOURS} neighbour overlap and mean cosine on held-out texts",
        thresholds=thresholds,
        figures=figures,
    )
