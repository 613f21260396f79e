"""The batch-path probe: a JSONL file of real tweets through the whole S3 batch path on the local stack, then raw ORT.

upload → S3 notification → SQS → poller → batch handler → results + summary in S3, timed from the upload to the
summary; then the same file through a stack whose functions run unbucketed (LENGTH_BUCKETING=false: the batch path
before length bucketing). Runs as `python -m bench.probes.batch_path <package dir> <rows> <threads> <rows per call>`
in a fresh process, so the local stack's (moto, poller, handlers) peak RSS is its own; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.memory import RssSampler, peak_rss_mb, rss_mb

MODEL = "sentiment"
SUMMARY_TIMEOUT_S = 900.0


def jsonl_body(texts: list[str]) -> bytes:
    return "".join(json.dumps({"id": f"row-{n}", "text": text}) + "\n" for n, text in enumerate(texts)).encode()


def _wait_for_summary(s3: Any, bucket: str, key: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            time.sleep(0.1)
    raise TimeoutError(f"no summary at s3://{bucket}/{key} within {timeout_s:.0f} s")


def through_local_stack(package_dir: Path, texts: list[str], threads: int, *, bucketing: bool) -> dict[str, Any]:
    """The full path on the local stack; rows/s from the upload to the summary's appearance."""
    os.environ["ORT_THREADS"] = str(threads)
    from catalog import load_catalog
    from functions.runtime.settings import Settings
    from local.clients import client
    from local.config import LocalConfig
    from local.stack import LocalStack

    class Stack(LocalStack):
        def function_settings(self, models_dir: str, endpoints: dict[str, str], bucket: str) -> Settings:
            settings = super().function_settings(models_dir, endpoints, bucket)
            return settings.model_copy(update={"length_bucketing": bucketing})

    platform = load_catalog().platform
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, poll_wait_s=1, batch_concurrency=1)
    body = jsonl_body(texts)
    with Stack(config, {MODEL: package_dir}) as stack:
        assert stack.info is not None
        (batch_function,) = stack.batch_functions
        assert batch_function.pid is not None
        function_pid = batch_function.pid  # the batch function runs in its own process, as in Lambda
        s3 = client("s3", stack.info.aws_url, stack.info.admin)
        bucket = stack.info.resources.bucket
        key = f"{platform.batch_input_prefix}{MODEL}/bench-{len(texts)}.jsonl"
        summary_key = f"{platform.batch_output_prefix}{MODEL}/bench-{len(texts)}.jsonl.summary.json"
        rss_before = rss_mb(function_pid)
        with RssSampler(function_pid) as sampler:
            started = time.perf_counter()
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
            summary = _wait_for_summary(s3, bucket, summary_key, SUMMARY_TIMEOUT_S)
            elapsed = time.perf_counter() - started
        results = s3.get_object(Bucket=bucket, Key=summary["outputs"]["results"])["Body"].read().splitlines()
        function_peak_mb = peak_rss_mb(function_pid)
    if summary["scored"] != len(texts) or len(results) != len(texts):
        raise RuntimeError(f"the batch path scored {summary['scored']} of {len(texts)} rows: {summary}")
    return {
        "rows": len(texts),
        "input_bytes": len(body),
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": len(texts) / elapsed,
        "handler_total_s": summary["timings"]["total_s"],
        "handler_inference_s": summary["timings"]["inference_s"],
        "rows_per_inference": summary["timings"]["rows_per_inference"],
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_during_batch_mb": round(sampler.peak_mb, 1),
        "process_peak_rss_mb": round(function_peak_mb, 1),
    }


def raw_onnxruntime(package_dir: Path, texts: list[str], threads: int, batch_size: int) -> dict[str, Any]:
    """What a hand-written loop does with the same rows: tokenise a chunk, session.run, next chunk."""
    from bench.graphs import token_feeds
    from functions.runtime.package import load_package
    from functions.runtime.session import create_session
    from functions.runtime.tasks.text import load_tokenizer

    package = load_package(package_dir)
    session = create_session(package.graph_path, threads)
    tokenizer = load_tokenizer(package)
    names = [tensor.name for tensor in package.manifest.graph.inputs]
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        feeds = token_feeds(tokenizer.encode_batch(texts[start : start + batch_size]))
        session.run(None, {name: feeds[name] for name in names})
    elapsed = time.perf_counter() - started
    return {"rows": len(texts), "elapsed_s": round(elapsed, 3), "rows_per_s": len(texts) / elapsed}


def main(argv: list[str]) -> None:
    from bench.inputs import rows_cycle

    package_dir, rows, threads, batch_size = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    texts = list(rows_cycle(rows))
    path = through_local_stack(package_dir, texts, threads, bucketing=True)
    unbucketed = through_local_stack(package_dir, texts, threads, bucketing=False)
    raw = raw_onnxruntime(package_dir, texts, threads, batch_size)
    print(json.dumps({"path": path, "unbucketed": unbucketed, "raw": raw}))


if __name__ == "__main__":
    main(sys.argv[1:])
