"""The one place a task is declared: its name, its traits, and where serving and training implement it.

The catalog, the package format, the serving processors and the training tasks all read this table, so a new task
is one entry here plus its two implementations (serving never imports the training module it names).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Task(StrEnum):
    TEXT_CLASSIFICATION = "text-classification"
    SENTENCE_EMBEDDING = "sentence-embedding"
    IMAGE_CLASSIFICATION = "image-classification"


@dataclass(frozen=True)
class TaskTraits:
    """What the format, the catalog and the loaders need to know of a task, and where its code lives."""

    text: bool  # ships tokenizer.json and needs preprocessing.max_length
    classifies: bool  # has labels, softmax and argmax
    processor: str  # "module:Class" of its serving pre/post-processing (functions.runtime.tasks)
    training_module: str  # its training module (training.tasks), imported on demand: the CNN never imports transformers


TASKS: dict[Task, TaskTraits] = {
    Task.TEXT_CLASSIFICATION: TaskTraits(
        text=True,
        classifies=True,
        processor="functions.runtime.tasks.text:TextClassification",
        training_module="training.tasks.text_classification",
    ),
    Task.SENTENCE_EMBEDDING: TaskTraits(
        text=True,
        classifies=False,
        processor="functions.runtime.tasks.text:SentenceEmbedding",
        training_module="training.tasks.sentence_embedding",
    ),
    Task.IMAGE_CLASSIFICATION: TaskTraits(
        text=False,
        classifies=True,
        processor="functions.runtime.tasks.image:ImageClassification",
        training_module="training.tasks.image_classification",
    ),
}
