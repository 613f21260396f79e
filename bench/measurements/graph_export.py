"""Item 2: the shipped graph and our fp32 export vs a plain `torch.onnx.export` of the same module, same ORT."""

from __future__ import annotations

import numpy as np

from bench.contenders import raw_session, tokenize
from bench.graphs import GraphVariants, run_graph
from bench.inputs import text_batches
from bench.report import Measurement, Target, compare
from bench.run import Run, SentimentContenders, text_max_length
from bench.timing import by_step, time_side_by_side
from functions.runtime.package import TOKENIZER_FILE

PLAIN = "plain export"


def measure(run: Run, contenders: SentimentContenders, variants: GraphVariants) -> list[Measurement]:
    manifest, threads = contenders.manifest, run.settings.threads
    tokenizer_path = contenders.package / TOKENIZER_FILE
    sessions = {
        "shipped": raw_session(contenders.package / manifest.graph.file, threads),
        "ours fp32": raw_session(variants.fp32, threads),
        "ours int8": raw_session(variants.int8, threads),
        PLAIN: raw_session(variants.plain, threads),
    }
    batches = [tokenize(tokenizer_path, text_max_length(manifest), t) for t in text_batches(1, 64)]  # real tweets
    feeds_of = by_step(batches)
    timings = time_side_by_side(
        {name: (lambda step, s=session: run_graph(s, feeds_of(step))) for name, session in sessions.items()},
        iterations=run.settings.iterations,
        warmup=run.settings.warmup,
    )
    mixed = tokenize(tokenizer_path, 128, list(text_batches(8, 1)[0]))
    outputs = {name: run_graph(session, mixed) for name, session in sessions.items()}
    fp32_diff = float(np.max(np.abs(outputs["ours fp32"] - outputs[PLAIN])))
    shipped_diff = float(np.max(np.abs(outputs["shipped"] - outputs[PLAIN])))
    same_weights = "fine-tuned" in contenders.torch_model.weights
    tolerance = float(manifest.parity.tolerance or 1e-4)
    measurements = []
    for name in ("shipped", "ours fp32"):
        precision = (manifest.graph.precision or "?") if name == "shipped" else "fp32"
        diff = shipped_diff if name == "shipped" else fp32_diff
        measurements.append(
            compare(
                2,
                f"{name} graph ({precision}) vs plain torch.onnx.export graph, same ORT, batch 1",
                timings[name],
                timings[PLAIN],
                baseline_name="plain torch.onnx.export (Optimum not installable)",
                ratio="ours / baseline",
                ratio_means="our median / plain median (lower is better)",
                target=Target("<=", 1.0),
                detail={
                    "max_abs_diff_vs_plain_mixed_batch": diff,
                    "argmax_agreement_vs_plain": float(np.mean(outputs[name].argmax(-1) == outputs[PLAIN].argmax(-1))),
                    "outputs_comparable": same_weights or name != "shipped",
                    "within_tolerance": diff <= tolerance if name == "ours fp32" else None,
                    "tolerance": tolerance,
                },
            )
        )
    return measurements
