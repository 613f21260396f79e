"""Batch file reading: formats, row numbering, output keys (pure functions, no AWS)."""

from __future__ import annotations

import pytest

from functions.batch.layout import BatchInputError, BatchTarget, input_format
from functions.batch.rows import read_csv, read_jsonl


def lines(*texts: str) -> list[bytes]:
    return [text.encode() for text in texts]


def test_output_keys_mirror_the_input_key_outside_the_input_prefix() -> None:
    target = BatchTarget.for_key("batch/input/sentiment/2026/11/a.jsonl", "batch/input/", "batch/output/")
    assert target.model == "sentiment"
    assert target.output_key == "batch/output/sentiment/2026/11/a.jsonl.out.jsonl"
    assert target.errors_key == "batch/output/sentiment/2026/11/a.jsonl.errors.jsonl"
    assert target.summary_key == "batch/output/sentiment/2026/11/a.jsonl.summary.json"


@pytest.mark.parametrize("key", ["elsewhere/sentiment/a.jsonl", "batch/input/sentiment", "batch/input//a.jsonl"])
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
