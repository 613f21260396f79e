"""Per-task pre- and post-processing on real packages: tokenisation, padding, truncation, softmax, pixel scaling."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.api.v2 import v2_batch
from functions.runtime.errors import InputError
from functions.runtime.models import ServedModel
from functions.runtime.tasks.base import Prepared, softmax
from functions.runtime.tasks.text import CHARS_PER_TOKEN, SURROGATE
from functions.runtime.tensors import InferRequest


@pytest.fixture(scope="module")
def sentiment(served_models: dict[str, ServedModel]) -> ServedModel:
    return served_models["sentiment"]


def test_padding_is_to_the_longest_text_not_to_max_length(sentiment: ServedModel) -> None:
    # given a short and a longer text, both well under max_length
    texts = ["hi", "a somewhat longer sentence with more tokens in it"]
    # when
    prepared = sentiment.processor.prepare(texts)
    # then the batch is as wide as the longest encoding, not max_length
    ids, mask = prepared.feeds["input_ids"], prepared.feeds["attention_mask"]
    longest = len(sentiment.processor.tokenizer.encode(texts[1]).ids)
    assert ids.shape == mask.shape == (2, longest)
    assert longest < sentiment.manifest.preprocessing.max_length
    assert ids.dtype == mask.dtype == np.int64
    assert mask[0].sum() == len(sentiment.processor.tokenizer.encode("hi").ids)
    assert mask[1].all()
    assert (ids[0][mask[0] == 0] == 0).all()
    assert prepared.truncated == []


def test_single_text_has_no_padding(sentiment: ServedModel) -> None:
    prepared = sentiment.processor.prepare(["just one"])
    assert prepared.feeds["attention_mask"].all()


@pytest.mark.parametrize("text", ["just one", "Ünïcödé and CJK 漢字!", "word " * 300])
def test_a_lone_text_is_tokenised_as_in_a_batch_of_one(sentiment: ServedModel, text: str) -> None:
    # the lone-text path skips padding (a third of a tweet's tokenising time); the ids and mask must not change
    alone = sentiment.processor.prepare([text])
    (reference,) = sentiment.processor.tokenizer.encode_batch([text])
    assert alone.feeds["input_ids"].tolist() == [reference.ids]
    assert alone.feeds["attention_mask"].tolist() == [reference.attention_mask]
    assert alone.truncated == ([0] if reference.overflowing else [])


def test_long_text_is_truncated_at_max_length_and_reported(sentiment: ServedModel) -> None:
    max_length = sentiment.manifest.preprocessing.max_length
    prepared = sentiment.processor.prepare(["short", "word " * (3 * max_length)])
    assert prepared.feeds["input_ids"].shape == (2, max_length)
    assert prepared.truncated == [1]
    assert sentiment.infer(["word " * (3 * max_length)]).truncated == [0]


def test_feeds_are_exactly_the_graph_inputs(sentiment: ServedModel) -> None:
    prepared = sentiment.processor.prepare(["x"])
    assert list(prepared.feeds) == [tensor.name for tensor in sentiment.manifest.graph.inputs]


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    probabilities = softmax(logits.copy())
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], 1 / 3, rtol=1e-6)
    expected = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
    np.testing.assert_allclose(probabilities[0], expected, rtol=1e-5)


def test_classifier_labels_follow_the_argmax(sentiment: ServedModel) -> None:
    outputs = sentiment.processor.finish({"logits": np.array([[0.0, 5.0, 1.0], [9.0, 0.0, 0.0]], dtype=np.float32)})
    assert list(outputs["label"]) == [sentiment.manifest.labels[1], sentiment.manifest.labels[0]]
    predictions = sentiment.processor.predictions(outputs)
    assert predictions[0]["label"] == sentiment.manifest.labels[1]
    assert predictions[0]["score"] == pytest.approx(float(outputs["probabilities"][0, 1]))
    assert list(predictions[0]["scores"]) == sentiment.manifest.labels


def test_predict_returns_the_api_tensors(served_models: dict[str, ServedModel]) -> None:
    outputs = served_models["sentiment"].predict(["good", "bad", "fine"])
    assert set(outputs) == {"label", "probabilities"}
    assert outputs["probabilities"].shape == (3, len(served_models["sentiment"].manifest.labels))
    assert outputs["probabilities"].dtype == np.float32
    embedding = served_models["embeddings"].predict(["good", "bad"])["embedding"]
    assert embedding.shape == (2, 384)


def test_embeddings_pass_through_the_graph_output(served_models: dict[str, ServedModel]) -> None:
    model = served_models["embeddings"]
    graph_output = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert model.processor.finish({"sentence_embedding": graph_output})["embedding"] is graph_output


def test_digit_pixels_are_scaled_and_reshaped(served_models: dict[str, ServedModel]) -> None:
    model = served_models["digits"]
    scale = model.manifest.preprocessing.pixel_scale
    pixels = np.full((3, 8, 8), 16.0, dtype=np.float32)
    feed = model.processor.prepare(pixels).feeds["pixels"]
    assert feed.shape == (3, 1, 8, 8)
    assert feed.dtype == np.float32
    np.testing.assert_allclose(feed, 16.0 / scale)
    flat = model.processor.prepare(pixels.reshape(3, 64)).feeds["pixels"]
    np.testing.assert_array_equal(flat, feed)


def tensor(name: str, datatype: str, values: Any) -> dict[str, Any]:
    array = np.asarray(values, dtype=object if datatype == "BYTES" else None)
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}


@pytest.mark.parametrize(
    ("model_name", "inputs", "message"),
    [
        ("sentiment", [tensor("text", "BYTES", [])], "no instances"),
        ("sentiment", [tensor("text", "FP32", [1.0])], "datatype FP32, expected BYTES"),
        ("sentiment", [tensor("text", "BYTES", ["ok", ""])], "item 1 is an empty string"),
        ("sentiment", [tensor("text", "BYTES", ["ok", 3])], "must be strings"),
        ("sentiment", [tensor("other", "BYTES", ["a"])], "unknown input 'other'"),
        ("sentiment", [tensor("text", "BYTES", ["a"]), tensor("extra", "FP32", [1])], "unknown input"),
        ("digits", [tensor("pixels", "FP32", np.zeros((2, 7, 7)))], "does not match"),
        ("digits", [tensor("pixels", "FP32", [[["x"] * 8] * 8])], "numbers"),
        ("digits", [tensor("pixels", "FP32", np.full((1, 8, 8), np.nan))], "from 0 to 16"),
        ("digits", [tensor("pixels", "FP32", np.zeros((0, 8, 8)))], "no instances"),
    ],
)
def test_bad_inputs_name_the_problem_once_at_the_edge(
    served_models: dict[str, ServedModel], model_name: str, inputs: list[dict[str, Any]], message: str
) -> None:
    request = InferRequest.model_validate({"inputs": inputs})
    with pytest.raises(InputError, match=message):
        v2_batch(served_models[model_name], request, max_instances=64)


def test_instances_are_checked_one_by_one(served_models: dict[str, ServedModel]) -> None:
    text = served_models["sentiment"].processor
    assert text.check_instance({"text": "hello"}) == "hello"
    with pytest.raises(InputError, match="empty"):
        text.check_instance("  ")
    digits = served_models["digits"].processor
    assert digits.check_instance([value % 17 for value in range(64)]).shape == (8, 8)
    with pytest.raises(InputError):
        digits.check_instance(5)


# --- long texts are cut to a character budget before tokenising (issue 9, finding 4) ---------------------------------


class RecordingTokenizer:
    """The real tokenizer, noting the longest text it is handed."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.longest = 0

    def encode(self, text: str) -> Any:
        self.longest = max(self.longest, len(text))
        return self.tokenizer.encode(text)

    def encode_batch(self, texts: list[str]) -> Any:
        self.longest = max(self.longest, *map(len, texts))
        return self.tokenizer.encode_batch(texts)


