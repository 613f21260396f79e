"""Batch input rows read from the object body's chunks: each row numbered, and either parsed or refused with a reason.

Lines are split here, not by botocore's `iter_lines` (quadratic on one huge line, and it holds the whole line): a row
over MAX_ROW_BYTES becomes an error row without ever being held whole, and reading resumes after its newline. CSV goes
through `csv.reader`, so quoted fields may hold newlines; a record is numbered by the line it starts on. The readers
never raise on content: whatever a line holds, it ends as a Row (or as a blank line, which is not a row).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# 1 MiB: far above any row a served model accepts (texts are cut at the tokenizer's length, images are 64 numbers),
# and small against the function's memory, so one bad line cannot exhaust it.
MAX_ROW_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based line number, and either its fields or why it could not be read.

    `offset` is the byte where the row starts in the object: a place a shard or a continuation can start reading.
    """

    line: int
    fields: dict[str, Any] | None = None
    error: str | None = None
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Line:
    """One physical line without its newline; `data` is None when it is longer than the limit (then only `size`).

    `quotes` counts its double quotes, which tells CSV where a record abandoned midway ends, without its text.
    """

    number: int
    data: bytes | None
    size: int
    quotes: int
    offset: int = 0


def split_lines(
    chunks: Iterable[bytes], limit: int = MAX_ROW_BYTES, *, first_line: int = 1, offset: int = 0
) -> Iterator[Line]:
    """Lines split on b"\\n" across arbitrary chunk boundaries; memory stays under limit + one chunk.

    `first_line` and `offset` say where in the object the chunks start (a shard's range), so numbers and offsets are
    the object's own.
    """
    number, pending, overflow, quotes = first_line - 1, bytearray(), 0, 0
    line_start = position = offset
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            quotes += chunk.count(b'"', start, stop)
            if overflow:
                overflow += stop - start
            else:
                pending += memoryview(chunk)[start:stop]
                if len(pending) > limit:
                    overflow, pending = len(pending), bytearray()
            if end < 0:
                break
            number += 1
            yield _finished(number, pending, overflow, quotes, line_start)
            pending, overflow, quotes, start = bytearray(), 0, 0, end + 1
            line_start = position + start
        position += len(chunk)
    if pending or overflow:
        yield _finished(number + 1, pending, overflow, quotes, line_start)


def _finished(number: int, pending: bytearray, overflow: int, quotes: int, offset: int) -> Line:
    if overflow:
        return Line(number, None, overflow, quotes, offset)
    return Line(number, bytes(pending), len(pending), quotes, offset)


def too_long(size: int, limit: int) -> str:
    return f"row is {size} bytes; the limit is {limit} bytes"


def _text(line: Line) -> str:
    """The line as text (a UTF-8 byte order mark is allowed on line 1); UnicodeDecodeError when it is not UTF-8."""
    assert line.data is not None
    return line.data.decode("utf-8-sig" if line.number == 1 else "utf-8")


def read_jsonl(
    chunks: Iterable[bytes], limit: int = MAX_ROW_BYTES, *, first_line: int = 1, offset: int = 0
) -> Iterator[Row]:
    """One JSON object per line; blank lines are not rows."""
    for line in split_lines(chunks, limit, first_line=first_line, offset=offset):
        if line.data is None:
            yield Row(line.number, error=too_long(line.size, limit), offset=line.offset)
            continue
        try:
            text = _text(line)
        except UnicodeDecodeError:
            yield Row(line.number, error="line is not valid UTF-8", offset=line.offset)
            continue
        if text.strip():
            row = json_row(line.number, text)
            yield Row(row.line, row.fields, row.error, line.offset)


