"""What an ONNX graph scores on real data, run as serving runs it: the figures the gates and the manifest record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from training.export_spec import ExportSpec, Feeds


def open_session(path: Path) -> ort.InferenceSession:
    """A CPU session as serving opens it."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_graph(path: Path, batches: list[Feeds], input_names: list[str]) -> np.ndarray:
    """The first output over all batches, concatenated in order."""
    session = open_session(path)
    output = session.get_outputs()[0].name
    return np.concatenate([session.run([output], {k: feeds[k] for k in input_names})[0] for feeds in batches])


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=-1) == labels))


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity between two embeddings of the same texts."""
    dot = np.sum(reference * candidate, axis=-1)
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(candidate, axis=-1)
    return dot / np.maximum(norms, 1e-12)


def nearest_neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Each row's k most cosine-similar other rows (unordered), as a retrieval index over these texts answers."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # a text is not its own neighbour
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Mean share of each text's top-k neighbours under `reference` that `candidate` also ranks in its top k."""
    if len(reference) <= k:
        raise ValueError(f"top-{k} neighbours need more than {k} texts, got {len(reference)}")
    ours, theirs = nearest_neighbours(reference, k), nearest_neighbours(candidate, k)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(ours, theirs, strict=True)]
    return float(np.mean(shared) / k)


def test_metrics(spec: ExportSpec, path: Path) -> dict[str, float]:
    """The shipped graph's own test figure, so the manifest never reports the PyTorch model's."""
    if spec.validation_labels is None or not spec.test_feeds or spec.test_labels is None:
        return {}
    return {"test_accuracy": accuracy(run_graph(path, spec.test_feeds, spec.input_names), np.asarray(spec.test_labels))}


test_metrics.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
