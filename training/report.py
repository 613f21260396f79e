"""What a job leaves in SM_OUTPUT_DATA_DIR for people: the evaluation report (JSON) and the training curves (PNG)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the object API renders with Agg and never needs a display (no pyplot)
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from training.tasks.base import Evaluation

REPORT_FILE = "evaluation.json"
CURVES_FILE = "training_curves.png"


@dataclass
class TrainingCurves:
    """Logged points of one run; saved inside checkpoints so a resumed job plots its whole history."""

    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since the previous point)
    validation: list[dict[str, float]] = field(default_factory=list)  # {step, epoch, val_loss, val_accuracy}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingCurves:
        return cls([(int(step), float(loss)) for step, loss in data["train_loss"]], list(data["validation"]))


def classification_report(evaluation: Evaluation, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix (rows: true, columns: predicted)."""
    classes = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        evaluation.labels, evaluation.predictions, labels=classes, zero_division=0
    )
    matrix = confusion_matrix(evaluation.labels, evaluation.predictions, labels=classes)
    return {
        "samples": len(evaluation.labels),
        "accuracy": round(evaluation.accuracy, 4),
        "loss": round(evaluation.loss, 4),
        "per_class": {
            label: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
    }


def write_report(
    path: Path,
    *,
    model_name: str,
    labels: Sequence[str],
    evaluations: Mapping[str, Evaluation],
    baseline: Mapping[str, Any] | None,
    hyperparameters: Mapping[str, Any],
) -> Path:
    report = {
        "model": model_name,
        "hyperparameters": dict(hyperparameters),
        "splits": {split: classification_report(evaluation, labels) for split, evaluation in evaluations.items()},
        "baseline": dict(baseline) if baseline else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def plot_curves(curves: TrainingCurves, path: Path, title: str) -> Path:
    """Training loss by step on the left, validation accuracy by step on the right."""
    figure = Figure(figsize=(10, 4))
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    if curves.train_loss:
        steps, losses = np.array(curves.train_loss).T
        loss_axis.plot(steps, losses, label="train loss")
    if curves.validation:
        val_steps = [point["step"] for point in curves.validation]
        loss_axis.plot(val_steps, [point["val_loss"] for point in curves.validation], "o-", label="validation loss")
        accuracy_axis.plot(val_steps, [point["val_accuracy"] for point in curves.validation], "o-")
    loss_axis.set(xlabel="step", ylabel="cross-entropy", title="loss")
    loss_axis.legend()
    accuracy_axis.set(xlabel="step", ylabel="accuracy", title="validation accuracy")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
