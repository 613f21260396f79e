"""What a task hands to the export step: the graph to export, real inputs to prove it, and its manifest part."""

from __future__ import annotations

import re
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
class QuantizationRecipe:
    """How a task's int8 graph is made with ORT's dynamic quantiser, named in the manifest.

    reduce_range (7-bit weights) stays on: Lambda x86 may land on a CPU without VNNI, where full-range int8
    products saturate in AVX2's 16-bit accumulation. keep_fp32 holds regular expressions over node names: the nodes
    measured as the most sensitive, left in fp32.
    """

    per_channel: bool = True
    reduce_range: bool = True
    keep_fp32: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        method = "dynamic-int8" + " reduce_range" * self.reduce_range + (" per_channel" if self.per_channel else "")
        return method + "".join(f" keep-fp32:{pattern}" for pattern in self.keep_fp32)

    def excluded(self, node_names: list[str]) -> list[str]:
        """The graph's nodes left in fp32."""
        return [name for name in node_names if any(re.search(pattern, name) for pattern in self.keep_fp32)]


DEFAULT_RECIPE = QuantizationRecipe()


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
    validation_labels: np.ndarray | None  # class ids for classifiers; None for embedders (gate: retrieval vs fp32)
    test_feeds: list[Feeds] = field(default_factory=list)  # the shipped graph's test metric (classifiers)
    test_labels: np.ndarray | None = None
    package_files: dict[str, Path] = field(default_factory=dict)  # extra files copied into the package (tokenizer.json)
    transformer: tuple[int, int] | None = None  # (num_heads, hidden_size) for the ORT transformer optimizer
    manifest: TaskManifest | None = None  # needed to package; a graph exported only to measure it has none
    int8_recipe: QuantizationRecipe = DEFAULT_RECIPE
    # training/validation instances as the API takes them (texts, raw pixels): profiled into the drift reference
    reference_inputs: list[Any] = field(default_factory=list)
    reference_data: str = ""  # which data those are, for people reading the manifest
