"""Batch file reading: formats, row numbering, bounded lines, output keys (pure functions, no AWS)."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator

import pytest

from functions.batch.layout import BatchInputError, BatchTarget, input_format
from functions.batch.rows import MAX_ROW_BYTES, Row, read_csv, read_jsonl, split_lines


def lines(*texts: str) -> list[bytes]:
    """A body of these lines, as one chunk."""
    return ["\n".join(texts).encode()]


def test_output_keys_mirror_the_input_key_outside_the_input_prefix() -> None:
    target = BatchTarget.for_key("batch/input/sentiment/2026/11/a.jsonl", "batch/input/", "batch/output/")
    assert target.model == "sentiment"
    assert target.summary_key == "batch/output/sentiment/2026/11/a.jsonl.summary.json"
    assert target.results_key("r1") == "batch/output/sentiment/2026/11/a.jsonl.runs/r1.out.jsonl"
    assert target.errors_key("r1") == "batch/output/sentiment/2026/11/a.jsonl.runs/r1.errors.jsonl"


@pytest.mark.parametrize(
    "key", ["elsewhere/sentiment/a.jsonl", "batch/input/sentiment", "batch/input//a.jsonl", "batch/input/m/dir/"]
)
def test_keys_that_cannot_be_batch_input(key: str) -> None:
    with pytest.raises(BatchInputError):
        BatchTarget.for_key(key, "batch/input/", "batch/output/")


@pytest.mark.parametrize(
    ("key", "content_type", "expected"),
    [
        ("a.jsonl", None, "jsonl"),
        ("a.NDJSON", None, "jsonl"),
        ("a.csv", "application/json", "csv"),
        ("a", "text/csv; charset=utf-8", "csv"),
        ("a.txt", "application/x-ndjson", "jsonl"),
    ],
)
def test_format_by_extension_then_content_type(key: str, content_type: str | None, expected: str) -> None:
    assert input_format(key, content_type) == expected


def test_unknown_format_is_refused() -> None:
    with pytest.raises(BatchInputError, match="cannot tell the format"):
        input_format("a.parquet", "application/octet-stream")


def test_jsonl_rows_keep_their_line_numbers() -> None:
    rows = list(read_jsonl(lines('{"text": "a"}', "", "[1]", "{bad", '{"text": "b"}')))
    assert [row.line for row in rows] == [1, 3, 4, 5]
    assert rows[0].fields == {"text": "a"}
    assert "JSON object" in (rows[1].error or "")
    assert "invalid JSON" in (rows[2].error or "")
    assert rows[3].fields == {"text": "b"}


def test_jsonl_invalid_utf8_is_a_row_error() -> None:
    (row,) = read_jsonl([b'{"text": "\xff"}'])
    assert row.error == "line is not valid UTF-8"


def test_csv_header_quotes_and_column_counts() -> None:
    rows = list(read_csv(lines("\ufeffid,text", '1,"hello, world"', "2", "", "3,plain")))
    assert [row.line for row in rows] == [2, 3, 5]
    assert rows[0].fields == {"id": "1", "text": "hello, world"}
    assert "expected 2 columns" in (rows[1].error or "")
    assert rows[2].fields == {"id": "3", "text": "plain"}


def test_lines_split_across_chunk_boundaries() -> None:
    body = [b'{"a"', b": 1}\r\n\n", b"x", b"", b"y\nlast"]
    assert [(line.number, line.data) for line in split_lines(iter(body))] == [
        (1, b'{"a": 1}\r'),
        (2, b""),
        (3, b"xy"),
        (4, b"last"),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid JSON: nested too deeply"),
        ('{"id": ' + "7" * 5_000 + ', "text": "x"}', "invalid JSON: Exceeds the limit (4300 digits)"),
        ('{"text": "a \\ud800 b"}', "lone surrogate"),
        ('{"id": "\\udfff", "text": "b"}', "lone surrogate"),
    ],
    ids=["deep-nesting", "5000-digit-int", "lone-surrogate-text", "lone-surrogate-id"],
)
def test_every_way_json_refuses_a_line_is_an_error_row(line: str, reason: str) -> None:
    rows = list(read_jsonl(lines('{"text": "before"}', line, '{"text": "after \\ud83d\\ude00"}')))
    assert [row.line for row in rows] == [1, 2, 3]
    assert reason in (rows[1].error or "")
    assert rows[0].fields == {"text": "before"}
    assert rows[2].fields == {"text": "after \U0001f600"}  # a surrogate pair is one character, and fine


def test_csv_quoted_newlines_stay_in_their_field_and_rows_are_numbered_by_their_first_line() -> None:
    body = 'id,text\r\n1,"first line\r\nsecond line"\r\n2,plain\r\n3,"a\n\nb, with ""quotes"""\n4,end'
    rows = list(read_csv([body.encode()]))
    assert [(row.line, row.fields) for row in rows] == [
        (2, {"id": "1", "text": "first line\r\nsecond line"}),
        (4, {"id": "2", "text": "plain"}),
        (5, {"id": "3", "text": 'a\n\nb, with "quotes"'}),
        (8, {"id": "4", "text": "end"}),
    ]


