"""The cold-start probe: a fresh process from interpreter start to first prediction, ours or PyTorch, step by step.

Runs as `python -m bench.probes.cold_start <onnx|torch> <package dir> <threads> [checkpoint]` with the request (and
the PyTorch side's model settings, so it reads nothing of our package format) as JSON on stdin; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()  # as early as this module can see: the parent's wall clock covers interpreter start

PROBES = ("onnx", "torch")


def _mark(steps: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    steps[name] = round((now - since) * 1000, 2)
    return now


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
    model = ServedModel(package, processor, OnnxBackend(session, processor.graph_output_names))
    model.warm_up()
    start = _mark(steps, "warm_up", start)
    start = time.perf_counter()
    model.predict(model.check_batch(_decode(request)[model.input_name]))
    _mark(steps, "first_prediction", start)
    return {"steps_ms": steps}


def probe_torch(threads: int, request: dict[str, Any], model: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """The same for a plain PyTorch container: import torch + transformers, load the checkpoint, warm up, predict."""
    steps: dict[str, float] = {}
    start = time.perf_counter()
    import torch
    import transformers  # noqa: F401

    task = model["task"]
    torch.set_num_threads(threads)
    start = _mark(steps, "import", start)
    from bench.contenders import SentenceTransformerEncoder, TorchTextClassifier  # torch + transformers only

    max_length = model["max_length"]
    predict: Any
    if task == "text-classification":
        predict = TorchTextClassifier.build(model["num_labels"], max_length, threads, _path(checkpoint))
        run = lambda inputs: predict(inputs["text"])  # noqa: E731
    elif task == "sentence-embedding":
        predict = SentenceTransformerEncoder.build(threads, batch_size=32, max_length=max_length)
        run = lambda inputs: predict(inputs["text"])  # noqa: E731
    else:
        from bench.contenders import small_cnn

        cnn = small_cnn(model["num_labels"])
        if checkpoint:
            cnn.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])
        cnn.eval()
        scale = float(model["pixel_scale"])

        def run(inputs: dict[str, Any]) -> Any:
            pixels = torch.from_numpy(inputs["pixels"] / scale).float().unsqueeze(1)
            with torch.inference_mode():
                return torch.softmax(cnn(pixels), dim=-1).numpy()

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


def main(argv: list[str]) -> None:
    kind, package_dir, threads = argv[0], Path(argv[1]), int(argv[2])
    checkpoint = argv[3] if len(argv) > 3 else None
    given = json.loads(sys.stdin.read())
    if kind == "onnx":
        result = probe_onnx(package_dir, threads, given["request"])
    elif kind == "torch":
        result = probe_torch(threads, given["request"], given["pytorch"], checkpoint)
    else:
        raise SystemExit(f"unknown probe {kind!r}; expected one of {PROBES}")
    result["in_process_ms"] = round((time.perf_counter() - _T0) * 1000, 1)
    from bench.memory import peak_rss_mb  # after the clock stops: nothing of ours is charged to either side

    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
