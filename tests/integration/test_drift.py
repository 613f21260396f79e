"""Drift end to end in the local stack: requests -> data capture -> the local Firehose -> the bucket -> PSI against
the reference the training pipeline put in the manifest. Shifted streams are flagged, test-split streams are not."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from sklearn.datasets import load_digits

from catalog import load_catalog
from functions.monitoring.app import create_monitoring_handler
from functions.monitoring.drift import DriftResult, check_drift
from functions.monitoring.records import read_capture
from functions.runtime.package import read_manifest
from functions.runtime.settings import Settings
from local.clients import client
from local.config import LocalConfig
from local.stack import LocalStack
from monitoring.__main__ import run_drift
from tests.integration.stack_client import WAIT_S, http
from training.datasets import split_tweets, stratified_split

CATALOG = load_catalog()
PREFIX = CATALOG.platform.capture_prefix
BATCH = 20
TWEETS = 400
LONG_TEXTS = 100


@pytest.fixture(scope="module")
def stack(packages: dict[str, Path]) -> Iterator[LocalStack]:
    """Every request captured (rate 1.0), so each stream's records are known exactly."""
    models = {
        name: entry.model_copy(update={"monitoring": entry.monitoring.model_copy(update={"capture_rate": 1.0})})
        for name, entry in CATALOG.models.items()
    }
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, bucket="model-serving-drift")
    with LocalStack(config, packages, catalog=CATALOG.model_copy(update={"models": models})) as running:
        yield running


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Any:
    assert stack.info is not None
    return client("s3", stack.info.aws_url, stack.info.admin)


def digits_test_split() -> np.ndarray:
    digits = load_digits()
    return digits.images[stratified_split(digits.target)["test"]].astype(np.float32)


def long_texts(words: Sequence[str], count: int) -> list[str]:
    """Texts of 200 words drawn from real tweets: each well past the model's 128-token max_length."""
    rng = random.Random(5)
    return [" ".join(rng.choice(words) for _ in range(200)) for _ in range(count)]


def send(stack: LocalStack, model: str, name: str, datatype: str, instances: Sequence[Any]) -> None:
    for start in range(0, len(instances), BATCH):
        chunk = list(instances[start : start + BATCH])
        shape = [len(chunk), *np.shape(chunk[0])]
        data = np.asarray(chunk).ravel().tolist()
        body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
        status, _, answer = http(stack, "POST", f"/v2/models/{model}/infer", body)
        assert status == 200, answer


def wait_for_records(s3: Any, bucket: str, model: str, since: datetime, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if len(read_capture(s3, bucket, PREFIX, model, since, datetime.now(UTC))) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} capture records of {model} did not reach the bucket within {WAIT_S:.0f} s")


def check(stack: LocalStack, s3: Any, packages: dict[str, Path], model: str, since: datetime, out: Path) -> DriftResult:
    assert stack.info is not None
    window = datetime.now(UTC) - since
    result = run_drift(model, s3, stack.info.resources.bucket, packages[model], window, out)
    print(json.dumps(result.to_document()))  # the figures the closing note reports (pytest -s)
    return result


@pytest.fixture(scope="module")
def streams(stack: LocalStack, s3: Any) -> dict[str, datetime]:
    """The unshifted streams, then (from `shifted` on) the shifted ones: the start of each window."""
    assert stack.info is not None
    bucket = stack.info.resources.bucket
    tweets = split_tweets()["test"].texts[:TWEETS]
    images = digits_test_split()
    unshifted = datetime.now(UTC)
    send(stack, "digits", "pixels", "FP32", list(images))
    send(stack, "sentiment", "text", "BYTES", tweets)
    wait_for_records(s3, bucket, "digits", unshifted, len(images))
    wait_for_records(s3, bucket, "sentiment", unshifted, len(tweets))
    shifted = datetime.now(UTC)
    time.sleep(0.01)
    send(stack, "digits", "pixels", "FP32", list(16.0 - images))
    send(stack, "sentiment", "text", "BYTES", long_texts(" ".join(tweets).split(), LONG_TEXTS))
    wait_for_records(s3, bucket, "digits", shifted, len(images))
    wait_for_records(s3, bucket, "sentiment", shifted, LONG_TEXTS)
    return {"unshifted": unshifted, "shifted": shifted}


def test_the_manifest_holds_the_training_reference(packages: dict[str, Path]) -> None:
    features = {name: read_manifest(path).monitoring_reference for name, path in packages.items()}
    assert set(features["digits"].features) == {"pixel_mean", "pixel_std", "prediction.label", "prediction.score"}
    assert set(features["sentiment"].features) == {"tokens", "truncated", "prediction.label", "prediction.score"}
    assert set(features["embeddings"].features) == {"tokens", "truncated"}
    label = features["digits"].features["prediction.label"]
    assert label.categories == list(CATALOG.model("digits").labels)
    assert sum(label.proportions) == pytest.approx(1.0)
    assert features["digits"].features["pixel_mean"].count == 1000  # 1,617 train + validation images, thinned


