"""The task modules: dynamic padding, the export declaration and its real parity inputs, the baseline, and the
embedding graph against sentence-transformers itself."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from catalog import Task, load_catalog
from functions.runtime.task_registry import TASKS
from training.datasets import prepare_channels
from training.environment import Hyperparameters
from training.tasks.base import TrainingTask, load_task
from training.tasks.sentence_embedding import SentenceEmbedding
from training.tasks.text import model_path
from training.tasks.text_classification import TextClassification

MAX_LENGTH = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tweet_channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_channels(load_catalog().model("sentiment"), tmp_path_factory.mktemp("tweets"))


@pytest.fixture(scope="module")
def text_task(tweet_channels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TrainingTask:
    hyperparameters = Hyperparameters(max_length=MAX_LENGTH, max_train_samples=64, max_eval_samples=48)
    entry = load_catalog().model("sentiment")
    return load_task(entry, hyperparameters, tweet_channels, tmp_path_factory.mktemp("work"))


def test_every_catalog_task_has_a_module() -> None:
    assert set(TASKS) == set(Task)
    for task, traits in TASKS.items():
        module = importlib.import_module(traits.training_module)
        assert issubclass(module.TASK, TrainingTask), task
    for entry in load_catalog().models.values():
        assert entry.task in TASKS


def test_text_batches_pad_to_their_own_longest_text(text_task: TrainingTask) -> None:
    examples = list(text_task.train_examples())[:6]

    batch = text_task.collate(examples)

    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape == (6, int(lengths.max()))
    assert int(lengths.min()) < int(lengths.max())  # real tweets differ in length: padding is per batch
    assert batch["labels"].tolist() == [label for _, label in examples]
    long_batch = text_task.collate([(" ".join(text for text, _ in examples), 0)])
    assert long_batch["input_ids"].shape == (1, MAX_LENGTH)


def test_text_export_spec_declares_the_graph_with_real_parity_inputs(text_task: TrainingTask) -> None:
    torch.manual_seed(0)
    model = text_task.build_model()

    spec = text_task.export_spec(model)

    assert (spec.input_names, spec.output_names) == (["input_ids", "attention_mask"], ["logits"])
    assert spec.transformer == (12, 384)
    cases = dict(spec.parity_cases)
    assert list(cases) == ["batch-1", "mixed-length", "max-length"]
    assert cases["batch-1"]["input_ids"].shape[0] == 1
    assert len(set(cases["mixed-length"]["attention_mask"].sum(axis=1).tolist())) > 1
    assert cases["max-length"]["input_ids"].shape[1] == MAX_LENGTH
    with torch.no_grad():
        feeds = {name: torch.from_numpy(array) for name, array in cases["mixed-length"].items()}
        logits = spec.module(feeds["input_ids"], feeds["attention_mask"])
    assert logits.shape == (len(feeds["input_ids"]), 3)
    assert not spec.module.training
    assert spec.validation_labels is not None
    assert spec.validation_labels.shape == (48,)
    assert sum(len(feed["input_ids"]) for feed in spec.validation_feeds) == 48
    assert spec.test_labels is not None
    assert sum(len(feed["input_ids"]) for feed in spec.test_feeds) == len(spec.test_labels)
    assert spec.manifest is not None
    assert spec.manifest.labels == ["negative", "neutral", "positive"]
    assert spec.manifest.preprocessing.model_dump(exclude_none=True) == {"max_length": MAX_LENGTH}
    assert [output.name for output in spec.manifest.outputs] == ["label", "probabilities"]


def test_shipped_tokenizer_truncates_and_pads_as_serving_does(text_task: TrainingTask) -> None:
    spec = text_task.export_spec(text_task.build_model())
    tokenizer = Tokenizer.from_file(str(spec.package_files["tokenizer.json"]))
    short, long = "good phone", " ".join(["a really long tweet about batteries"] * 20)

    encodings = tokenizer.encode_batch([short, long])

    assert [len(encoding.ids) for encoding in encodings] == [MAX_LENGTH, MAX_LENGTH]
    assert sum(encodings[0].attention_mask) == 4  # [CLS] good phone [SEP], padded only to the batch's longest
    assert len(tokenizer.encode_batch([short, "bad"])[0].ids) == 4  # not the checkpoint's fixed 128


def test_baseline_is_computed_on_the_same_rows_and_beats_the_majority_class(
    tweet_channels: dict[str, Path], tmp_path: Path
) -> None:
    task = TextClassification(
        load_catalog().model("sentiment"),
        Hyperparameters(max_train_samples=2000, max_eval_samples=600),
        tweet_channels,
        tmp_path,
    )
    test_labels = [label for _, label in task.eval_examples("test")]

    baseline = task.baseline()

    majority = max(np.bincount(test_labels)) / len(test_labels)
    assert baseline["name"] == "tfidf-logreg"
    assert baseline["test_accuracy"] > majority + 0.1


def test_embedding_graph_equals_sentence_transformers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from sentence_transformers import SentenceTransformer

    # given: the catalog's settings and real tweets (the embeddings job's validation channel)
    entry = load_catalog().model("embeddings")
    channels = prepare_channels(entry, tmp_path_factory.mktemp("sentences"))
    hyperparameters = Hyperparameters.from_mapping({**entry.hyperparameters, "max_eval_samples": 64})
    task = load_task(entry, hyperparameters, channels, tmp_path_factory.mktemp("work"))
    assert isinstance(task, SentenceEmbedding)
    spec = task.export_spec(task.build_model())
    texts = list(task.sentences())[:32]
    reference = SentenceTransformer(str(model_path()), device="cpu")

    # when: one padded mixed-length batch through the graph module, and sentence-transformers' own encode
    feeds = spec.validation_feeds[0]
    with torch.no_grad():
        ours = spec.module(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()
    theirs = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    # then
    assert ours.shape == theirs.shape == (32, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999
    assert len(set(feeds["attention_mask"].sum(axis=1).tolist())) > 1  # padding really was in play
