"""What a task hands to the export step: the graph to export, real inputs to prove it, and its manifest part."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from functions.runtime.package import Preprocessing, TensorSpec
from functions.runtime.task_registry import Task

Feeds = dict[str, np.ndarray]


class TaskManifest(BaseModel):
    """The task's part of manifest.json: what the API exposes, its labels, and how serving preprocesses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Task
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    preprocessing: Preprocessing


@dataclass(frozen=True)
class ExportSpec:
    """Declared once per task (like an Optimum export config), consumed by `training.packaging.build_package`."""

    # eval-mode wrapper: forward(*inputs in input_names order) -> tensor or tuple in output_names order
    module: torch.nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    parity_cases: list[tuple[str, Feeds]]  # real validation inputs: batch-1, a mixed-length batch, maximum length
    tolerance: float  # absolute tolerance between PyTorch and ONNX outputs
    validation_feeds: list[Feeds]  # real validation batches for the quantisation gate
    validation_labels: np.ndarray | None  # class ids for classifiers; None for embedders (gate: cosine against fp32)
    test_feeds: list[Feeds] = field(default_factory=list)  # the shipped graph's test metric (classifiers)
    test_labels: np.ndarray | None = None
    package_files: dict[str, Path] = field(default_factory=dict)  # extra files copied into the package (tokenizer.json)
    transformer: tuple[int, int] | None = None  # (num_heads, hidden_size) for the ORT transformer optimizer
    manifest: TaskManifest | None = None  # needed to package; a graph exported only to measure it has none
    # training/validation instances as the API takes them (texts, raw pixels): profiled into the drift reference
    reference_inputs: list[Any] = field(default_factory=list)
    reference_data: str = ""  # which data those are, for people reading the manifest
