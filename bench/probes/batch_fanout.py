"""The fan-out probe: one big file through the local stack's batch path, scored by N concurrent batch workers.

`python -m bench.probes.batch_fanout <model> <package dir> <rows> <workers> <threads per worker> <shard bytes>`
(the package dir is a version folder, or a model's folder `build/models/<model>` for the version its lock serves)
writes the file (sentiment: the test tweets repeated and varied; digits: the test images with noise) to disk, uploads
it, times upload → summary, checks every input line is in the outputs exactly once, and prints one JSON line: rows/s,
rows lost and duplicated, the longest invocation as a share of the timeout, and each worker's peak RSS.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.memory import RssSampler

SUMMARY_TIMEOUT_S = 4 * 3600.0
PREFIXES = ("", "honestly ", "tbh ", "wow, ", "so ", "ok ")
SUFFIXES = ("", "!", " :)", " #fail", " lol", "...", " #win")
LINE = re.compile(rb'"line":(\d+)')


def sentiment_lines(rows: int) -> Iterator[str]:
    """Real tweets, repeated and varied (a prefix and a suffix that change with each pass over the corpus)."""
    from bench.inputs import test_texts

    texts = test_texts()
    for n in range(rows):
        lap = n // len(texts)
        text = PREFIXES[lap % len(PREFIXES)] + texts[n % len(texts)] + SUFFIXES[(lap // 3 + n) % len(SUFFIXES)]
        yield json.dumps({"id": f"t{n}", "text": text})


def digits_lines(rows: int) -> Iterator[str]:
    """The test images with a little noise, as 8x8 integer pixels 0..16."""
    import numpy as np

    from bench.inputs import test_digits

    images = test_digits().astype(np.int64)
    noise = np.random.default_rng(7)
    for start in range(0, rows, 4096):
        count = min(4096, rows - start)
        batch = images[np.arange(start, start + count) % len(images)] + noise.integers(-1, 2, (count, 8, 8))
        for offset, image in enumerate(np.clip(batch, 0, 16).tolist()):
            yield json.dumps({"id": start + offset, "pixels": image}, separators=(",", ":"))


def write_file(model: str, rows: int, folder: Path) -> Path:
    path = folder / f"{model}-{rows}.jsonl"
    lines = sentiment_lines(rows) if model == "sentiment" else digits_lines(rows)
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
    return path


def cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds so far (what it consumed, whatever else shares the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_lines(s3: Any, bucket: str, keys: list[str], rows: int) -> tuple[int, int]:
    """(lost, duplicated) input lines across the outputs, streamed (a 1 GB file's results never sit in memory)."""
    seen = bytearray(rows + 1)
    duplicated = 0
    for key in keys:
        pending = b""
        for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1024 * 1024):
            pending += chunk
            complete, _, pending = pending.rpartition(b"\n")
            for match in LINE.finditer(complete):
                line = int(match.group(1))
                duplicated += seen[line] > 0
                seen[line] = 1
        for match in LINE.finditer(pending):
            line = int(match.group(1))
            duplicated += seen[line] > 0
            seen[line] = 1
    return rows - sum(seen[1:]), duplicated


def through_local_stack(
    model: str, package_dir: Path, rows: int, workers: int, threads: int, shard_bytes: int
) -> dict[str, Any]:
    from catalog import load_catalog
    from local.clients import client
    from local.config import LocalConfig
    from local.stack import LocalStack

    catalog = load_catalog()
    platform = catalog.platform.model_copy(update={"batch_shard_bytes": shard_bytes})
    config = LocalConfig(
        api_port=0, aws_port=0, sagemaker_port=0, poll_wait_s=1, batch_concurrency=workers, batch_threads=threads
    )
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as folder:
        path = write_file(model, rows, Path(folder))
        size = path.stat().st_size
        catalog = catalog.model_copy(update={"platform": platform})
        with LocalStack(config, {model: package_dir}, catalog) as stack, ExitStack() as samplers:
            assert stack.info is not None
            s3 = client("s3", stack.info.aws_url, stack.info.admin)
            bucket = stack.info.resources.bucket
            key = f"{platform.batch_input_prefix}{model}/bench-{rows}.jsonl"
            summary_key = f"{platform.batch_output_prefix}{model}/bench-{rows}.jsonl.summary.json"
            pids = [function.pid for function in stack.batch_functions if function.pid is not None]
            peaks = [samplers.enter_context(RssSampler(pid)) for pid in pids]
            cpu_before = [cpu_s(pid) for pid in pids]
            started = time.perf_counter()
            s3.upload_file(str(path), bucket, key)
            deadline = time.monotonic() + SUMMARY_TIMEOUT_S
            while True:
                try:
                    summary = json.loads(s3.get_object(Bucket=bucket, Key=summary_key)["Body"].read())
                    break
                except s3.exceptions.NoSuchKey:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no summary for {key} within {SUMMARY_TIMEOUT_S:.0f} s") from None
                    time.sleep(0.5)
            elapsed = time.perf_counter() - started
            workers_cpu_s = sum(cpu_s(pid) for pid in pids) - sum(cpu_before)  # a restarted worker's is lost
            timeouts = sum(function.timeouts for function in stack.batch_functions)
            samplers.close()
            outputs = summary["outputs"]
            lost, duplicated = count_lines(s3, bucket, [outputs["results"], outputs["errors"]], rows)
            timeout_s = config.batch_function_timeout_s(platform)
    invocations = summary.get("invocations") or []
    longest = max((entry["duration_s"] for entry in invocations), default=summary["timings"]["total_s"])
    return {
        "model": model,
        "rows": rows,
        "input_bytes": size,
        "workers": workers,
        "threads_per_worker": threads,
        "shard_bytes": shard_bytes,
        "status": summary["status"],
        "scored": summary["scored"],
        "failed": summary["failed"],
        "lost": lost,
        "duplicated": duplicated,
        "shards": summary.get("shards"),
        "invocations": len(invocations),
        "timeouts": timeouts,
        "elapsed_s": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed, 1),
        "workers_cpu_ms_per_row": round(1000 * workers_cpu_s / rows, 3),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "longest_invocation_s": longest,
        "assembly_invocations_s": [entry["duration_s"] for entry in invocations if entry["stage"] == "assemble"],
        "longest_invocation_pct_of_timeout": round(100 * longest / timeout_s, 1),
        "peak_rss_per_worker_mb": [round(sampler.peak_mb, 1) for sampler in peaks],
    }


def main(argv: list[str]) -> None:
    from functions.runtime.package import MANIFEST_FILE
    from registry.store import approved_package_dir

    model, package_dir, rows, workers, threads, shard_bytes = argv
    if not (Path(package_dir) / MANIFEST_FILE).is_file():
        package_dir = str(approved_package_dir(model, Path(package_dir).parent))
    print(
        json.dumps(
            through_local_stack(model, Path(package_dir), int(rows), int(workers), int(threads), int(shard_bytes))
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
