"""Dynamic int8 and the gate that decides whether it ships, measured on real validation data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from training.export_spec import ExportSpec
from training.graph_scoring import accuracy, min_cosine, run_graph
from training.job_logging import quiet_libraries

MAX_ACCURACY_DROP = 0.005
MIN_EMBEDDING_COSINE = 0.99
QUANTIZATION_METHOD = "dynamic-int8 reduce_range per_channel"


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

    @classmethod
    def not_quantized(cls, reason: str) -> QuantizationDecision:
        return cls(False, QUANTIZATION_METHOD, "none", None, None, None, reason)

    def to_record(self) -> dict[str, Any]:
        """The manifest's quantization record: every field, unmeasured ones as null."""
        return asdict(self)


def quantize_graph(source: Path, target: Path, *, preprocess: bool = False) -> Path:
    """Dynamic int8 with 7-bit weights: without VNNI, full-range int8 products can saturate on AVX2.

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
            per_channel=True,
            reduce_range=True,
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
    min_embedding_cosine: float = MIN_EMBEDDING_COSINE,
) -> QuantizationDecision:
    """Keep int8 only if it holds up on real validation data: accuracy drop for classifiers, cosine for embedders."""
    sizes: dict[str, Any] = {"fp32_size_bytes": fp32_path.stat().st_size, "int8_size_bytes": int8_path.stat().st_size}
    if not spec.validation_feeds:
        return replace(QuantizationDecision.not_quantized("no validation data to gate int8 on"), **sizes)
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
