"""Cold start: a fresh process from interpreter start to first prediction, ours vs PyTorch, with the breakdown.

Each probe runs as `python -m bench.cold_start <kind> <package dir> ...` in a new process and prints one JSON line;
the parent adds the wall time it saw (interpreter start included) and takes the median over repeats.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()  # as early as this module can see: the parent's wall clock covers interpreter start

PROBES = ("onnx", "torch")


def peak_rss_mb() -> float:
    """High-water RSS of this process (VmHWM; ru_maxrss would report the forking parent's size after exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mark(steps: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    steps[name] = round((now - since) * 1000, 2)
    return now


def example_request(task: str) -> dict[str, Any]:
    """One real request (a test tweet or a test digit), made by the parent so probes import no data code."""
    from bench.inputs import test_digits, test_texts

    if task == "image-classification":
        return {"pixels": test_digits()[:1].tolist()}
    return {"text": [test_texts()[0]]}


def _decode(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    return {key: np.asarray(value, dtype=np.float32) if key == "pixels" else value for key, value in request.items()}


def probe_onnx(package_dir: Path, threads: int, request: dict[str, Any]) -> dict[str, Any]:
    """What the Lambda init does for our function, step by step, then its first real request."""
    steps: dict[str, float] = {}
    start = time.perf_counter()
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver  # noqa: F401

    from functions.runtime.models import ServedModel
    from functions.runtime.package import load_package
    from functions.runtime.session import create_session
    from functions.runtime.tasks import processor_for

    from functions.runtime.backends import OnnxBackend  # isort: skip

    start = _mark(steps, "import", start)
    package = load_package(package_dir)
    start = _mark(steps, "package_load_sha256", start)
    session = create_session(package.graph_path, threads)
    start = _mark(steps, "session", start)
    processor = processor_for(package)
    model = ServedModel(package, processor, OnnxBackend(session, processor.graph_output_names), max_instances=64)
    model.warm_up()
    start = _mark(steps, "warm_up", start)
    start = time.perf_counter()
    model.predict(_decode(request))
    _mark(steps, "first_prediction", start)
    return {"steps_ms": steps}


def probe_torch(package_dir: Path, threads: int, request: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """The same for a plain PyTorch container: import torch + transformers, load the checkpoint, warm up, predict."""
    steps: dict[str, float] = {}
    start = time.perf_counter()
    import torch
    import transformers  # noqa: F401

    manifest = json.loads((package_dir / "manifest.json").read_text())
    task = manifest["task"]
    torch.set_num_threads(threads)
    start = _mark(steps, "import", start)
    from bench.contenders import SentenceTransformerEncoder, TorchTextClassifier  # torch + transformers only

    max_length = manifest.get("preprocessing", {}).get("max_length") or 128
    predict: Any
    if task == "text-classification":
        predict = TorchTextClassifier.build(len(manifest["labels"]), max_length, threads, _path(checkpoint))
        run = lambda inputs: predict(inputs["text"])  # noqa: E731
    elif task == "sentence-embedding":
        predict = SentenceTransformerEncoder.build(threads, batch_size=32, max_length=max_length)
        run = lambda inputs: predict(inputs["text"])  # noqa: E731
    else:
        from bench.contenders import small_cnn

        model = small_cnn(len(manifest["labels"]))
        if checkpoint:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
        model.eval()
        scale = float(manifest["preprocessing"]["pixel_scale"])

        def run(inputs: dict[str, Any]) -> Any:
            pixels = torch.from_numpy(inputs["pixels"] / scale).float().unsqueeze(1)
            with torch.inference_mode():
                return torch.softmax(model(pixels), dim=-1).numpy()

    start = _mark(steps, "model_load", start)
    example = _decode(request)
    run(example)
    start = _mark(steps, "warm_up", start)
    start = time.perf_counter()
    run(example)
    _mark(steps, "first_prediction", start)
    return {"steps_ms": steps}


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def run_probe(
    kind: str, package_dir: Path, threads: int, request: dict[str, Any], checkpoint: Path | None = None
) -> dict[str, Any]:
    """One fresh process; wall time seen from here (interpreter start included), steps and peak RSS from inside."""
    command = [sys.executable, "-m", "bench.cold_start", kind, str(package_dir), str(threads)]
    if checkpoint is not None:
        command.append(str(checkpoint))
    started = time.perf_counter()
    done = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True, check=False)
    wall_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"cold-start probe {kind} for {package_dir} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_ms"] = round(wall_ms, 1)
    return result


def main(argv: list[str]) -> None:
    kind, package_dir, threads = argv[0], Path(argv[1]), int(argv[2])
    checkpoint = argv[3] if len(argv) > 3 else None
    request = json.loads(sys.stdin.read())
    if kind == "onnx":
        result = probe_onnx(package_dir, threads, request)
    elif kind == "torch":
        result = probe_torch(package_dir, threads, request, checkpoint)
    else:
        raise SystemExit(f"unknown probe {kind!r}; expected one of {PROBES}")
    result["in_process_ms"] = round((time.perf_counter() - _T0) * 1000, 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
