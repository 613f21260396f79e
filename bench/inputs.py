"""The same real inputs for every contender: test-split tweets in a fixed order, test-split digit images."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import numpy as np


@cache
def test_texts() -> tuple[str, ...]:
    """Test-split tweets (never seen in training), in the split's fixed order."""
    from training.datasets import split_tweets

    return tuple(split_tweets()["test"].texts)


@cache
def test_digits() -> np.ndarray:
    """Test-split digit images [N, 8, 8], raw sklearn values 0..16 as the API takes them."""
    from sklearn.datasets import load_digits

    from training.datasets import stratified_split

    digits = load_digits()
    rows = stratified_split(digits.target)["test"]
    return digits.images[rows].astype(np.float32)


def text_batches(batch_size: int, count: int, texts: tuple[str, ...] | None = None) -> list[list[str]]:
    """`count` consecutive batches walking through the texts (wrapping), so each iteration sees new real text."""
    pool = texts or test_texts()
    return [[pool[(start * batch_size + i) % len(pool)] for i in range(batch_size)] for start in range(count)]


def image_batches(batch_size: int, count: int) -> list[np.ndarray]:
    pool = test_digits()
    return [pool[np.arange(start * batch_size, (start + 1) * batch_size) % len(pool)] for start in range(count)]


def rows_cycle(total: int) -> Iterator[str]:
    """`total` rows for the batch-path file: the test tweets repeated in order (a real length distribution)."""
    pool = test_texts()
    for index in range(total):
        yield pool[index % len(pool)]
