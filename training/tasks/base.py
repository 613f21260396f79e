"""The one interface the training loop drives, and the lookup from a catalog task to its module (the registry's).

A task module says how to read its channels, build its model, batch examples, evaluate and declare its export;
the loop in training/train.py (devices, DDP, checkpoints, logging, packaging) is shared by all of them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from catalog import ModelEntry
from functions.runtime.package import TensorSpec
from functions.runtime.task_registry import TASKS
from training.environment import Hyperparameters
from training.export_spec import ExportSpec

Batch = dict[str, torch.Tensor]  # model inputs by keyword, plus "labels" for classifiers
EVAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class Evaluation:
    """A classifier's predictions on one split, kept whole for the report (per-class figures, confusion matrix)."""

    loss: float
    labels: np.ndarray
    predictions: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.labels == self.predictions)) if len(self.labels) else 0.0


class TrainingTask(ABC):
    """One catalog task; subclasses are declared in training/tasks/<task>.py as `TASK = <class>`."""

    trainable: ClassVar[bool] = True

    def __init__(
        self, entry: ModelEntry, hyperparameters: Hyperparameters, channels: Mapping[str, Path], work_dir: Path
    ) -> None:
        self.entry = entry
        self.hyperparameters = hyperparameters
        self.channels = channels
        self.work_dir = work_dir

    @property
    def labels(self) -> tuple[str, ...]:
        return self.entry.labels

    def channel(self, name: str) -> Path:
        try:
            return self.channels[name]
        except KeyError:
            raise FileNotFoundError(
                f"model {self.entry.name!r} needs the {name!r} channel (SM_CHANNEL_{name.upper()})"
            ) from None

    def limit(self, rows: Sequence[Any], cap: int) -> Sequence[Any]:
        """`max_train_samples` / `max_eval_samples`: 0 means all rows."""
        return rows[:cap] if cap > 0 else rows

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model to train, on the CPU; its forward takes the batch's inputs by keyword."""

    def read_split(self, split: str) -> Sequence[Any]:
        """Every example of one channel (train, validation, test), indexable."""
        raise NotImplementedError(f"{type(self).__name__} reads no labelled examples")

    def train_examples(self) -> Sequence[Any]:
        """Training rows, indexable; the loop shards and shuffles their indices."""
        return self.limit(self.read_split("train"), self.hyperparameters.max_train_samples)

    def eval_examples(self, split: str) -> Sequence[Any]:
        return self.limit(self.read_split(split), self.hyperparameters.max_eval_samples)

    def collate(self, examples: Sequence[Any]) -> Batch:
        raise NotImplementedError(f"{type(self).__name__} does not batch examples")

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return functional.cross_entropy(model(**inputs).float(), batch["labels"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Evaluation | None:
        """Loss and predictions over a split; None for a task without labels."""
        was_training = model.training
        model.eval()
        examples = self.eval_examples(split)
        total_loss, labels, predictions = 0.0, [], []
        for start in range(0, len(examples), EVAL_BATCH_SIZE):
            rows = examples[start : start + EVAL_BATCH_SIZE]
            batch = {key: value.to(device) for key, value in self.collate(rows).items()}
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            logits = model(**inputs).float()
            total_loss += functional.cross_entropy(logits, batch["labels"], reduction="sum").item()
            labels.append(batch["labels"].cpu().numpy())
            predictions.append(logits.argmax(dim=-1).cpu().numpy())
        model.train(was_training)
        return Evaluation(total_loss / max(len(examples), 1), np.concatenate(labels), np.concatenate(predictions))

    def baseline(self) -> dict[str, Any] | None:
        """A simple model on the same split, recorded next to ours; None where there is none."""
        return None

    @abstractmethod
    def export_spec(self, model: nn.Module) -> ExportSpec:
        """What the export step needs: the eval-mode graph module, real parity inputs and the manifest part."""


def classifier_outputs(num_labels: int) -> list[TensorSpec]:
    """What every classifier's API answers: the label and the probability of each class."""
    return [
        TensorSpec(name="label", datatype="BYTES", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, num_labels]),
    ]


def load_task(
    entry: ModelEntry, hyperparameters: Hyperparameters, channels: Mapping[str, Path], work_dir: Path
) -> TrainingTask:
    # Imported on demand, so that training the CNN never imports transformers.
    module = importlib.import_module(TASKS[entry.task].training_module)
    task_class: type[TrainingTask] = module.TASK
    return task_class(entry, hyperparameters, channels, work_dir)
