"""Text tasks: `tokenizers` with truncation at max_length and padding to the longest text in the batch.

A text far longer than max_length tokens is cut to a character budget before tokenising: tokenising 5 MB only to
keep the first 128 tokens costs seconds and a gigabyte. The cut never changes the tokens kept (see `kept_whole`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from functions.runtime.errors import InputError
from functions.runtime.package import ModelPackage
from functions.runtime.tasks.base import Classifier, Prepared, TaskProcessor

DEFAULT_PAD_TOKEN = "[PAD]"
# First cut: 32 characters per kept token, about 7x English's 4-5 per WordPiece token; enough for nearly every text.
CHARS_PER_TOKEN = 32
# Second and last cut: past 1024 characters per kept token (whitespace or control-character runs) a text is cut
# there and reported truncated, so no text costs more than this to tokenise.
MAX_CHARS_PER_TOKEN = 1024
SURROGATE = re.compile("[\ud800-\udfff]")


def load_tokenizer(package: ModelPackage) -> Tokenizer:
    """The package's fast tokenizer, re-configured: the exported file may pad to a fixed length, we never do.

    Padding is on (to the longest text of a batch); `unpadded` gives the copy for a lone text.
    """
    tokenizer = Tokenizer.from_file(str(package.tokenizer_path))
    max_length = package.manifest.preprocessing.max_length
    assert max_length is not None  # load_package guarantees it for text tasks
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token", DEFAULT_PAD_TOKEN)
    pad_id = padding.get("pad_id", tokenizer.token_to_id(pad_token) or 0)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # no length: pad to the longest in the batch
    return tokenizer


def unpadded(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that never pads, for one text at a time: padding a lone text changes nothing, yet `tokenizers` spends
    about as long on it as on truncation."""
    single = Tokenizer.from_str(tokenizer.to_str())
    single.no_padding()
    return single


def check_text(text: Any, where: str) -> str:
    """A non-blank string of valid Unicode (a lone surrogate such as "\\ud800" cannot be tokenised), or an InputError
    saying where the bad one is."""
    if not isinstance(text, str):
        raise InputError(f"{where} must be a string, got {type(text).__name__}")
    if not text.isascii() and (surrogate := SURROGATE.search(text)):
        raise InputError(
            f"{where} holds a lone surrogate {surrogate.group()!r} at {surrogate.start()}: not Unicode text"
        )
    if not text.strip():
        raise InputError(f"{where} is an empty string")
    return text


def kept_whole(encoding: Encoding) -> bool:
    """True when a word follows the last kept one (max_length tokens) in this encoding of a text's prefix.

    Pre-tokenisation splits words at whitespace and punctuation, character by character, so every word before that
    following word ends inside the prefix and is tokenised exactly as in the whole text: the kept tokens, and the
    fact that the text overflows max_length, are those of the whole text. A prefix that shows no such word proves
    nothing, and a longer one is tried.
    """
    if not encoding.overflowing:
        return False
    kept = [word for word in encoding.word_ids if word is not None]
    rest = [word for word in encoding.overflowing[-1].word_ids if word is not None]
    return bool(kept and rest) and rest[-1] > kept[-1]


class _TextTask(TaskProcessor):
    def __init__(self, package: ModelPackage) -> None:
        super().__init__(package)
        self.tokenizer = load_tokenizer(package)
        self.single_tokenizer = unpadded(self.tokenizer)
        max_length = package.manifest.preprocessing.max_length
        assert max_length is not None
        self.char_budget = max_length * CHARS_PER_TOKEN
        self.char_ceiling = max_length * MAX_CHARS_PER_TOKEN

    def check_batch(self, value: Any) -> list[str]:
        """The codec already checked the BYTES tensor holds strings; blank texts are refused here."""
        return [check_text(text, f"input {self.input_name!r}: item {index}") for index, text in enumerate(value)]

    def check_instance(self, value: Any) -> str:
        return check_text(self.unwrap(value), repr(self.input_name))

    def stack(self, instances: list[Any]) -> list[str]:
        return instances

    def clip(self, text: str) -> tuple[str, bool]:
        """The text, or a prefix with the same kept tokens; (prefix, True) when even the ceiling could not prove it,
        so the text is cut there and reported truncated."""
        for limit in (self.char_budget, self.char_ceiling):
            if len(text) <= limit:
                return text, False
            if kept_whole(self.tokenizer.encode(text[:limit])):
                return text[:limit], False
        return text[: self.char_ceiling], True

    def prepare(self, batch: list[str]) -> Prepared:
        cut: list[int] = []
        if any(len(text) > self.char_budget for text in batch):
            batch = list(batch)
            for index, text in enumerate(batch):
                batch[index], forced = self.clip(text)
                if forced:
                    cut.append(index)
        # encode_batch hands work to the rayon pool: a thread hop that costs more than it saves for one text
        encodings = [self.single_tokenizer.encode(batch[0])] if len(batch) == 1 else self.tokenizer.encode_batch(batch)
        input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        attention_mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        available = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.graph_input_names:
            available["token_type_ids"] = np.zeros_like(input_ids)
        feeds = {name: available[name] for name in self.graph_input_names}
        truncated = [index for index, encoding in enumerate(encodings) if encoding.overflowing or index in cut]
        return Prepared(feeds=feeds, batch_size=len(batch), truncated=truncated)

    def input_features(self, prepared: Prepared) -> dict[str, np.ndarray]:
        """Tokens kept per text (at most max_length) and whether the text was cut there."""
        truncated = np.zeros(prepared.batch_size)
        truncated[prepared.truncated] = 1.0
        return {"tokens": prepared.feeds["attention_mask"].sum(axis=1), "truncated": truncated}

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
