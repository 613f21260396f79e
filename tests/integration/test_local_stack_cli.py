"""`python -m local demo` as a user runs it: a child process, real traffic, then serving until a signal stops it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from catalog import ROOT

STARTUP_AND_DEMO_S = 240.0
SHUTDOWN_S = 30.0


def test_demo_answers_scores_a_batch_file_then_stops_cleanly_on_sigint(packages: dict[str, Path]) -> None:
    # given: the test packages in one folder, as build/models/ holds them, and free ports
    folders = {path.parent for path in packages.values()}
    assert len(folders) == 1
    assert all(path.name == name for name, path in packages.items())
    env = {
        **os.environ,
        "LOCAL_PACKAGES_DIR": str(folders.pop()),
        "LOCAL_API_PORT": "0",
        "LOCAL_AWS_PORT": "0",
        "LOCAL_SAGEMAKER_PORT": "0",
        "LOCAL_VISIBILITY_TIMEOUT": "5",
        "LOCAL_BATCH_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DEMO_ONCE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "demo", "--no-build"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True).start()
    output: list[str] = []
    try:
        # when: the demo traffic runs to its end
        deadline = time.monotonic() + STARTUP_AND_DEMO_S
        while not any("keeps serving until Ctrl-C" in line for line in output):
            assert time.monotonic() < deadline, "".join(output[-40:])
            assert process.poll() is None, "".join(output[-40:])
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        # then: a Ctrl-C stops it cleanly
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=SHUTDOWN_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    while not lines.empty():
        output.append(lines.get_nowait())
    text = "".join(output)
    for model in packages:
        assert f"{model} · v2 infer" in text
        assert f"{model} · v1 predict" in text
    assert "HTTP 200" in text
    assert "SageMaker stand-in (model-serving-embeddings-local)" in text
    assert '"failed": 1' in text
    assert "aws s3 cp" in text
    assert "SIGINT: stopping" in text
    assert "HTTP 4" not in text
    assert "HTTP 5" not in text
