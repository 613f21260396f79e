"""Item 4: our fp32 graph's GFLOP/s against this CPU's measured fp32 peak, and int8 vs fp32, at 128 tokens.

On the way it sweeps the sequence length at batch 1 for the chart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.contenders import raw_session, tokenize
from bench.graphs import GraphVariants, run_graph
from bench.inputs import test_texts
from bench.peak import Peak, matmul_flops
from bench.report import Measurement, Target, compare
from bench.run import Run, SentimentContenders
from bench.timing import Timing, time_side_by_side
from functions.runtime.package import TOKENIZER_FILE

SEQUENCE_LENGTHS = (16, 32, 64, 128)
FLOPS_SEQUENCE = 128
PEAK_SIZE = 1536  # the co-measured peak's square matmul: 7.2 GFLOP, long enough to reach BLAS steady state
PEAK_CONTENDER = "fp32 peak matmul"
FP32, INT8 = "fp32 graph (ours)", "int8 graph (ours)"


def _fixed_length_feeds(tokenizer_path: Path, length: int) -> dict[str, np.ndarray]:
    """Batch 1 of exactly `length` tokens of real test text (tweets joined until truncation bites)."""
    texts = test_texts()
    joined = " ".join(texts[: max(4, length // 4)])
    feeds = tokenize(tokenizer_path, length, [joined])
    if feeds["input_ids"].shape[1] != length:
        raise ValueError(f"could not build a {length}-token input from the test texts")
    return feeds


def _sequence_sweep(run: Run, contenders: SentimentContenders, variants: GraphVariants) -> dict[int, dict[str, Timing]]:
    """Both our graphs and the PyTorch forward at each length; at 128 tokens a large matmul runs in the same blocks."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = run.settings.threads
    sessions = {FP32: raw_session(variants.fp32, threads), INT8: raw_session(variants.int8, threads)}
    rng = np.random.default_rng(0)
    peak_a, peak_b = (rng.standard_normal((PEAK_SIZE, PEAK_SIZE), dtype=np.float32) for _ in range(2))
    sweep: dict[int, dict[str, Timing]] = {}
    for length in SEQUENCE_LENGTHS:
        feeds = _fixed_length_feeds(contenders.package / TOKENIZER_FILE, length)
        torch_feeds = {k: torch.from_numpy(v) for k, v in feeds.items()}

        def torch_forward(_: int, f: dict[str, Any] = torch_feeds) -> Any:
            with torch.inference_mode():
                return contenders.torch_model.model(input_ids=f["input_ids"], attention_mask=f["attention_mask"])

        timed: dict[str, Callable[[int], Any]] = {
            name: (lambda _step, s=session, f=feeds: run_graph(s, f)) for name, session in sessions.items()
        }
        timed["PyTorch eager forward"] = torch_forward
        if length == FLOPS_SEQUENCE:
            timed[PEAK_CONTENDER] = lambda _step: peak_a @ peak_b
        with threadpool_limits(limits=threads):
            sweep[length] = time_side_by_side(
                timed,
                iterations=run.settings.iterations if length == FLOPS_SEQUENCE else run.settings.chart_iterations,
                warmup=run.settings.warmup,
            )
        for name, timing in sweep[length].items():
            if name != PEAK_CONTENDER:
                run.by_sequence.setdefault(name, {})[length] = timing.median_ms
    return sweep


def measure(run: Run, contenders: SentimentContenders, variants: GraphVariants, peak: Peak) -> list[Measurement]:
    sweep = _sequence_sweep(run, contenders, variants)
    flops = matmul_flops(variants.plain, {"input_ids": [1, FLOPS_SEQUENCE], "attention_mask": [1, FLOPS_SEQUENCE]})
    fp32_t, int8_t, peak_t = (sweep[FLOPS_SEQUENCE][name] for name in (FP32, INT8, PEAK_CONTENDER))
    achieved = flops / (fp32_t.median_ms / 1000) / 1e9
    co_measured = 2.0 * PEAK_SIZE**3 / (peak_t.median_ms / 1000) / 1e9
    quantization = contenders.manifest.quantization or {}
    run.sections["roofline"] = {
        "peak": peak.__dict__,
        "model_gflop_at_seq_128": flops / 1e9,
        "flops_counted_on": "plain export graph (standard MatMul/Gemm ops), ORT symbolic shape inference",
        "sequence_sweep_median_ms": {
            length: {name: t.median_ms for name, t in timings_at.items()} for length, timings_at in sweep.items()
        },
    }
    return [
        compare(
            4,
            f"fp32 graph at seq {FLOPS_SEQUENCE}, batch 1: achieved GFLOP/s vs measured fp32 peak",
            fp32_t,
            peak_t,
            baseline_name=f"peak {co_measured:.1f} GFLOP/s (numpy {PEAK_SIZE}^3 matmul in the same blocks, median)",
            ratio=achieved / co_measured,
            ratio_means="achieved GFLOP/s / peak GFLOP/s, both from medians in the same side-by-side run",
            target=Target(">=", 0.5, unit=" of peak"),
            detail={
                "model_gflop": flops / 1e9,
                "achieved_gflops": achieved,
                "peak_gflops_same_blocks": co_measured,
                "peak_gflops_best_of_at_start": peak.gflops,
                "peak_library_at_start": peak.library,
                "ratio_vs_best_of_peak": achieved / peak.gflops,
            },
        ),
        compare(
            4,
            f"int8 vs fp32 graph at seq {FLOPS_SEQUENCE}, batch 1",
            int8_t,
            fp32_t,
            baseline_name="fp32 graph (ours)",
            ratio="baseline / ours",
            ratio_means="fp32 median / int8 median (speed-up)",
            target=Target(">=", 1.8) if quantization.get("applied") else None,
            detail={
                "int8_gflops_equivalent": flops / (int8_t.median_ms / 1000) / 1e9,
                "package_quantization": quantization,
            },
        ),
    ]
