"""Batch input rows: JSON Lines and CSV read line by line, each row numbered and either parsed or refused."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from functions.batch.layout import BatchInputError


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based line number, and either its fields or why it could not be read."""

    line: int
    fields: dict[str, Any] | None = None
    error: str | None = None


def _decoded(lines: Iterable[bytes]) -> Iterator[tuple[int, str | None]]:
    for number, raw in enumerate(lines, start=1):
        try:
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, None


def read_jsonl(lines: Iterable[bytes]) -> Iterator[Row]:
    """One JSON object per line; blank lines are not rows."""
    for number, text in _decoded(lines):
        if text is None:
            yield Row(number, error="line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            yield Row(number, error=f"invalid JSON: {error.msg} at column {error.colno}")
            continue
        if not isinstance(document, dict):
            yield Row(number, error=f"expected a JSON object, got {type(document).__name__}")
            continue
        yield Row(number, fields=document)


def read_csv(lines: Iterable[bytes]) -> Iterator[Row]:
    """CSV with a header row; line numbers count the header as line 1, blank lines are not rows."""
    numbered = _decoded(lines)
    header: list[str] | None = None
    for number, text in numbered:
        if text is None:
            if header is None:
                raise BatchInputError("the CSV header is not valid UTF-8")
            yield Row(number, error="line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            cells = next(csv.reader([text]))
        except csv.Error as error:
            yield Row(number, error=f"invalid CSV: {error}")
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            continue
        if len(cells) != len(header):
            yield Row(number, error=f"expected {len(header)} columns ({', '.join(header)}), got {len(cells)}")
            continue
        yield Row(number, fields=dict(zip(header, cells, strict=True)))
