"""The interface every task implements: API tensors -> graph feeds -> API tensors, plus the JSON row form."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from functions.runtime.errors import InputError
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
    """Pre/post-processing of one task; each model has exactly one API input."""

    def __init__(self, package: ModelPackage) -> None:
        self.manifest = package.manifest
        self.input_name = package.manifest.inputs[0].name
        self.graph_input_names = [tensor.name for tensor in package.manifest.graph.inputs]
        self.graph_output_names = [tensor.name for tensor in package.manifest.graph.outputs]

    def batch_of(self, inputs: Mapping[str, Any]) -> Any:
        """The one API input of a request, or an InputError naming what is missing or extra."""
        if self.input_name not in inputs:
            raise InputError(f"missing input {self.input_name!r} (model {self.manifest.name} takes it)")
        extra = sorted(set(inputs) - {self.input_name})
        if extra:
            raise InputError(
                f"unknown input(s) {', '.join(map(repr, extra))}: model {self.manifest.name} takes "
                f"only {self.input_name!r}"
            )
        return inputs[self.input_name]

    @abstractmethod
    def prepare(self, inputs: Mapping[str, Any]) -> Prepared:
        """Validate the API input and turn it into graph feeds."""

    @abstractmethod
    def finish(self, graph_outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn graph outputs into the manifest's API outputs."""

    @abstractmethod
    def check_instance(self, value: Any) -> Any:
        """Validate one row/instance (batch files, KServe v1); returns it in the form `prepare` accepts in a list."""

    @abstractmethod
    def predictions(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        """One JSON-ready prediction per instance (KServe v1 `predictions`, batch output lines)."""

    @abstractmethod
    def example_inputs(self) -> dict[str, Any]:
        """A small real input for the warm-up run at init."""

    def stack(self, instances: list[Any]) -> dict[str, Any]:
        """API inputs from rows already accepted by `check_instance`."""
        return {self.input_name: instances}


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

    def predictions(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        rows = outputs["probabilities"].tolist()
        return [
            {"label": str(label), "score": max(row), "scores": dict(zip(self.label_list, row, strict=True))}
            for label, row in zip(outputs["label"], rows, strict=True)
        ]
