"""Data capture: for a sampled share of requests, one JSON line per scored instance on stdout.

Why stdout: in AWS the line becomes a CloudWatch Logs event, a subscription filter on `kind = data_capture` hands it to
Firehose, and Firehose writes it under monitoring/capture/<model>/<date>/ in S3. The request never waits on S3, and a
request that is not sampled costs one random draw. The local stack reads the function's stdout and plays Firehose.

A record holds the model version, the input statistics of the drift check (never the raw input, unless the catalog
opts the model in) and the prediction:
    {"kind": "data_capture", "model": "digits", "version": "...", "time": "2026-12-01T18:00:00.123Z",
     "features": {"pixel_mean": 4.9, "pixel_std": 6.0}, "prediction": {"label": "3", "score": 0.98}}
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from functions.runtime.tasks import Prepared, TaskProcessor

CAPTURE_KIND = "data_capture"


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as the records and the drift window write it."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def capture_records(
    processor: TaskProcessor, prepared: Prepared, outputs: Mapping[str, np.ndarray]
) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """(features, prediction) per instance: what a capture record holds, and what a reference profile counts."""
    columns = processor.input_features(prepared)
    names, values = list(columns), [column.tolist() for column in columns.values()]
    rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
    return list(zip(rows, processor.prediction_features(outputs, prepared.batch_size), strict=True))


class Capture:
    """One model's sampler: `offer` is on the request path, and returns at once for a request not sampled."""

    def __init__(self, name: str, version: str, processor: TaskProcessor, rate: float, with_inputs: bool) -> None:
        self.head = {"kind": CAPTURE_KIND, "model": name, "version": version}
        self.processor = processor
        self.rate = rate
        self.with_inputs = with_inputs

    def offer(self, batch: Any, prepared: Prepared, outputs: Mapping[str, np.ndarray]) -> None:
        if random.random() >= self.rate:
            return
        time = utc_timestamp()
        lines = []
        for index, (features, prediction) in enumerate(capture_records(self.processor, prepared, outputs)):
            record = {**self.head, "time": time, "features": features, "prediction": prediction}
            if self.with_inputs:
                record["input"] = _jsonable(batch[index])
            lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        print("\n".join(lines), flush=True)  # one write: the lines of a request stay together


def _jsonable(instance: Any) -> Any:
    return instance.tolist() if isinstance(instance, np.ndarray) else instance