def kept_tokens(prepared: Prepared, index: int) -> list[int]:
    ids, mask = prepared.feeds["input_ids"][index], prepared.feeds["attention_mask"][index]
    return ids[mask == 1].tolist()


def test_a_5mb_text_is_cut_before_it_is_tokenised(sentiment: ServedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a 5 MB text (tokenised whole: seconds and a gigabyte, to keep max_length tokens)
    processor = sentiment.processor
    spy = RecordingTokenizer(processor.tokenizer)
    monkeypatch.setattr(processor, "tokenizer", spy)
    max_length = sentiment.manifest.preprocessing.max_length
    huge = "word " * 1_000_000
    # when
    started = time.perf_counter()
    prepared = processor.prepare(["short", huge])
    elapsed = time.perf_counter() - started
    # then the tokenizer never saw more than the budget, and the text is scored as its first tokens, truncated
    assert spy.longest <= processor.char_budget == max_length * CHARS_PER_TOKEN
    assert elapsed < 0.5
    assert prepared.truncated == [1]
    reference = processor.tokenizer.tokenizer.encode("word " * (2 * max_length))
    assert kept_tokens(prepared, 1) == reference.ids


def test_texts_within_the_budget_are_tokenised_as_they_are(sentiment: ServedModel) -> None:
    processor = sentiment.processor
    max_length = sentiment.manifest.preprocessing.max_length
    texts = [
        "hi",
        "Ünïcödé, punctuation... and CJK 漢字 in one sentence!",
        "word " * (3 * max_length),  # truncated, still within the budget
        "a" + " " * (processor.char_budget - 2) + "b",  # whitespace: under a token per 32 characters
    ]
    prepared = processor.prepare(texts)
    reference = processor.tokenizer.encode_batch(texts)
    assert [kept_tokens(prepared, index) for index in range(len(texts))] == [
        [token for token, mask in zip(encoding.ids, encoding.attention_mask, strict=True) if mask]
        for encoding in reference
    ]
    assert prepared.truncated == [index for index, encoding in enumerate(reference) if encoding.overflowing]


def test_a_cut_inside_the_last_kept_word_is_not_trusted(
    sentiment: ServedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a text whose last kept token is the first piece of "internationalization" (international, ##ization),
    # and a budget that cuts that word to "internationa" (intern, ##ation, ##a): a prefix that overflows max_length
    processor = sentiment.processor
    prefix = "the " * (sentiment.manifest.preprocessing.max_length - 3)
    text = prefix + "internationalization and more words"
    monkeypatch.setattr(processor, "char_budget", len(prefix) + len("internationa"))
    # when
    prepared = processor.prepare([text])
    # then the kept tokens are the whole text's (international), not the cut one's (intern)
    whole = processor.tokenizer.encode(text)
    assert kept_tokens(prepared, 0) == whole.ids
    assert prepared.truncated == [0]


WORDS = st.sampled_from(
    ["the", "quick", "unbelievable", "naïve", "漢字", "don't", "e-mail", "x" * 120, "😀", "a\u0301"]
)
PIECES = st.one_of(
    WORDS,
    WORDS,
    WORDS,
    st.sampled_from([".", ",", "!", "?", "--", "(", ")", "\u200b", "\x00", "\t"]),
    st.sampled_from([" ", "\n", "   ", " " * 40, " " * 300]),  # whitespace runs, some far over 32 characters
    st.text(min_size=1, max_size=12).filter(lambda text: not SURROGATE.search(text)),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=20, max_size=99),  # many word pieces, one word
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.lists(PIECES, min_size=30, max_size=200).map(" ".join), min_size=1, max_size=4),
    budget=st.integers(min_value=40, max_value=1200),
)
def test_cutting_never_changes_the_tokens_kept(sentiment: ServedModel, texts: list[str], budget: int) -> None:
    # given a budget small enough that many generated texts are cut (1/32 of the real one, or less)
    processor = sentiment.processor
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(processor, "char_budget", budget)
        patch.setattr(processor, "char_ceiling", 8 * budget)
        # when
        prepared = processor.prepare(texts)
    # then each text keeps the tokens (and truncation) of tokenising it whole, unless it is over the ceiling, where
    # it may be cut at the ceiling instead, and is then reported truncated
    for index, (text, whole) in enumerate(zip(texts, processor.tokenizer.encode_batch(texts), strict=True)):
        expected = [token for token, mask in zip(whole.ids, whole.attention_mask, strict=True) if mask]
        exact = kept_tokens(prepared, index) == expected and (index in prepared.truncated) == bool(whole.overflowing)
        assert exact or (len(text) > 8 * budget and index in prepared.truncated), text
