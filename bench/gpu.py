"""`make bench-gpu`: the GPU-placed graph on ONNX Runtime's CUDA (and TensorRT) providers vs PyTorch CUDA eager.

Needs a CUDA machine with onnxruntime-gpu; anywhere else it says so and exits 2 without measuring anything.
Never run by the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.inputs import text_batches
from bench.report import machine_description, package_versions
from catalog import ROOT

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EXIT_NO_GPU = 2


def gpu_available() -> tuple[bool, str]:
    """Whether both sides can run on a GPU here, and if not, why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (
            f"onnxruntime has no CUDAExecutionProvider (providers: {', '.join(ort.get_available_providers())}); "
            "install onnxruntime-gpu on a CUDA machine"
        )
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    return True, torch.cuda.get_device_name(0)


def _time_throughput(run: Any, batches: list[Any], sync: Any, seconds: float) -> float:
    """Median seconds per batch over at least 20 calls (or `seconds` of work), after a warm-up."""
    for batch in batches[:5]:
        run(batch)
    sync()
    samples: list[float] = []
    started = time.perf_counter()
    index = 0
    while len(samples) < 20 or time.perf_counter() - started < seconds:
        batch = batches[index % len(batches)]
        t0 = time.perf_counter()
        run(batch)
        sync()
        samples.append(time.perf_counter() - t0)
        index += 1
        if len(samples) >= 200:
            break
    return float(np.median(samples))


def run_gpu_bench(model: str, out_dir: Path, seconds: float) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from bench.contenders import tokenize
    from functions.runtime.package import load_package
    from registry.store import approved_package_dir
    from training.tasks.sentence_embedding import SentenceEmbedder

    package = load_package(approved_package_dir(model))
    max_length = package.manifest.preprocessing.max_length or 128
    providers: dict[str, list[Any]] = {"onnxruntime CUDA": ["CUDAExecutionProvider"]}
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        providers["onnxruntime TensorRT"] = [
            ("TensorrtExecutionProvider", {"trt_fp16_enable": False, "trt_engine_cache_enable": True,
                                           "trt_engine_cache_path": str(out_dir / "trt-cache")}),
            "CUDAExecutionProvider",
        ]  # fmt: skip
    sessions = {name: ort.InferenceSession(str(package.graph_path), providers=p) for name, p in providers.items()}
    torch_model = SentenceEmbedder().eval().cuda()
    results: dict[str, Any] = {"model": model, "batch_sizes": {}}
    for batch_size in BATCH_SIZES:
        feeds = [tokenize(package.tokenizer_path, max_length, texts) for texts in text_batches(batch_size, 8)]
        row: dict[str, float] = {}
        for name, session in sessions.items():
            seconds_per_batch = _time_throughput(lambda f, s=session: s.run(None, f), feeds, lambda: None, seconds)
            row[name] = batch_size / seconds_per_batch
        cuda_feeds = [{k: torch.from_numpy(v).cuda() for k, v in f.items()} for f in feeds]

        def run_torch(f: dict[str, Any]) -> Any:
            with torch.inference_mode():
                return torch_model(input_ids=f["input_ids"], attention_mask=f["attention_mask"])

        torch_seconds = _time_throughput(run_torch, cuda_feeds, torch.cuda.synchronize, seconds)
        row["PyTorch CUDA eager"] = batch_size / torch_seconds
        row["ratio (ORT CUDA / PyTorch)"] = row["onnxruntime CUDA"] / row["PyTorch CUDA eager"]
        results["batch_sizes"][batch_size] = row
        print(f"batch {batch_size:>3}: " + ", ".join(f"{k} {v:,.1f}" for k, v in row.items()), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embeddings", help="catalog model with an fp32 graph (default: embeddings)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per point")
    args = parser.parse_args(argv)
    available, detail = gpu_available()
    if not available:
        print(f"bench-gpu: no GPU here, nothing measured: {detail}", file=sys.stderr)
        return EXIT_NO_GPU
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_gpu_bench(args.model, args.out, args.seconds)
    document = {"device": detail, "machine": machine_description(), "versions": package_versions(), **results}
    path = args.out / "gpu.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
