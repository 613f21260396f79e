"""What a task hands to the export step: the graph to export, real inputs to prove it, and its manifest part."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class ExportSpec:
    """Declared once per task (like an Optimum export config), consumed by `training.export.build_package`."""

    # eval-mode wrapper: forward(*inputs in input_names order) -> tensor or tuple in output_names order
    module: torch.nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    parity_cases: list[tuple[str, Feeds]]  # real validation inputs: batch-1, a mixed-length batch, maximum length
    tolerance: float  # absolute tolerance between PyTorch and ONNX outputs
    validation_feeds: list[Feeds]  # real validation batches for the quantisation gate
    validation_labels: np.ndarray | None  # class ids for classifiers; None for embedders (gate: cosine against fp32)
    manifest: dict  # the task's part of manifest.json: task, inputs, outputs, labels, preprocessing
    test_feeds: list[Feeds] = field(default_factory=list)  # the shipped graph's test metric (classifiers)
    test_labels: np.ndarray | None = None
    package_files: dict[str, Path] = field(default_factory=dict)  # extra files copied into the package (tokenizer.json)
    transformer: tuple[int, int] | None = None  # (num_heads, hidden_size) for the ORT transformer optimizer
