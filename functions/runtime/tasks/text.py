"""Text tasks: `tokenizers` with truncation at max_length and padding to the longest text in the batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from functions.runtime.errors import InputError
from functions.runtime.package import ModelPackage
from functions.runtime.tasks.base import Classifier, Prepared, TaskProcessor

DEFAULT_PAD_TOKEN = "[PAD]"


def load_tokenizer(package: ModelPackage) -> Tokenizer:
    """The package's fast tokenizer, re-configured: the exported file may pad to a fixed length, we never do."""
    tokenizer = Tokenizer.from_file(str(package.tokenizer_path))
    max_length = package.manifest.preprocessing.max_length
    assert max_length is not None  # load_package guarantees it for text tasks
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token", DEFAULT_PAD_TOKEN)
    pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token) or 0)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # no length: pad to the longest in the batch
    return tokenizer


def check_text(text: Any, where: str) -> str:
    """A non-blank string, or an InputError saying where the bad one is."""
    if not isinstance(text, str):
        raise InputError(f"{where} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{where} is an empty string")
    return text


class _TextTask(TaskProcessor):
    def __init__(self, package: ModelPackage) -> None:
        super().__init__(package)
        self.tokenizer = load_tokenizer(package)

    def check_batch(self, value: Any) -> list[str]:
        """The codec already checked the BYTES tensor holds strings; blank texts are refused here."""
        return [check_text(text, f"input {self.input_name!r}: item {index}") for index, text in enumerate(value)]

    def check_instance(self, value: Any) -> str:
        return check_text(self.unwrap(value), repr(self.input_name))

    def stack(self, instances: list[Any]) -> list[str]:
        return instances

    def prepare(self, batch: list[str]) -> Prepared:
        # encode_batch hands work to the rayon pool: a thread hop that costs more than it saves for one text
        encodings = [self.tokenizer.encode(batch[0])] if len(batch) == 1 else self.tokenizer.encode_batch(batch)
        input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        attention_mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        available = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.graph_input_names:
            available["token_type_ids"] = np.zeros_like(input_ids)
        feeds = {name: available[name] for name in self.graph_input_names}
        truncated = [index for index, encoding in enumerate(encodings) if encoding.overflowing]
        return Prepared(feeds=feeds, batch_size=len(batch), truncated=truncated)

    def example_batch(self) -> list[str]:
        return ["A short warm-up sentence.", "Another one, a little longer than the first."]


class TextClassification(Classifier, _TextTask):
    """Logits -> softmax probabilities and a label per text."""


class SentenceEmbedding(_TextTask):
    """The graph already pools and L2-normalises; the runtime passes the vectors through."""

    def finish(self, graph_outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.manifest.outputs[0].name: graph_outputs[self.graph_output_names[0]]}

    def predictions(self, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        return outputs[self.manifest.outputs[0].name].tolist()
