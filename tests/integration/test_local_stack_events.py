"""The events the local stack hands the handlers have the shape of the recorded real ones in tests/events/."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from local.http_front import build_event, http_response
from local.queue_poller import failed_ids, lambda_record


def shape(document: Any) -> Any:
    """Keys all the way down (values dropped), so two events compare by structure."""
    if isinstance(document, dict):
        return {key: shape(value) for key, value in document.items()}
    return type(document).__name__


def test_http_event_has_the_shape_of_a_recorded_api_gateway_event(load_event: Callable[[str], dict]) -> None:
    # given: the request behind the recorded payload 2.0 event
    real = load_event("apigw_v1_predict_sentiment")
    headers = [(name.title(), value) for name, value in real["headers"].items() if not name.startswith("x-")]
    # when
    event = build_event(
        method="POST", target=real["rawPath"], headers=headers, body=real["body"].encode(), source_ip="127.0.0.1"
    )
    # then
    assert shape(event) == shape(real) | {"headers": shape(event["headers"])}
    assert set(event["headers"]) == set(real["headers"])
    assert event["headers"]["content-type"] == "application/json"
    assert (event["rawPath"], event["body"], event["isBase64Encoded"]) == (real["rawPath"], real["body"], False)
    assert event["requestContext"]["http"]["method"] == "POST"
    assert len(base64.b64decode(event["requestContext"]["requestId"])) == 10


def test_query_cookies_and_binary_bodies_follow_payload_format_2() -> None:
    body = bytes(range(256))
    event = build_event(
        method="PUT",
        target="/v2/models/x?b=2&a=1&a=3&empty=",
        headers=[("Cookie", "s=1; t=2"), ("Content-Type", "application/octet-stream"), ("X-Two", "a"), ("x-two", "b")],
        body=body,
        source_ip="127.0.0.1",
    )
    assert event["rawQueryString"] == "b=2&a=1&a=3&empty="
    assert event["queryStringParameters"] == {"a": "1,3", "b": "2", "empty": ""}
    assert event["cookies"] == ["s=1", "t=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-two"] == "a,b"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_responses_are_read_like_http_api_reads_them() -> None:
    status, headers, body = http_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "image/png"},
            "body": "AAEC",
            "isBase64Encoded": True,
            "cookies": ["a=1"],
        }
    )
    assert (status, body) == (201, b"\x00\x01\x02")
    assert ("Content-Type", "image/png") in headers
    assert ("set-cookie", "a=1") in headers
    assert http_response({"plain": "dict"}) == (200, [("content-type", "application/json")], b'{"plain": "dict"}')


def test_sqs_record_has_the_shape_of_a_recorded_lambda_sqs_record(load_event: Callable[[str], dict]) -> None:
    real = load_event("sqs_s3_put")["Records"][0]
    body = real["body"]
    message = {
        "MessageId": real["messageId"],
        "ReceiptHandle": real["receiptHandle"],
        "Body": body,
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1",
            "SenderId": "AIDA",
            "ApproximateFirstReceiveTimestamp": "2",
        },
        "MessageAttributes": {"trace": {"StringValue": "abc", "DataType": "String"}},
    }
    record = lambda_record(message, real["eventSourceARN"], real["awsRegion"])
    assert set(record) == set(real)
    assert set(record["attributes"]) <= set(real["attributes"]) | {"ApproximateFirstReceiveTimestamp"}
    assert record["messageAttributes"]["trace"]["stringValue"] == "abc"
    assert (record["eventSource"], record["body"]) == ("aws:sqs", body)


@pytest.mark.parametrize(
    ("result", "failed"),
    [
        ({"batchItemFailures": []}, set()),
        (None, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b"}),  # unknown id: the whole batch is retried
        ({"batchItemFailures": [{"wrong": "b"}]}, {"a", "b"}),
    ],
)
def test_partial_batch_responses_are_read_like_the_event_source_mapping(result: Any, failed: set[str]) -> None:
    assert failed_ids(result, ["a", "b"]) == failed
