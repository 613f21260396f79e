"""Where a big batch file is cut into shards: byte offsets at which the unsplit read starts a row, with its line number.

A shard read from such an offset, with the file's CSV header, yields exactly the rows the unsplit read yields there:
JSON Lines rows start after any newline; CSV rows start where the CSV reader itself started a record (so a quoted
newline is never a boundary), which is why CSV boundaries come from reading the rows, and JSON Lines boundaries from
counting newlines (C speed, no parsing).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from functions.batch.rows import CsvHeader, CsvRows, Row, read_jsonl


@dataclass(frozen=True)
class Boundary:
    """A place a shard (or a continuation) can start reading: a row's first byte and its line number."""

    offset: int
    line: int


def jsonl_starts(chunks: Iterable[bytes], shard_bytes: int, size: int, start: Boundary) -> Iterator[Boundary]:
    """`start`, then the first line start at least `shard_bytes` after each boundary, up to (not at) `size`.

    `chunks` are the object's bytes from `start.offset` on.
    """
    yield start
    line, position, target = start.line, start.offset, start.offset + shard_bytes
    for chunk in chunks:
        cursor = 0
        while target - 1 < position + len(chunk):
            found = chunk.find(b"\n", max(cursor, target - 1 - position))
            if found < 0:
                break
            line += chunk.count(b"\n", cursor, found + 1)
            cursor = found + 1
            if position + cursor >= size:
                return
            yield Boundary(position + cursor, line)
            target = position + cursor + shard_bytes
        line += chunk.count(b"\n", cursor)
        position += len(chunk)


def csv_starts(rows: Iterable[Row], shard_bytes: int) -> Iterator[Boundary]:
    """The first row's start, then the first row start at least `shard_bytes` after each boundary."""
    target: int | None = None
    for row in rows:
        if target is None or row.offset >= target:
            yield Boundary(row.offset, row.line)
            target = row.offset + shard_bytes


def read_range(
    chunks: Iterable[bytes], file_format: str, start: Boundary, header: CsvHeader | None = None
) -> Iterator[Row]:
    """The rows of a range that starts at `start` (CSV: with the header the whole file's read gave)."""
    if file_format == "csv":
        assert header is not None, "a CSV shard is read with its file's header"
        return iter(CsvRows(chunks, first_line=start.line, offset=start.offset, header=header))
    return read_jsonl(chunks, first_line=start.line, offset=start.offset)
