"""Text classification: fine-tune MiniLM with a linear head on mean-pooled tokens; TF-IDF + LR as the baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from torch import nn

from functions.runtime.package import Preprocessing
from training.datasets import read_texts
from training.export_spec import ExportSpec, TaskManifest
from training.tasks import text
from training.tasks.base import Batch, TrainingTask, classifier_outputs

BASELINE_NAME = "tfidf-logreg"
TOLERANCE = 1e-4
Example = tuple[str, int]


class TextClassifier(nn.Module):
    """forward(input_ids, attention_mask) -> logits: exactly the exported graph."""

    def __init__(self, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.body = text.MeanPooledEncoder()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(text.HIDDEN_SIZE, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(input_ids=input_ids, attention_mask=attention_mask)))


class TextClassification(TrainingTask):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tokenizer = text.load_tokenizer(self.hyperparameters.max_length)

    def read_split(self, split: str) -> list[Example]:
        ids = {label: index for index, label in enumerate(self.labels)}
        try:
            return [(row["text"], ids[row["label"]]) for row in read_texts(self.channel(split))]
        except KeyError as error:
            raise ValueError(f"channel {split!r}: label {error} is not one of {self.labels}") from None

    def build_model(self) -> nn.Module:
        return TextClassifier(len(self.labels))

    def collate(self, examples: Sequence[Example]) -> Batch:
        batch = text.text_batch(self.tokenizer, [sentence for sentence, _ in examples])
        batch["labels"] = torch.tensor([label for _, label in examples], dtype=torch.long)
        return batch

    def baseline(self) -> dict[str, Any]:
        """TF-IDF (word uni+bigrams) + logistic regression on the same training rows, scored on the same test rows."""
        train, test = self.train_examples(), self.eval_examples("test")
        pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), LogisticRegression(max_iter=1000)
        )
        pipeline.fit([sentence for sentence, _ in train], [label for _, label in train])
        accuracy = pipeline.score([sentence for sentence, _ in test], [label for _, label in test])
        return {"name": BASELINE_NAME, "test_accuracy": round(float(accuracy), 4)}

    def export_spec(self, model: nn.Module) -> ExportSpec:
        max_length = self.hyperparameters.max_length
        train, validation, test = self.train_examples(), self.eval_examples("validation"), self.eval_examples("test")
        validation_texts = [sentence for sentence, _ in validation]
        return ExportSpec(
            module=model.eval(),
            input_names=text.TEXT_INPUTS,
            output_names=["logits"],
            dynamic_axes={**text.TEXT_AXES, "logits": {0: "batch"}},
            parity_cases=text.parity_cases(self.tokenizer, validation_texts, max_length),
            tolerance=TOLERANCE,
            validation_feeds=text.feed_batches(self.tokenizer, validation_texts),
            validation_labels=np.array([label for _, label in validation], dtype=np.int64),
            test_feeds=text.feed_batches(self.tokenizer, [sentence for sentence, _ in test]),
            test_labels=np.array([label for _, label in test], dtype=np.int64),
            manifest=TaskManifest(
                task=self.entry.task,
                inputs=[text.API_TEXT_INPUT],
                outputs=classifier_outputs(len(self.labels)),
                labels=list(self.labels),
                preprocessing=Preprocessing(max_length=max_length),
            ),
            package_files={"tokenizer.json": text.save_tokenizer(self.tokenizer, self.work_dir)},
            transformer=(text.NUM_HEADS, text.HIDDEN_SIZE),
            reference_inputs=[sentence for sentence, _ in [*train, *validation]],
            reference_data=f"train + validation ({len(train)} + {len(validation)} texts)",
        )


TASK = TextClassification
