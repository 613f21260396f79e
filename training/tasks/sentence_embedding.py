"""Sentence embeddings: pretrained MiniLM, no training; pooling and L2 normalisation live inside the graph.

The graph's output therefore equals sentence-transformers' `encode(normalize_embeddings=True)`, with no
post-processing left for serving to get wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from functions.runtime.package import Preprocessing, TensorSpec
from training.datasets import read_texts
from training.export_spec import ExportSpec, QuantizationRecipe, TaskManifest
from training.tasks import text
from training.tasks.base import Evaluation, TrainingTask

TOLERANCE = 1e-4
# Measured with `python -m bench.measurements.embeddings_int8` (each MatMul quantised alone, on train-split tweets):
# these nodes cost the most ranking quality in int8, so they stay fp32. The gate still decides on held-out tweets.
INT8_RECIPE = QuantizationRecipe(
    keep_fp32=(r"layer\.\d+/(intermediate|output)/dense/MatMul$", r"^EmbedLayerNormalization", r"^Attention_[1-5]$")
)


class SentenceEmbedder(nn.Module):
    """forward(input_ids, attention_mask) -> unit-length sentence_embedding [batch, 384]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = text.MeanPooledEncoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return functional.normalize(self.body(input_ids=input_ids, attention_mask=attention_mask), p=2, dim=1)


class SentenceEmbedding(TrainingTask):
    trainable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tokenizer = text.load_tokenizer(self.hyperparameters.max_length)

    def build_model(self) -> nn.Module:
        return SentenceEmbedder()

    def sentences(self) -> Sequence[str]:
        """Real sentences from the validation channel (labels, if any, are ignored)."""
        rows = self.limit(read_texts(self.channel("validation")), self.hyperparameters.max_eval_samples)
        return [row["text"] for row in rows]

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Evaluation | None:
        return None

    def export_spec(self, model: nn.Module) -> ExportSpec:
        sentences = self.sentences()
        return ExportSpec(
            module=model.eval(),
            input_names=text.TEXT_INPUTS,
            output_names=["sentence_embedding"],
            dynamic_axes={**text.TEXT_AXES, "sentence_embedding": {0: "batch"}},
            parity_cases=text.parity_cases(self.tokenizer, sentences, self.hyperparameters.max_length),
            tolerance=TOLERANCE,
            validation_feeds=text.feed_batches(self.tokenizer, sentences),
            validation_labels=None,
            manifest=TaskManifest(
                task=self.entry.task,
                inputs=[text.API_TEXT_INPUT],
                outputs=[TensorSpec(name="embedding", datatype="FP32", shape=[-1, text.HIDDEN_SIZE])],
                labels=[],
                preprocessing=Preprocessing(max_length=self.hyperparameters.max_length),
            ),
            package_files={"tokenizer.json": text.save_tokenizer(self.tokenizer, self.work_dir)},
            transformer=(text.NUM_HEADS, text.HIDDEN_SIZE),
            int8_recipe=INT8_RECIPE,
            reference_inputs=list(sentences),
            reference_data=f"validation ({len(sentences)} sentences)",
        )


TASK = SentenceEmbedding
