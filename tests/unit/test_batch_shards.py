"""The shard planner, for any bytes and any shard size (Hypothesis): read range by range from its boundaries, and from
any row a continuation resumes at, a file yields exactly the rows of its unsplit read, numbers and offsets included.
"""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.batch.rows import CsvRows, Row, read_csv, read_jsonl
from functions.batch.shards import Boundary, csv_starts, jsonl_starts, read_range
from tests.unit.test_batch_rows_properties import CELLS, INTERESTING, cut

SHARD_BYTES = st.integers(min_value=1, max_value=64)
POINTS = st.lists(st.integers(min_value=0), max_size=6)


def plan(data: bytes, file_format: str, shard_bytes: int, points: list[int]) -> tuple[list[Boundary], CsvRows | None]:
    """The planner's boundaries over the whole file read in arbitrary chunks, and (CSV) the reader with its header."""
    if file_format == "csv":
        rows = CsvRows(cut(data, points))
        return list(csv_starts(rows, shard_bytes)), rows
    return list(jsonl_starts(cut(data, points), shard_bytes, len(data), Boundary(0, 1))), None


def sharded_read(data: bytes, file_format: str, shard_bytes: int, points: list[int], stops: list[int]) -> list[Row]:
    """Every shard read from its own bytes only; each `stops` entry makes a shard stop before that many rows and
    continue from the row it left, as an invocation near its timeout does."""
    boundaries, csv_rows = plan(data, file_format, shard_bytes, points)
    header = csv_rows.header if csv_rows is not None else None
    ends = [boundary.offset for boundary in boundaries[1:]] + [len(data)] * bool(boundaries)
    rows: list[Row] = []
    stops = list(stops)
    for start, end in zip(boundaries, ends, strict=True):
        assert start.offset < end or (start.offset == end == len(data))
        while True:
            taken = list(read_range(cut(data[start.offset : end], points), file_format, start, header))
            stop = stops.pop() if stops else len(taken)
            if 0 < stop < len(taken):  # hand the rest on, from the first row not taken
                rows.extend(taken[:stop])
                start = Boundary(taken[stop].offset, taken[stop].line)
                continue
            rows.extend(taken)
            break
    return rows


def unsplit(data: bytes, file_format: str) -> list[Row]:
    return list(read_csv([data]) if file_format == "csv" else read_jsonl([data]))


def offsets(rows: list[Row]) -> list[int]:
    return [row.offset for row in rows]


@settings(max_examples=400, deadline=None)
@given(
    data=INTERESTING,
    file_format=st.sampled_from(["csv", "jsonl"]),
    shard_bytes=SHARD_BYTES,
    points=POINTS,
    stops=st.lists(st.integers(min_value=0, max_value=5), max_size=4),
)
def test_any_split_of_any_bytes_reads_the_rows_of_the_unsplit_read(
    data: bytes, file_format: str, shard_bytes: int, points: list[int], stops: list[int]
) -> None:
    rows = sharded_read(data, file_format, shard_bytes, points, stops)
    expected = unsplit(data, file_format)
    assert rows == expected
    assert offsets(rows) == offsets(expected)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.tuples(CELLS, CELLS), min_size=1, max_size=12),
    shard_bytes=SHARD_BYTES,
    points=POINTS,
    stops=st.lists(st.integers(min_value=0, max_value=3), max_size=3),
)
def test_csv_with_quoted_newlines_is_never_cut_inside_a_field(
    records: list[tuple[str, str]], shard_bytes: int, points: list[int], stops: list[int]
) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerows([("id", "text"), *records])
    data = buffer.getvalue().encode()
    rows = sharded_read(data, "csv", shard_bytes, points, stops)
    assert [(row.line, row.fields) for row in rows] == [(row.line, row.fields) for row in unsplit(data, "csv")]
    assert [row.fields for row in rows] == [{"id": a, "text": b} for a, b in records]


LETTERS = b'id,text\na,"Dear team,\n\nthe update is great.\n""Thanks"""\nb,short\nc,"two\nlines"\n'


def test_boundaries_are_record_starts_not_the_newlines_inside_quotes() -> None:
    # given a CSV whose quoted fields hold newlines, and a shard size that falls inside the first quoted field
    boundaries, _ = plan(LETTERS, "csv", 8, [])
    # then every boundary is where a record starts, and the shards read back the three records
    assert [(b.line, LETTERS[b.offset : b.offset + 2]) for b in boundaries] == [(2, b"a,"), (6, b"b,"), (7, b"c,")]
    rows = sharded_read(LETTERS, "csv", 8, [], [])
    assert [(row.line, (row.fields or {}).get("id")) for row in rows] == [(2, "a"), (6, "b"), (7, "c")]


def test_a_cut_at_a_newline_inside_quotes_would_change_the_rows() -> None:
    # the guard the other way: a cut at the newline after "Dear team," (where a newline count would cut) splits
    # record a in two, and the second half reads as rows of its own
    cut_at = LETTERS.index(b"\n\nthe") + 1
    header = CsvRows([LETTERS])
    list(header)
    first = list(read_range([LETTERS[:cut_at]], "csv", Boundary(0, 1), header.header))
    rest = list(read_range([LETTERS[cut_at:]], "csv", Boundary(cut_at, 3), header.header))
    assert [(row.line, row.fields) for row in first + rest] != [
        (row.line, row.fields) for row in unsplit(LETTERS, "csv")
    ]


def test_jsonl_boundaries_are_line_starts_with_their_line_numbers() -> None:
    data = b'{"a": 1}\n\n{"a": 22}\n{"a": 333}\n'
    boundaries = list(jsonl_starts([data], 5, len(data), Boundary(0, 1)))
    assert boundaries == [Boundary(0, 1), Boundary(9, 2), Boundary(20, 4)]
    assert [data[b.offset : b.offset + 1] for b in boundaries[1:]] == [b"\n", b"{"]
