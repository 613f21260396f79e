"""Batch throughput: a JSONL file of real tweets through the whole S3 batch path on the local stack, vs raw ORT.

upload → S3 notification → SQS → poller → batch handler → results + summary in S3, timed from the upload to the
summary. The local stack (moto, poller, handlers) runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL = "sentiment"
SUMMARY_TIMEOUT_S = 900.0
RSS_SAMPLE_S = 0.05


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """This process's high-water RSS. Not ru_maxrss: Linux carries that across exec from the forked parent."""
    return _status_mb("VmHWM")


class RssSampler:
    """Peak resident memory while a block runs (ru_maxrss only knows the lifetime peak, init included)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _rss_mb())
            self._stop.wait(RSS_SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


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


def through_local_stack(package_dir: Path, texts: list[str], threads: int) -> dict[str, Any]:
    """The full path on the local stack; rows/s from the upload to the summary's appearance."""
    os.environ["ORT_THREADS"] = str(threads)
    from catalog import load_catalog
    from local import aws
    from local.config import LocalConfig
    from local.stack import LocalStack

    platform = load_catalog().platform
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, poll_wait_s=1)
    body = jsonl_body(texts)
    with LocalStack(config, {MODEL: package_dir}) as stack:
        assert stack.info is not None
        s3 = aws.client("s3", stack.info.aws_url)
        bucket = stack.info.resources.bucket
        key = f"{platform.batch_input_prefix}{MODEL}/bench-{len(texts)}.jsonl"
        summary_key = f"{platform.batch_output_prefix}{MODEL}/bench-{len(texts)}.jsonl.summary.json"
        rss_before = _rss_mb()
        with RssSampler() as sampler:
            started = time.perf_counter()
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
            summary = _wait_for_summary(s3, bucket, summary_key, SUMMARY_TIMEOUT_S)
            elapsed = time.perf_counter() - started
        results = s3.get_object(Bucket=bucket, Key=summary["outputs"]["results"])["Body"].read().splitlines()
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
        "process_peak_rss_mb": round(peak_rss_mb(), 1),
    }


def raw_onnxruntime(package_dir: Path, texts: list[str], threads: int, batch_size: int) -> dict[str, Any]:
    """What a hand-written loop does with the same rows: tokenise a chunk, session.run, next chunk."""
    import numpy as np

    from functions.runtime.package import load_package
    from functions.runtime.session import create_session
    from functions.runtime.tasks.text import load_tokenizer

    package = load_package(package_dir)
    session = create_session(package.graph_path, threads)
    tokenizer = load_tokenizer(package)
    names = [tensor.name for tensor in package.manifest.graph.inputs]
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        encodings = tokenizer.encode_batch(texts[start : start + batch_size])
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype="int64"),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype="int64"),
        }
        session.run(None, {name: feeds[name] for name in names})
    elapsed = time.perf_counter() - started
    return {"rows": len(texts), "elapsed_s": round(elapsed, 3), "rows_per_s": len(texts) / elapsed}


@dataclass(frozen=True)
class BatchPathResult:
    path: dict[str, Any]
    raw: dict[str, Any]

    @property
    def ratio(self) -> float:
        """Batch-path rows/s over raw rows/s, both measured in this run."""
        return float(self.path["rows_per_s"] / self.raw["rows_per_s"])


def measure(package_dir: Path, rows: int, threads: int, batch_size: int) -> BatchPathResult:
    """Run both sides in one fresh subprocess (stack first, then raw), so neither inherits the other's memory."""
    command = [sys.executable, "-m", "bench.batch_path", str(package_dir), str(rows), str(threads), str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"batch-path probe failed:\n{done.stderr[-4000:]}")
    document = json.loads(done.stdout.strip().splitlines()[-1])
    return BatchPathResult(path=document["path"], raw=document["raw"])


def main(argv: list[str]) -> None:
    from bench.inputs import rows_cycle

    package_dir, rows, threads, batch_size = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    texts = list(rows_cycle(rows))
    path = through_local_stack(package_dir, texts, threads)
    raw = raw_onnxruntime(package_dir, texts, threads, batch_size)
    print(json.dumps({"path": path, "raw": raw}))


if __name__ == "__main__":
    main(sys.argv[1:])