def test_a_row_over_the_limit_is_an_error_row_and_reading_resumes_after_it() -> None:
    body = lines('{"text": "ok"}', '{"text": "' + "x" * 100 + '"}', '{"text": "next"}')
    rows = list(read_jsonl(body, limit=64))
    assert [row.line for row in rows] == [1, 2, 3]
    assert rows[1].error == "row is 112 bytes; the limit is 64 bytes"
    assert rows[2].fields == {"text": "next"}


def test_a_csv_record_over_the_limit_is_an_error_row_and_reading_resumes_at_the_next_line() -> None:
    # given a line over the limit, then a record whose quoted field runs over it across many lines
    body = lines("id,text", "1," + "y" * 100, '2,"' + "z\n" * 40 + '"', "3,fine")
    # then each is one error row, and the record after them is read whole
    assert list(read_csv(body, limit=64)) == [
        Row(2, error="row is 102 bytes; the limit is 64 bytes"),
        Row(3, error="row runs past the limit of 64 bytes at line 33"),
        Row(44, fields={"id": "3", "text": "fine"}),
    ]


def test_a_huge_single_line_is_never_held_whole() -> None:
    # given one 24 MiB line (a JSON array on one line), streamed as 64 KiB chunks, then a good row
    def body() -> Iterator[bytes]:
        yield b"["
        for _ in range(24 * 16):
            yield b"1," * 32 * 1024
        yield b'1]\n{"text": "after"}\n'

    tracemalloc.start()
    try:
        rows = list(read_jsonl(body()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # then it is one error row, the next row is read, and memory stayed near the limit, not the line's size
    assert rows[0].line == 1
    assert rows[0].error == f"row is {24 * 1024 * 1024 + 3} bytes; the limit is {MAX_ROW_BYTES} bytes"
    assert rows[1].fields == {"text": "after"}
    assert peak < 4 * MAX_ROW_BYTES


def test_csv_without_a_usable_header_fails_every_record() -> None:
    rows = list(read_csv([b"id,\xfftext\n1,a\n\n2,b\n"]))
    assert [row.line for row in rows] == [2, 4]
    assert all(row.error == "no usable CSV header (line 1: line is not valid UTF-8)" for row in rows)


def test_csv_invalid_utf8_inside_a_quoted_record_fails_that_record_only() -> None:
    rows = list(read_csv([b'id,text\n1,"a\n\xff"\n2,b\n']))
    assert rows[0].line == 2
    assert rows[0].error == "line 3 is not valid UTF-8"
    assert rows[-1].fields == {"id": "2", "text": "b"}


def test_unicode_line_separators_are_not_newlines() -> None:
    (row,) = read_jsonl([json.dumps({"text": "\u2028 and \x85 are not newlines"}).encode()])
    assert row.fields == {"text": "\u2028 and \x85 are not newlines"}
