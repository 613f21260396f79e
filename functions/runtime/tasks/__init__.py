"""Per-task pre- and post-processing: one module per task family, picked by the manifest's `task`."""

from __future__ import annotations

from functions.runtime.package import ModelPackage
from functions.runtime.tasks.base import Prepared, TaskProcessor
from functions.runtime.tasks.image import ImageClassification
from functions.runtime.tasks.text import SentenceEmbedding, TextClassification

PROCESSORS: dict[str, type[TaskProcessor]] = {
    "text-classification": TextClassification,
    "sentence-embedding": SentenceEmbedding,
    "image-classification": ImageClassification,
}


def processor_for(package: ModelPackage) -> TaskProcessor:
    """The processor for a package's task (the manifest model already rejects unknown tasks)."""
    return PROCESSORS[package.manifest.task](package)


__all__ = [
    "PROCESSORS",
    "ImageClassification",
    "Prepared",
    "SentenceEmbedding",
    "TaskProcessor",
    "TextClassification",
    "processor_for",
]
