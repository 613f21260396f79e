"""The local stack end to end: real HTTP into the API handler, real boto3 into moto, the batch poller, the stand-in."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from catalog import Task, load_catalog
from local.clients import client
from local.config import LocalConfig
from local.stack import LocalStack
from tests.integration.stack_client import WAIT_S, assert_every_row_once, http, score_file

CATALOG = load_catalog()
PLATFORM = CATALOG.platform
TWEETS = [
    "I just don't trust my life in google's hands #driverless cars",
    "self-driving cars just seem lazy and a waste of money",
    "Can't wait to ride in my first autonomous car, the future is here!",
    "Google's driverless car drove me to work today. Smooth ride.",
    "Not sure how I feel about robot cars on my street",
]


@pytest.fixture(scope="module")
def stack(packages: dict[str, Path]) -> Iterator[LocalStack]:
    """The whole stack on free ports, with a 1 s visibility timeout so retries and redrive happen within a test."""
    config = LocalConfig(
        api_port=0,
        aws_port=0,
        sagemaker_port=0,
        bucket="model-serving-it",
        visibility_timeout_s=2,
        batch_timeout_s=2,
        poll_wait_s=1,
    )
    with LocalStack(config, packages) as running:
        yield running


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Any:
    assert stack.info is not None
    return client("s3", stack.info.aws_url, stack.info.admin)


@pytest.fixture(scope="module")
def sqs(stack: LocalStack) -> Any:
    assert stack.info is not None
    return client("sqs", stack.info.aws_url, stack.info.admin)


def digit_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Real handwritten digits from sklearn (values 0..16, as the API takes them) and their true classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[-count:].astype(np.float32), digits.target[-count:]


def v2_body(task: Task, count: int) -> dict[str, Any]:
    if task is Task.IMAGE_CLASSIFICATION:
        images, _ = digit_images(count)
        return {
            "id": "it-1",
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [count, 8, 8], "data": images.ravel().tolist()}],
        }
    return {"id": "it-1", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [count], "data": TWEETS[:count]}]}


def output(document: dict[str, Any], name: str) -> np.ndarray:
    tensor = next(item for item in document["outputs"] if item["name"] == name)
    dtype = object if tensor["datatype"] == "BYTES" else np.float32
    return np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])


# --- real-time API ----------------------------------------------------------------------------------------------------


def test_health_and_metadata_match_the_packages(stack: LocalStack, packages: dict[str, Path]) -> None:
    assert http(stack, "GET", "/v2/health/live")[0] == 200
    assert http(stack, "GET", "/v2/health/ready")[0] == 200
    for name, folder in packages.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        status, _, metadata = http(stack, "GET", f"/v2/models/{name}")
        assert status == 200
        assert metadata["name"] == name
        assert metadata["versions"] == [manifest["version"]]
        assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
            (t["name"], t["datatype"]) for t in manifest["inputs"]
        ]
        assert http(stack, "GET", f"/v2/models/{name}/ready")[0] == 200


@pytest.mark.parametrize("name", list(CATALOG.models))
def test_v2_infer_answers_every_model(stack: LocalStack, packages: dict[str, Path], name: str) -> None:
    # given
    entry = CATALOG.model(name)
    manifest = json.loads((packages[name] / "manifest.json").read_text())
    # when
    status, headers, answer = http(stack, "POST", f"/v2/models/{name}/infer", v2_body(entry.task, 3))
    # then
    assert status == 200, answer
    assert headers["content-type"].startswith("application/json")
    assert answer["model_name"] == name
    assert answer["model_version"] == manifest["version"]
    assert answer["id"] == "it-1"
    if entry.task is Task.SENTENCE_EMBEDDING:
        vectors = output(answer, "embedding")
        assert vectors.shape == (3, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    else:
        labels, probabilities = output(answer, "label"), output(answer, "probabilities")
        assert probabilities.shape == (3, len(entry.labels))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        assert list(labels) == [entry.labels[i] for i in probabilities.argmax(axis=1)]


@pytest.mark.parametrize("name", list(CATALOG.models))
def test_v1_predict_agrees_with_v2(stack: LocalStack, name: str) -> None:
    entry = CATALOG.model(name)
    request = v2_body(entry.task, 2)
    data = request["inputs"][0]["data"]
    instances = np.asarray(data).reshape(2, 8, 8).tolist() if entry.task is Task.IMAGE_CLASSIFICATION else data
    status, _, answer = http(stack, "POST", f"/v1/models/{name}:predict", {"instances": instances})
    assert status == 200, answer
    _, _, v2 = http(stack, "POST", f"/v2/models/{name}/infer", request)
    predictions = answer["predictions"]
    assert len(predictions) == 2
    if entry.task is Task.SENTENCE_EMBEDDING:
        np.testing.assert_allclose(np.asarray(predictions), output(v2, "embedding"), atol=1e-5)
    else:
        assert [p["label"] for p in predictions] == list(output(v2, "label"))
        np.testing.assert_allclose(
            [p["score"] for p in predictions], output(v2, "probabilities").max(axis=1), atol=1e-5
        )


def test_digits_model_reads_real_digits(stack: LocalStack) -> None:
    """Beyond the protocol: the trained classifier is right on most real, held-out handwritten digits."""
    images, truth = digit_images(40)
    status, _, answer = http(stack, "POST", "/v1/models/digits:predict", {"instances": images.tolist()})
    assert status == 200, answer
    predicted = np.asarray([int(p["label"]) for p in answer["predictions"]])
    assert (predicted == truth).mean() >= 0.5


def test_embeddings_run_through_the_sagemaker_stand_in(stack: LocalStack) -> None:
    # given: the catalog places embeddings on SageMaker, so the handler must call InvokeEndpoint
    assert CATALOG.model("embeddings").target.value == "sagemaker"
    assert stack.info is not None
    assert stack.standin is not None
    endpoint = stack.info.sagemaker_endpoints["embeddings"]
    before = stack.standin.invocations[endpoint]
    texts = ["a cat sits on the mat", "a kitten is sitting on a rug", "the quarterly tax filing deadline is near"]
    # when
    status, _, answer = http(stack, "POST", "/v1/models/embeddings:predict", {"instances": texts})
    # then
    assert status == 200, answer
    assert stack.standin.invocations[endpoint] == before + 1
    vectors = np.asarray(answer["predictions"])
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])  # a kitten is nearer a cat than taxes


@pytest.mark.parametrize(
    ("path", "raw", "content_type", "status"),
    [
        ("/v2/models/sentiment/infer", b'{"inputs": [', "application/json", 400),
        (
            "/v2/models/no-such-model/infer",
            b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}',
            "application/json",
            404,
        ),
        (
            "/v2/models/sentiment/infer",
            b'{"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}',
            "application/json",
            400,
        ),
        ("/v1/models/digits:predict", b'{"instances": [[1, 2, 3]]}', "application/json", 400),
        ("/v1/models/sentiment:predict", b'{"instances": []}', "application/json", 400),
        ("/v1/models/sentiment:predict", b"instances=hello", "text/plain", 415),
    ],
    ids=["malformed-json", "unknown-model", "wrong-datatype", "wrong-shape", "no-instances", "wrong-content-type"],
)
def test_bad_requests_get_a_4xx_json_error(
    stack: LocalStack, path: str, raw: bytes, content_type: str, status: int
) -> None:
    got, headers, answer = http(stack, "POST", path, raw=raw, content_type=content_type)
    assert got == status, answer
    assert headers["content-type"].startswith("application/json")
    message = answer.get("error") or answer["message"]  # the function's, or the gateway's own for no route
    assert isinstance(message, str)
    assert message
    assert "Traceback" not in message


def test_a_body_over_the_lambda_limit_is_refused_with_413(stack: LocalStack) -> None:
    raw = b'{"instances": ["' + b"a" * (6 * 1024 * 1024) + b'"]}'
    status, _, answer = http(stack, "POST", "/v1/models/sentiment:predict", raw=raw)
    assert status == 413
    assert "error" in answer


# --- S3 → SQS → batch function ----------------------------------------------------------------------------------------


def test_a_jsonl_file_with_good_and_bad_lines_is_scored_row_by_row(stack: LocalStack, s3: Any) -> None:
    # given: five real tweets and three lines that cannot be scored
    lines = [json.dumps({"id": f"tweet-{n}", "text": text}) for n, text in enumerate(TWEETS)]
    lines.insert(1, '{"id": "broken", "text": ')  # not JSON
    lines.insert(4, json.dumps({"id": "no-text", "body": "wrong field"}))
    lines.append(json.dumps({"id": "empty", "text": "   "}))
    body = ("\n".join(lines) + "\n").encode()
    # when
    summary, turnaround = score_file(stack, s3, "sentiment/it/tweets.jsonl", body)
    # then
    assert summary["status"] == "complete"
    assert summary["model"] == "sentiment"
    assert (summary["rows"], summary["scored"], summary["failed"]) == (8, 5, 3)
    scored, failed = assert_every_row_once(s3, summary, list(range(1, 9)))
    assert {row["id"] for row in scored} == {f"tweet-{n}" for n in range(5)}
    assert {row["prediction"]["label"] for row in scored} <= set(CATALOG.model("sentiment").labels)
    assert sorted(row["line"] for row in failed) == [2, 5, 8]
    assert all(row["reason"] for row in failed)
    assert turnaround < WAIT_S


def test_a_csv_file_is_scored_and_a_short_row_is_an_error(stack: LocalStack, s3: Any) -> None:
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["id", "text"])
    writer.writerows([[f"c{n}", text] for n, text in enumerate(TWEETS[:3])])
    table.write("only-one-column\n")
    summary, _ = score_file(stack, s3, "sentiment/it/tweets.csv", table.getvalue().encode())
    assert summary["input"]["format"] == "csv"
    assert (summary["rows"], summary["scored"], summary["failed"]) == (4, 3, 1)
    _, failed = assert_every_row_once(s3, summary, [2, 3, 4, 5])  # line 1 is the header
    assert failed[0]["line"] == 5


def test_a_message_that_keeps_failing_ends_in_the_dead_letter_queue(stack: LocalStack, sqs: Any) -> None:
    # given: a message the batch function cannot parse as an S3 notification
    assert stack.info is not None
    resources = stack.info.resources
    poison = json.dumps({"Records": [{"eventSource": "aws:s3", "s3": "not a notification"}]})
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody=poison)
    # when: the poller retries it after each (1 s) visibility timeout
    deadline = time.monotonic() + WAIT_S
    dead: list[dict[str, Any]] = []
    while not dead and time.monotonic() < deadline:
        dead = sqs.receive_message(
            QueueUrl=resources.dead_letter_queue_url, WaitTimeSeconds=1, AttributeNames=["All"]
        ).get("Messages", [])
    # then: moto's redrive moved it after max receives; it is the only message there (the s3:TestEvent was consumed)
    assert [message["Body"] for message in dead] == [poison]
    assert int(dead[0]["Attributes"]["ApproximateReceiveCount"]) > PLATFORM.queue_max_receive_count
    assert sum(poller.stats.retried for poller in stack.pollers) >= PLATFORM.queue_max_receive_count
