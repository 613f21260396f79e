"""Length bucketing: a batch of texts padded to its longest wastes most of its tokens on padding, so rows are sorted
by token length and run in sub-batches, each padded only to its own longest, then put back in the caller's order.

One planner serves every path that runs a batch: the API (v2 and v1), batch files and the GPU front, whose
sub-batches also respect the endpoint's max_batch_size. Where a call is cheap (ONNX Runtime in process) the plan
splits wherever that saves more padded tokens than a call costs; where a call is a network round trip it uses as few
calls as max_batch_size allows and only chooses where to cut.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MASK = "attention_mask"  # right-padded token inputs carry it: its row sums are the real lengths
# What one more session.run costs, in padded tokens' worth of compute: merging sub-batches is free below it
CALL_COST_TOKENS = 64
MAX_ROWS = 64  # in-process sub-batches stop here; larger ones gain no GEMM efficiency on a CPU

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Plan:
    """Sub-batches of row indices, in the order they run, and the padded tokens they cost against one padded batch."""

    groups: list[np.ndarray]
    padded_tokens: int
    unbucketed_tokens: int


def plan_groups(lengths: Sequence[int] | np.ndarray, *, max_rows: int, call_cost_tokens: float) -> Plan:
    """Sort rows by length and cut the sorted run where it minimises calls x call cost + padded tokens.

    Sub-batches hold at most `max_rows` rows. A dynamic programme over the sorted lengths (each sub-batch is a
    contiguous run of them, padded to its last): O(n x max_rows), vectorised per cut.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    count = len(lengths)
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    best = np.zeros(count + 1)  # best[j]: cheapest cost of the first j sorted rows
    cut = np.zeros(count + 1, dtype=np.int64)  # where the last sub-batch of those j rows starts
    for end in range(1, count + 1):
        starts = np.arange(max(0, end - max_rows), end)
        costs = best[starts] + call_cost_tokens + (end - starts) * ordered[end - 1]
        pick = int(np.argmin(costs))
        best[end], cut[end] = costs[pick], starts[pick]
    groups: list[np.ndarray] = []
    end = count
    while end > 0:
        groups.append(order[cut[end] : end])
        end = int(cut[end])
    groups.reverse()
    padded = sum(len(group) * int(lengths[group].max()) for group in groups)
    return Plan(groups=groups, padded_tokens=padded, unbucketed_tokens=count * int(lengths.max(initial=0)))


def sub_feeds(feeds: Feeds, rows: np.ndarray, width: int | None) -> dict[str, np.ndarray]:
    """The rows of every feed, token inputs cut to `width` (right padding only, so nothing real is cut)."""
    return {name: array[rows, :width] if width is not None else array[rows] for name, array in feeds.items()}


def chunk_rows(count: int, max_rows: int) -> list[np.ndarray]:
    """Rows in caller order, in runs of at most `max_rows` (inputs of one shape: nothing to sort)."""
    return [np.arange(start, min(start + max_rows, count)) for start in range(0, count, max_rows)]


def run_in_groups(
    feeds: Feeds,
    run_many: Callable[[list[dict[str, np.ndarray]]], list[Outputs]],
    *,
    max_rows: int | None,
    call_cost_tokens: float,
    bucketing: bool = True,
) -> Outputs:
    """Run a batch as sub-batches (`run_many` gets them all at once: a remote backend sends them concurrently) and
    return the outputs row-aligned with the caller's batch. Every output's first axis is the batch."""
    count = len(next(iter(feeds.values())))
    mask = feeds.get(MASK) if bucketing else None
    if mask is not None and count > 1:
        lengths = mask.sum(axis=1)
        plan = plan_groups(lengths, max_rows=max_rows or MAX_ROWS, call_cost_tokens=call_cost_tokens)
        groups = plan.groups
        widths: list[int | None] = [int(lengths[group].max()) for group in groups]
    elif max_rows is not None and count > max_rows:
        groups = chunk_rows(count, max_rows)
        widths = [None] * len(groups)
    else:
        return run_many([dict(feeds)])[0]
    parts = run_many([sub_feeds(feeds, rows, width) for rows, width in zip(groups, widths, strict=True)])
    order = np.concatenate(groups)
    outputs: Outputs = {}
    for name in parts[0]:
        joined = np.concatenate([part[name] for part in parts])
        restored = np.empty_like(joined)
        restored[order] = joined
        outputs[name] = restored
    return outputs
