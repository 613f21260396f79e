"""`python -m bench.measurements.embeddings_int8`: int8 recipes for the embeddings graph, speed and retrieval gate.

Not part of `make bench`: it measures which MatMuls are most sensitive (quantised one at a time, on train-split
tweets), then each recipe's speed (ORT, batch 32 of real test-split tweets, side by side in one run) and its gate
figures on the held-out validation tweets the package build gates on. The manifest's gate is the decision; this
is how its recipe was chosen.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.contenders import raw_session, tokenize
from bench.graphs import run_graph
from bench.inputs import text_batches
from bench.packages import demo_packages
from bench.timing import time_side_by_side
from catalog import ROOT
from training.export_spec import QuantizationRecipe
from training.quantization import (
    MIN_MEAN_COSINE,
    MIN_NEIGHBOUR_OVERLAP,
    NEIGHBOURS,
    graph_node_names,
    quantize_graph,
    retrieval_figures,
)

THREADS = 2
BATCH = 32
SENSITIVITY_TEXTS = 128
QUANTIZABLE = ("MatMul", "Attention", "EmbedLayerNormalization")
OVERLAP = f"top{NEIGHBOURS}_neighbour_overlap"
WEIGHT_ONLY = "weight-only int8 (MatMulNBits, block 32, accuracy_level 4)"


def fp32_graph(package: Path, folder: Path) -> Path:
    """The package's fp32 graph: model.onnx if it is fp32, else the copy its Triton repository holds."""
    from functions.runtime.package import read_manifest

    manifest = read_manifest(package)
    if manifest.graph.precision != "int8":
        return package / "model.onnx"
    with tarfile.open(package / "triton" / "model.tar.gz") as archive:
        member = archive.extractfile(f"{manifest.name}/1/model.onnx")
        if member is None:
            raise SystemExit(f"{package}: int8 model.onnx and no fp32 graph in its Triton repository")
        target = folder / "fp32.onnx"
        target.write_bytes(member.read())
    return target


def embed(graph: Path, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = raw_session(graph, THREADS)
    return np.concatenate([run_graph(session, feeds) for feeds in batches])


def quantizable_nodes(graph: Path) -> list[str]:
    import onnx

    nodes = onnx.load(str(graph), load_external_data=False).graph.node
    return [node.name for node in nodes if node.op_type in QUANTIZABLE]


def exact(names: list[str]) -> tuple[str, ...]:
    return tuple(f"^{re.escape(name)}$" for name in names)


def sensitivity(fp32: Path, batches: list[dict[str, np.ndarray]], folder: Path) -> dict[str, float]:
    """1 - mean cosine to fp32 with only this node in int8: how much each node alone costs."""
    reference = embed(fp32, batches)
    result: dict[str, float] = {}
    for name in quantizable_nodes(fp32):
        only = QuantizationRecipe(keep_fp32=exact([n for n in graph_node_names(fp32) if n != name]))
        one = quantize_graph(fp32, folder / "one.onnx", only)
        result[name] = 1.0 - retrieval_figures(reference, embed(one, batches))["mean_cosine"]
        print(f"  {result[name]:.6f}  {name}", flush=True)
    return dict(sorted(result.items(), key=lambda item: -item[1]))


def weight_only_int8(fp32: Path, target: Path) -> Path:
    """8-bit weights in blocks of 32 (MatMulNBits), activations quantised per block at run time (accuracy_level 4).

    Measured beside the dynamic recipes: it keeps ranking almost exactly, so the question is only its speed.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from training.job_logging import quiet_libraries

    with quiet_libraries():
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(fp32)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    return target


def recipes(ranking: list[str], keep_counts: list[int]) -> dict[str, QuantizationRecipe]:
    named = {
        "per-tensor, reduce_range": QuantizationRecipe(per_channel=False),
        "per-channel, reduce_range": QuantizationRecipe(),
        "per-channel, full range (needs VNNI)": QuantizationRecipe(reduce_range=False),
    }
    for count in keep_counts:
        named[f"per-channel, reduce_range, {count} most sensitive kept fp32"] = QuantizationRecipe(
            keep_fp32=exact(ranking[:count])
        )
    return named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measurements.embeddings_int8", description=__doc__)
    parser.add_argument("--iterations", type=int, default=60, help="timed batches per recipe")
    parser.add_argument("--keep", default="12,18,21", help="how many of the most sensitive nodes to keep fp32")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "embeddings_int8.json")
    args = parser.parse_args(argv)
    from training.datasets import split_tweets
    from training.tasks import text

    package = demo_packages(build_if_missing=False).package("embeddings")
    tokenizer = text.load_tokenizer(text_max_length := 256)
    splits = split_tweets()
    calibration = text.feed_batches(tokenizer, splits["train"].texts[:SENSITIVITY_TEXTS])
    held_out = text.feed_batches(tokenizer, splits["validation"].texts)  # what the package build gates on
    timed = [tokenize(package / "tokenizer.json", text_max_length, texts) for texts in text_batches(BATCH, 16)]
    with tempfile.TemporaryDirectory(prefix="embeddings-int8-") as scratch:
        folder = Path(scratch)
        fp32 = fp32_graph(package, folder)
        print(f"sensitivity (1 - mean cosine, one node in int8, {SENSITIVITY_TEXTS} train-split tweets):")
        ranking = sensitivity(fp32, calibration, folder)
        candidates = recipes(list(ranking), [int(n) for n in args.keep.split(",")])
        graphs = {"fp32": fp32} | {
            name: quantize_graph(fp32, folder / f"{index}.onnx", recipe)
            for index, (name, recipe) in enumerate(candidates.items())
        }
        graphs[WEIGHT_ONLY] = weight_only_int8(fp32, folder / "weight-only.onnx")
        reference = embed(fp32, held_out)
        figures = {name: retrieval_figures(reference, embed(graph, held_out)) for name, graph in graphs.items()}
        sessions = {name: raw_session(graph, THREADS) for name, graph in graphs.items()}
        timings = time_side_by_side(
            {name: (lambda step, s=s: run_graph(s, timed[step % len(timed)])) for name, s in sessions.items()},
            iterations=args.iterations,
            warmup=3,
        )
    base = timings["fp32"].median_ms
    rows: dict[str, Any] = {}
    print(f"\nrecipe | median ms | p95 ms | speed-up vs fp32 | {OVERLAP} | mean cosine | min cosine | passes gate")
    for name, timing in timings.items():
        gate = figures[name]
        passes = gate[OVERLAP] >= MIN_NEIGHBOUR_OVERLAP and gate["mean_cosine"] >= MIN_MEAN_COSINE
        method = candidates[name].method if name in candidates else name
        rows[name] = {"method": method, "median_ms": timing.median_ms, "p95_ms": timing.p95_ms,
                      "speedup_vs_fp32": base / timing.median_ms, **gate, "passes_gate": passes}  # fmt: skip
        print(
            f"{name} | {timing.median_ms:.1f} | {timing.p95_ms:.1f} | {base / timing.median_ms:.2f}x | "
            f"{gate[OVERLAP]:.4f} | {gate['mean_cosine']:.5f} | {gate['min_cosine']:.4f} | {'yes' if passes else 'no'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sensitivity": ranking, "recipes": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