def json_row(number: int, text: str) -> Row:
    """One JSON Lines row; every way json can refuse a line (not only JSONDecodeError) is an error row."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return Row(number, error=f"invalid JSON: {error.msg} at column {error.colno}")
    except RecursionError:
        return Row(number, error="invalid JSON: nested too deeply")
    except ValueError as error:  # e.g. an integer longer than Python's int/str conversion limit
        return Row(number, error=f"invalid JSON: {error}")
    if not isinstance(document, dict):
        return Row(number, error=f"expected a JSON object, got {type(document).__name__}")
    if _has_lone_surrogate(text, document):
        return Row(number, error="invalid JSON: a \\u escape is a lone surrogate, not a Unicode character")
    return Row(number, fields=document)


def _has_lone_surrogate(text: str, document: dict[str, Any]) -> bool:
    """A "\\ud800" escape parses, but no UTF-8 writer or tokenizer accepts it; only lines with such escapes pay."""
    if "\\ud" not in text and "\\uD" not in text:
        return False
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


class RecordError(Exception):
    """A CSV record that cannot be read whole (too long, not UTF-8); raised through csv.reader to abandon it."""


class _RecordLines:
    """The decoded lines csv.reader pulls, one record at a time: notes where a record starts, stops it when bad, and
    skips the rest of a record it stopped (while its double quotes are unbalanced, a newline is inside a field)."""

    def __init__(self, lines: Iterator[Line], limit: int) -> None:
        self.lines, self.limit = lines, limit
        self.start, self.size, self.quotes, self.blank, self.fresh, self.skipping = 0, 0, 0, True, True, False
        self.offset = 0

    def begin(self) -> None:
        self.size, self.blank, self.fresh = 0, True, True

    def abandon(self) -> None:
        self.skipping = self.quotes % 2 == 1

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        while self.skipping:
            self.quotes += line.quotes
            self.skipping = self.quotes % 2 == 1
            line = next(self.lines)
        if self.fresh:
            self.start, self.offset, self.quotes, self.fresh = line.number, line.offset, 0, False
        self.size += line.size + 1
        self.quotes += line.quotes
        if line.data is None and line.number == self.start:
            raise RecordError(too_long(line.size, self.limit))
        if line.data is None or self.size > self.limit:
            raise RecordError(f"row runs past the limit of {self.limit} bytes at line {line.number}")
        try:
            text = _text(line)
        except UnicodeDecodeError:
            where = "" if line.number == self.start else f" {line.number}"
            raise RecordError(f"line{where} is not valid UTF-8") from None
        self.blank = self.blank and not text.strip()
        return text + "\n"


@dataclass(frozen=True)
class CsvHeader:
    """A CSV file's header as its first record gave it: the column names, or why there are none."""

    names: tuple[str, ...] | None
    problem: str = ""


class CsvRows:
    """CSV with a header row; line numbers count the header as line 1, blank lines are not rows.

    A record the reader cannot use (too long, not UTF-8, malformed) is an error row, and reading goes on at the next
    line. When the header itself is unusable, every record after it is an error row that says why. A shard of the
    file is read with the `header` its planner read, from the line and offset where its range starts.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        limit: int = MAX_ROW_BYTES,
        *,
        first_line: int = 1,
        offset: int = 0,
        header: CsvHeader | None = None,
    ) -> None:
        self.source = _RecordLines(split_lines(chunks, limit, first_line=first_line, offset=offset), limit)
        self.header = header

    def __iter__(self) -> Iterator[Row]:
        source = self.source
        reader = csv.reader(source)
        while True:
            source.begin()
            problem = ""
            cells: list[str] = []
            try:
                cells = next(reader)
            except StopIteration:
                return
            except RecordError as error:
                problem = str(error)
                source.abandon()
            except csv.Error as error:
                problem = f"invalid CSV: {error}"
                source.abandon()
            if not problem and source.blank:
                continue
            if self.header is None:
                if problem:
                    self.header = CsvHeader(None, f"line {source.start}: {problem}")
                else:
                    self.header = CsvHeader(tuple(cell.strip() for cell in cells))
                continue
            row = _csv_row(source.start, self.header, problem, cells)
            yield Row(row.line, row.fields, row.error, source.offset)


def read_csv(chunks: Iterable[bytes], limit: int = MAX_ROW_BYTES) -> Iterator[Row]:
    """A whole CSV file's rows (see CsvRows)."""
    return iter(CsvRows(chunks, limit))


def _csv_row(number: int, header: CsvHeader, problem: str, cells: list[str]) -> Row:
    names = header.names
    if names is None:
        return Row(number, error=f"no usable CSV header ({header.problem})")
    if problem:
        return Row(number, error=problem)
    if len(cells) != len(names):
        return Row(number, error=f"expected {len(names)} columns ({', '.join(names)}), got {len(cells)}")
    return Row(number, fields=dict(zip(names, cells, strict=True)))