def test_records_land_in_the_bucket_by_model_and_day(stack: LocalStack, s3: Any, streams: dict[str, datetime]) -> None:
    assert stack.info is not None
    listing = s3.list_objects_v2(Bucket=stack.info.resources.bucket, Prefix=f"{PREFIX}digits/")
    keys = [item["Key"] for item in listing["Contents"]]
    assert keys
    assert all(key.startswith(f"{PREFIX}digits/{datetime.now(UTC):%Y-%m-%d}/") for key in keys)


def test_the_delivery_role_writes_only_under_the_capture_prefix(stack: LocalStack) -> None:
    assert stack.info is not None
    assert stack.firehose is not None
    with pytest.raises(ClientError, match="AccessDenied"):
        stack.firehose.s3.put_object(Bucket=stack.info.resources.bucket, Key="batch/input/digits/x.jsonl", Body=b"{}")


def test_test_split_digits_do_not_drift_and_inverted_digits_do(
    stack: LocalStack, s3: Any, packages: dict[str, Path], streams: dict[str, datetime], tmp_path: Path
) -> None:
    calm = check(stack, s3, packages, "digits", streams["unshifted"], tmp_path)
    assert calm.records == 2 * len(digits_test_split())  # the window reaches the shifted stream too
    shifted = check(stack, s3, packages, "digits", streams["shifted"], tmp_path)
    assert shifted.records == len(digits_test_split())
    assert shifted.drift
    assert shifted.features["pixel_mean"].drift
    # the unshifted stream alone: the records sent before `shifted`
    alone = run_window(stack, s3, packages, "digits", streams["unshifted"], streams["shifted"], tmp_path)
    assert not alone.drift, alone.to_document()


def test_test_split_tweets_do_not_drift_and_200_word_texts_do(
    stack: LocalStack, s3: Any, packages: dict[str, Path], streams: dict[str, datetime], tmp_path: Path
) -> None:
    alone = run_window(stack, s3, packages, "sentiment", streams["unshifted"], streams["shifted"], tmp_path)
    assert alone.records == TWEETS
    assert not alone.drift, alone.to_document()
    shifted = check(stack, s3, packages, "sentiment", streams["shifted"], tmp_path)
    assert shifted.records == LONG_TEXTS
    assert shifted.features["tokens"].drift
    assert shifted.features["truncated"].drift
    written = json.loads((tmp_path / "sentiment" / "drift.json").read_text())
    assert written == json.loads(json.dumps(shifted.to_document()))
    assert (tmp_path / "sentiment" / "drift.png").stat().st_size > 10_000


def run_window(
    stack: LocalStack, s3: Any, packages: dict[str, Path], model: str, since: datetime, until: datetime, out: Path
) -> DriftResult:
    """The check over [since, until]: run_drift looks back from now, so the records after `until` are set aside."""
    assert stack.info is not None
    records = read_capture(s3, stack.info.resources.bucket, PREFIX, model, since, until)
    manifest = read_manifest(packages[model])
    result = check_drift(model, manifest.version, manifest.monitoring_reference, records, 0.2, since, until)
    print(json.dumps(result.to_document()))
    return result


def test_the_scheduled_check_publishes_a_drift_metric_per_model(
    stack: LocalStack,
    s3: Any,
    packages: dict[str, Path],
    streams: dict[str, datetime],
    lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert stack.info is not None
    settings = Settings(
        monitoring_bucket=stack.info.resources.bucket, drift_window_hours=1, service_name="drift-check-tests"
    )
    manifests = {name: read_manifest(path) for name, path in packages.items()}
    handler = create_monitoring_handler(settings, manifests, s3).lambda_handler
    capsys.readouterr()
    answer = handler({"models": ["digits", "embeddings"]}, lambda_context)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    metrics = {(doc["model"], name) for doc in documents for name in ("Drift", "DriftPsi") if name in doc}
    assert metrics == {("digits", "Drift"), ("digits", "DriftPsi")}  # embeddings had no traffic: nothing published
    digits = next(doc for doc in documents if doc.get("model") == "digits")
    assert digits["Drift"] == [1.0]  # half the hour's digits were inverted
    assert any("model" in dimensions for dimensions in digits["_aws"]["CloudWatchMetrics"][0]["Dimensions"])
    assert answer["reports"]["digits"]["drift"] is True
    assert "no capture records of embeddings" in answer["reports"]["embeddings"]["error"]
