"""Length bucketing: sub-batches sorted by token length give the unbucketed answer, in the caller's order, for fewer
padded tokens; the same planner sizes the GPU front's calls to the endpoint's max_batch_size."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.runtime.bucketing import plan_groups, run_in_groups
from functions.runtime.models import ServedModel

WORDS = ["good", "bad", "launch", "meh", "the", "best", "ever", "awful", "🙂", "not", "really", "day"]


class RecordingBackend:
    """Wraps a served model's backend and records the shape of every sub-batch it runs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def run_many(self, batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        self.shapes.extend(batch["input_ids"].shape for batch in batches)
        return self.inner.run_many(batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def same_model(model: ServedModel, *, bucketing: bool) -> tuple[ServedModel, RecordingBackend]:
    """The model over the same session, with bucketing on or off, recording what reaches the session."""
    backend = RecordingBackend(model.backend)
    return ServedModel(model.package, model.processor, backend, bucketing=bucketing), backend  # type: ignore[arg-type]


texts = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=40).map(" ".join), min_size=1, max_size=24)


def fp32_text_models(models: dict[str, ServedModel]) -> list[ServedModel]:
    """Text models whose graph is fp32. A dynamically quantised (int8) graph computes its activation scales over the
    whole batch, so its answer for a text already depends on the batch around it (measured on the demo sentiment
    package: up to 0.2 in probability between a text alone and in a padded batch of 32), bucketed or not."""
    return [
        model
        for model in models.values()
        if model.manifest.preprocessing.max_length is not None and model.manifest.graph.precision == "fp32"
    ]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=texts)
def test_bucketed_outputs_equal_unbucketed_in_the_callers_order(
    served_models: dict[str, ServedModel], batch: list[str]
) -> None:
    models = fp32_text_models(served_models)
    assert models  # the embeddings package ships fp32
    for model in models:
        # given the same model with bucketing on and off, and texts of any lengths in any order
        bucketed, _ = same_model(model, bucketing=True)
        plain, _ = same_model(model, bucketing=False)
        # when
        ours, theirs = bucketed.predict(batch), plain.predict(batch)
        # then every output matches row for row (to float tolerance: padding is masked, not free of rounding)
        assert ours.keys() == theirs.keys()
        for output in ours:
            if ours[output].dtype == object:
                assert list(ours[output]) == list(theirs[output])
            else:
                np.testing.assert_allclose(ours[output], theirs[output], atol=2e-5, rtol=1e-4)
        # and each row is that text's own answer, whatever its neighbours
        alone = plain.predict([batch[-1]])
        for output in ours:
            if ours[output].dtype != object:
                np.testing.assert_allclose(ours[output][-1], alone[output][0], atol=2e-5, rtol=1e-4)


def test_bucketing_cuts_the_padded_tokens_the_graph_runs(served_models: dict[str, ServedModel]) -> None:
    # given 32 texts of very different lengths, as real traffic has
    batch = [" ".join(WORDS[: 1 + index % 12] * (1 + index % 5)) for index in range(32)]
    bucketed, on = same_model(served_models["sentiment"], bucketing=True)
    plain, off = same_model(served_models["sentiment"], bucketing=False)
    # when
    bucketed.predict(batch)
    plain.predict(batch)
    # then unbucketed runs one batch padded to the longest; bucketed runs fewer padded tokens
    real = int(plain.processor.prepare(batch).feeds["attention_mask"].sum())
    padded_off = sum(math.prod(shape) for shape in off.shapes)
    padded_on = sum(math.prod(shape) for shape in on.shapes)
    assert len(off.shapes) == 1
    assert off.shapes[0][0] == 32
    assert len(on.shapes) > 1
    assert real <= padded_on < 0.75 * padded_off, (real, padded_on, padded_off)


def test_a_single_text_is_one_call_with_no_planning(served_models: dict[str, ServedModel]) -> None:
    model, backend = same_model(served_models["sentiment"], bucketing=True)
    model.predict(["one text"])
    assert len(backend.shapes) == 1


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=128), min_size=1, max_size=200),
    max_rows=st.integers(min_value=1, max_value=64),
    call_cost=st.sampled_from([0.0, 8.0, 64.0, 1e9]),
)
def test_a_plan_is_a_partition_within_max_rows_padding_no_more_than_one_batch(
    lengths: list[int], max_rows: int, call_cost: float
) -> None:
    plan = plan_groups(lengths, max_rows=max_rows, call_cost_tokens=call_cost)
    rows = np.concatenate(plan.groups)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(group) <= max_rows for group in plan.groups)
    assert plan.padded_tokens == sum(len(g) * max(lengths[i] for i in g) for g in plan.groups)
    assert sum(lengths) <= plan.padded_tokens
    if len(lengths) <= max_rows:  # one padded batch is a feasible plan, so the best costs no more
        assert plan.padded_tokens + call_cost * len(plan.groups) <= plan.unbucketed_tokens + call_cost
    if call_cost == 1e9:  # a remote call: as few as max_rows allows
        assert len(plan.groups) == math.ceil(len(lengths) / max_rows)


def test_outputs_return_to_the_callers_order() -> None:
    # given a "graph" whose answer per row is its real token count and first id, seen through masked padding
    ids = np.array([[7, 1, 1, 0, 0], [3, 0, 0, 0, 0], [9, 1, 1, 1, 1], [5, 1, 0, 0, 0]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)

    def run_many(batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [{"out": np.stack([b["attention_mask"].sum(1), b["input_ids"][:, 0]], axis=1)} for b in batches]

    # when it runs bucketed, one row per sub-batch
    outputs = run_in_groups({"input_ids": ids, "attention_mask": mask}, run_many, max_rows=1, call_cost_tokens=0)
    # then row i is still row i's answer
    assert outputs["out"].tolist() == [[3, 7], [1, 3], [5, 9], [2, 5]]
