"""The interface every task implements: API tensors -> graph feeds -> API tensors, plus the JSON row form."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from functions.runtime.package import ModelPackage, PackageError


@dataclass(frozen=True)
class Prepared:
    """Graph feeds for one batch, and which instances were truncated on the way."""

    feeds: dict[str, np.ndarray]
    batch_size: int
    truncated: list[int] = field(default_factory=list)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row maximum so large logits cannot overflow."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


class TaskProcessor(ABC):
    """Pre/post-processing of one task; each model has exactly one API input.

    Input is checked once, at the edge: `check_batch` for a decoded v2 tensor, `check_instance` for one v1 instance or
    batch row. `prepare` and everything after it trust what those returned.
    """

    def __init__(self, package: ModelPackage) -> None:
        self.manifest = package.manifest
        self.input_name = package.manifest.inputs[0].name
        self.graph_input_names = [tensor.name for tensor in package.manifest.graph.inputs]
        self.graph_output_names = [tensor.name for tensor in package.manifest.graph.outputs]

    @abstractmethod
    def check_batch(self, value: Any) -> Any:
        """Task rules for a whole tensor the v2 codec already decoded (type and shape are checked there)."""

    @abstractmethod
    def check_instance(self, value: Any) -> Any:
        """Validate one instance (KServe v1, batch rows); returns it in the form `stack` accepts."""

    @abstractmethod
    def stack(self, instances: list[Any]) -> Any:
        """One batch from instances already accepted by `check_instance`."""

    @abstractmethod
    def prepare(self, batch: Any) -> Prepared:
        """Turn a checked batch into graph feeds."""

    @abstractmethod
    def finish(self, graph_outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn graph outputs into the manifest's API outputs."""

    @abstractmethod
    def predictions(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """One JSON-ready prediction per instance (KServe v1 `predictions`, batch output lines)."""

    @abstractmethod
    def example_batch(self) -> Any:
        """A small real batch for the warm-up run at init."""

    @abstractmethod
    def input_features(self, prepared: Prepared) -> dict[str, np.ndarray]:
        """Per instance, the input statistics data capture records and the drift check compares (one array each)."""

    def prediction_features(self, outputs: Mapping[str, np.ndarray], batch_size: int) -> list[dict[str, Any]]:
        """Per instance, what the drift check compares of the answer (nothing, unless the task says)."""
        return [{} for _ in range(batch_size)]

    def unwrap(self, value: Any) -> Any:
        """An instance may come as the bare value or as {input_name: value}."""
        if isinstance(value, dict) and set(value) == {self.input_name}:
            return value[self.input_name]
        return value


class Classifier(TaskProcessor):
    """Softmax and labels over the graph's logits."""

    def __init__(self, package: ModelPackage) -> None:
        super().__init__(package)
        if not package.manifest.labels:
            raise PackageError(f"{package.name}: a classifier package needs labels")
        self.labels = np.asarray(package.manifest.labels, dtype=object)
        self.label_list = list(package.manifest.labels)

    def finish(self, graph_outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        probabilities = softmax(np.asarray(graph_outputs[self.graph_output_names[0]], dtype=np.float32))
        return {"label": self.labels[probabilities.argmax(axis=-1)], "probabilities": probabilities}

    def prediction_features(self, outputs: Mapping[str, np.ndarray], batch_size: int) -> list[dict[str, Any]]:
        """The label and its probability: a shift in either is what drifting inputs do to a classifier."""
        scores = outputs["probabilities"].max(axis=-1).tolist()
        return [{"label": str(label), "score": score} for label, score in zip(outputs["label"], scores, strict=True)]

    def predictions(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        rows = outputs["probabilities"].tolist()
        return [
            {"label": str(label), "score": max(row), "scores": dict(zip(self.label_list, row, strict=True))}
            for label, row in zip(outputs["label"], rows, strict=True)
        ]
