"""The graph variants items 2 and 4 compare, all from the same PyTorch weights.

- `plain`: what a user gets by hand, `torch.onnx.export(model, args, path, dynamic_axes=...)` with torch's defaults
  (Optimum is not installable beside transformers 5, so this stands in for the peer exporter).
- `fp32`: our export step (training.export: TorchScript export + ORT transformer fusion), unquantised.
- `int8`: our quantisation of that graph (dynamic int8, reduce_range, per-channel), as the package gate applies it.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "logits": {0: "batch"},
}
TRANSFORMER = (12, 384)  # all-MiniLM-L6-v2: attention heads, hidden size


@dataclass(frozen=True)
class GraphVariants:
    plain: Path
    fp32: Path
    int8: Path


def _spec(module: Any, example: dict[str, np.ndarray]) -> Any:
    from training.export_spec import ExportSpec

    return ExportSpec(
        module=module.eval(),
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes=DYNAMIC_AXES,
        parity_cases=[("batch-1", example)],
        tolerance=1e-4,
        validation_feeds=[],
        validation_labels=None,
        transformer=TRANSFORMER,
    )


def plain_export(module: Any, example: dict[str, np.ndarray], path: Path, *, dynamo: bool | None = None) -> Path:
    """torch.onnx.export as documented, nothing else: torch's default exporter, opset and optimisations.

    `dynamo=False` (TorchScript exporter, seconds instead of tens of seconds) is for --quick only.
    """
    import torch

    args = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        torch.inference_mode(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),  # the dynamo exporter narrates every step
    ):
        warnings.simplefilter("ignore")
        options: dict[str, Any] = {} if dynamo is None else {"dynamo": dynamo}
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES,
            **options,
        )
    return path


def build_variants(
    module: Any, example: dict[str, np.ndarray], folder: Path, *, plain_dynamo: bool | None = None
) -> GraphVariants:
    """All three graphs of one module; reused when the folder already holds them (same weights key)."""
    from training.export import export_onnx, optimize_graph
    from training.quantization import quantize_graph

    folder.mkdir(parents=True, exist_ok=True)
    variants = GraphVariants(plain=folder / "plain.onnx", fp32=folder / "fp32.onnx", int8=folder / "int8.onnx")
    if not variants.plain.is_file():
        plain_export(module, example, variants.plain, dynamo=plain_dynamo)
    if not variants.fp32.is_file():
        spec = _spec(module, example)
        raw = folder / "export-raw.onnx"
        export_onnx(spec, raw)
        optimize_graph(spec, raw, variants.fp32)
        raw.unlink()
    if not variants.int8.is_file():
        quantize_graph(variants.fp32, variants.int8)
    return variants


def token_feeds(encodings: Sequence[Any]) -> dict[str, np.ndarray]:
    """A text graph's feeds from a batch of `tokenizers` encodings already padded to one length."""
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def run_graph(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    names = [node.name for node in session.get_inputs()]
    return np.asarray(session.run(None, {name: feeds[name] for name in names})[0])
