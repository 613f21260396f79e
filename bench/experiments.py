"""`python -m bench.experiments [--iterations N]`: before/after figures for proposed runtime and export changes.

Not part of `make bench`: each experiment isolates one candidate change on the demo packages, side by side.
- handler: where the handler's time goes at batch 1 (tokenise, session.run, post-processing, API layer).
- quantization: int8 recipes vs the fp32 graph at 128 tokens (reduce_range, per-channel, MatMul-only).
- bucketing: batch scoring with rows sorted by token length inside a window vs in file order.
- embeddings: the embeddings graph in int8 (cosine vs fp32) vs fp32 vs sentence-transformers, batch 32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.contenders import ApiHandler, SentenceTransformerEncoder, infer_event, raw_session, tokenize
from bench.graphs import run_graph, token_feeds
from bench.inputs import rows_cycle, test_texts, text_batches
from bench.packages import PackageSet, demo_packages
from bench.timing import Timing, time_side_by_side
from catalog import ROOT

THREADS = 2


def _report(title: str, timings: dict[str, Timing], baseline: str) -> dict[str, Any]:
    base = timings[baseline].median_ms
    print(f"\n== {title}")
    for name, t in timings.items():
        print(
            f"  {name:<48} median {t.median_ms:9.3f} ms  p95 {t.p95_ms:9.3f} ms  "
            f"x{base / t.median_ms:5.2f} vs {baseline}"
        )
    return {name: {"median_ms": t.median_ms, "p95_ms": t.p95_ms, "speedup_vs_" + baseline: base / t.median_ms}
            for name, t in timings.items()}  # fmt: skip


def handler_breakdown(packages: PackageSet, iterations: int) -> dict[str, Any]:
    handler = ApiHandler(packages.models_dir, THREADS)
    model = handler.served_model("sentiment")
    texts = text_batches(1, 64)
    events = [infer_event("sentiment", "text", t, "BYTES") for t in texts]
    feeds = [model.processor.prepare(t).feeds for t in texts]
    session = model.backend.session
    contenders: dict[str, Callable[[int], Any]] = {
        "raw session.run (pre-tokenised)": lambda i: session.run(None, feeds[i % 64]),
        "tokenise only (processor.prepare)": lambda i: model.processor.prepare(texts[i % 64]),
        "ServedModel.infer (tokenise+run+softmax)": lambda i: model.infer(texts[i % 64]),
        "API handler (event in, JSON out)": lambda i: handler(events[i % 64]),
    }
    timings = time_side_by_side(contenders, iterations=iterations, warmup=10)
    return _report("handler breakdown, sentiment batch 1", timings, "raw session.run (pre-tokenised)")


def _quantize(source: Path, target: Path, **options: Any) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not target.is_file():  # fused contrib ops hide output types from shape inference: say they are float
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, extra_options=extra, **options)
    return target


def quantization(packages: PackageSet, out: Path, iterations: int) -> dict[str, Any]:
    graphs = sorted((out / "graphs").glob("*/fp32.onnx"), key=lambda p: p.stat().st_mtime)
    if not graphs:
        raise SystemExit("run `python -m bench` first: it leaves the fp32 graph under build/bench/graphs/")
    fp32 = graphs[-1]
    folder = out / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    variants = {
        "fp32 (ours)": fp32,
        "int8 shipped recipe (per-channel, reduce_range)": fp32.parent / "int8.onnx",
        "int8 per-tensor, reduce_range": _quantize(
            fp32, folder / "int8-tensor.onnx", per_channel=False, reduce_range=True
        ),
        "int8 MatMul only, per-channel, reduce_range": _quantize(
            fp32, folder / "int8-matmul.onnx", per_channel=True, reduce_range=True, op_types_to_quantize=["MatMul"]
        ),
        "int8 per-channel, full range": _quantize(
            fp32, folder / "int8-full.onnx", per_channel=True, reduce_range=False
        ),
    }
    tokenizer = packages.package("sentiment") / "tokenizer.json"
    joined = " ".join(test_texts()[:40])
    feeds = tokenize(tokenizer, 128, [joined])
    sessions = {name: raw_session(path, THREADS) for name, path in variants.items()}
    reference = run_graph(sessions["fp32 (ours)"], feeds)
    timings = time_side_by_side(
        {name: (lambda _i, s=s: run_graph(s, feeds)) for name, s in sessions.items()}, iterations=iterations, warmup=5
    )
    result = _report("int8 recipes vs fp32, seq 128 batch 1", timings, "fp32 (ours)")
    mixed = tokenize(tokenizer, 128, text_batches(64, 1)[0])
    ref_mixed = run_graph(sessions["fp32 (ours)"], mixed).argmax(-1)
    for name, session in sessions.items():
        result[name]["max_abs_diff_seq128"] = float(np.max(np.abs(run_graph(session, feeds) - reference)))
        result[name]["argmax_agreement_64_tweets"] = float(np.mean(run_graph(session, mixed).argmax(-1) == ref_mixed))
        print(f"  {name:<48} argmax agreement {result[name]['argmax_agreement_64_tweets']:.3f}")
    return result


def bucketing(packages: PackageSet, rows: int, batch_size: int = 64, window: int = 1024) -> dict[str, Any]:
    from functions.runtime.package import load_package
    from functions.runtime.tasks.text import load_tokenizer

    package = load_package(packages.package("sentiment"))
    tokenizer = load_tokenizer(package)
    session = raw_session(package.graph_path, THREADS)
    texts = list(rows_cycle(rows))
    lengths = np.array([len(e.ids) for e in _unpadded(package.tokenizer_path, texts)])

    def score(order: np.ndarray) -> tuple[float, int]:
        started, padded = time.perf_counter(), 0
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            feeds = token_feeds(tokenizer.encode_batch(chunk))
            padded += feeds["input_ids"].size
            session.run(None, feeds)
        return time.perf_counter() - started, padded

    file_order = np.arange(len(texts))
    bucketed = np.concatenate(
        [w[np.argsort(lengths[w], kind="stable")] for w in np.array_split(file_order, max(1, len(texts) // window))]
    )
    runs: dict[str, list[float]] = {"file order": [], f"sorted by length in windows of {window}": []}
    padded: dict[str, int] = {}
    for _ in range(2):  # alternate, twice
        for name, order in zip(runs, (file_order, bucketed), strict=True):
            seconds, padded[name] = score(order)
            runs[name].append(seconds)
    print(f"\n== length bucketing, {rows} tweets, batch {batch_size} (real tokens {int(lengths.sum()):,})")
    result: dict[str, Any] = {}
    for name, passes in runs.items():
        best = min(passes)
        result[name] = {"seconds": best, "rows_per_s": rows / best, "padded_tokens": padded[name]}
        print(f"  {name:<40} {rows / best:8.1f} rows/s  padded tokens {padded[name]:,}  ({passes})")
    return result


def _unpadded(tokenizer_path: Path, texts: list[str]) -> list[Any]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=128)
    return tokenizer.encode_batch(texts)


def sorted_sub_batches(session: Any, tokenizer_path: Path, texts: list[str], size: int) -> np.ndarray:
    """What a runtime could do with one request of many texts: sort by length, run tight sub-batches, unsort.

    Tokenisation is inside the timed call here (raw graph contenders get pre-tokenised feeds), so this is the
    conservative side of the comparison.
    """
    encodings = _unpadded(tokenizer_path, texts)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    outputs: list[np.ndarray] = []
    for start in range(0, len(order), size):
        chunk = [encodings[i] for i in order[start : start + size]]
        width = max(len(e.ids) for e in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, encoding in enumerate(chunk):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        outputs.append(run_graph(session, {"input_ids": ids, "attention_mask": mask}))
    result = np.empty((len(texts), outputs[0].shape[1]), dtype=np.float32)
    result[order] = np.concatenate(outputs)
    return result


def embeddings_int8(packages: PackageSet, out: Path, iterations: int) -> dict[str, Any]:
    package = packages.package("embeddings")
    fp32 = package / "model.onnx"
    int8 = _quantize(fp32, out / "experiments" / "embeddings-int8.onnx", per_channel=True, reduce_range=True)
    batches = text_batches(32, 16)
    feeds = [tokenize(package / "tokenizer.json", 256, b) for b in batches]
    sessions = {"fp32 graph (shipped)": raw_session(fp32, THREADS), "int8 graph": raw_session(int8, THREADS)}
    encoder = SentenceTransformerEncoder.build(THREADS, 32, 256)
    contenders: dict[str, Callable[[int], Any]] = {
        name: (lambda i, s=s: run_graph(s, feeds[i % 16])) for name, s in sessions.items()
    }
    contenders["sentence-transformers encode"] = lambda i: encoder(batches[i % 16])
    tokenizer_path = package / "tokenizer.json"
    for label, session in (("fp32", sessions["fp32 graph (shipped)"]), ("int8", sessions["int8 graph"])):
        contenders[f"{label} graph, length-sorted sub-batches of 8"] = lambda i, s=session: sorted_sub_batches(
            s, tokenizer_path, batches[i % 16], 8
        )
    timings = time_side_by_side(contenders, iterations=iterations, warmup=3)
    result = _report(
        "embeddings, batch 32 raw graphs vs sentence-transformers", timings, "sentence-transformers encode"
    )
    cosines = []
    for f in feeds:
        a, b = run_graph(sessions["fp32 graph (shipped)"], f), run_graph(sessions["int8 graph"], f)
        cosines.append(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    result["int8 graph"]["min_cosine_vs_fp32"] = float(np.min(np.concatenate(cosines)))
    result["int8 graph"]["size_mb"] = int8.stat().st_size / 1e6
    print(
        f"  int8 min cosine vs fp32 {result['int8 graph']['min_cosine_vs_fp32']:.4f}, "
        f"{int8.stat().st_size / 1e6:.1f} MB"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", default=["handler", "quantization", "bucketing", "embeddings"])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rows", type=int, default=4096, help="rows for the bucketing experiment")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    packages = demo_packages(build_if_missing=False)
    results: dict[str, Any] = {}
    for which in args.which:
        if which == "handler":
            results[which] = handler_breakdown(packages, args.iterations)
        elif which == "quantization":
            results[which] = quantization(packages, args.out, args.iterations)
        elif which == "bucketing":
            results[which] = bucketing(packages, args.rows)
        elif which == "embeddings":
            results[which] = embeddings_int8(packages, args.out, args.iterations)
        else:
            raise SystemExit(f"unknown experiment {which!r}")
    path = args.out / "experiments.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
