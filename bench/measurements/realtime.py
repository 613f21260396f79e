"""Items 1 and 3: the API handler vs eager PyTorch and vs raw session.run, batch 1/8/32, the same real tweets."""

from __future__ import annotations

import numpy as np

from bench.contenders import infer_event, response_outputs, tokenize
from bench.graphs import run_graph
from bench.inputs import text_batches
from bench.report import Measurement, Target, compare
from bench.run import Run, SentimentContenders, text_max_length
from bench.timing import by_step, time_side_by_side
from functions.runtime.package import TOKENIZER_FILE

BATCH_SIZES = (1, 8, 32)
SPEED_UP_TARGETS = {1: Target(">=", 3.5), 8: Target(">=", 2.5), 32: Target(">=", 2.5)}  # vs eager PyTorch


def measure(run: Run, contenders: SentimentContenders) -> list[Measurement]:
    handler, torch_model = contenders.handler, contenders.torch_model
    max_length = text_max_length(contenders.manifest)
    measurements: list[Measurement] = []
    agreement: dict[int, float] = {}
    for batch_size in BATCH_SIZES:
        iterations = run.settings.iterations if batch_size == 1 else run.settings.chart_iterations
        batches = text_batches(batch_size, min(iterations, 64))
        events = [infer_event("sentiment", "text", texts, "BYTES") for texts in batches]
        feeds = [tokenize(contenders.package / TOKENIZER_FILE, max_length, texts) for texts in batches]
        event_of, feeds_of, texts_of = by_step(events), by_step(feeds), by_step(batches)
        timings = time_side_by_side(
            {
                "handler": lambda step, e=event_of: handler(e(step)),
                "pytorch": lambda step, t=texts_of: torch_model(t(step)),
                "raw": lambda step, f=feeds_of: run_graph(contenders.session, f(step)),
            },
            iterations=iterations,
            warmup=run.settings.warmup,
        )
        ours = response_outputs(handler(events[0]))["probabilities"]
        theirs = torch_model(batches[0])
        agreement[batch_size] = float(np.mean(ours.argmax(axis=-1) == theirs.argmax(axis=-1)))
        handler_t, torch_t, raw_t = timings["handler"], timings["pytorch"], timings["raw"]
        measurements.append(
            compare(
                1,
                f"sentiment realtime, batch {batch_size}: API handler vs transformers eager PyTorch",
                handler_t,
                torch_t,
                baseline_name="PyTorch eager (tokenizer+forward+softmax)",
                ratio="baseline / ours",
                ratio_means="PyTorch median / handler median (speed-up)",
                target=SPEED_UP_TARGETS[batch_size],
                headline=f"handler vs eager PyTorch, batch {batch_size}",
                detail={"iterations": handler_t.iterations, "argmax_agreement_first_batch": agreement[batch_size]},
            )
        )
        measurements.append(
            compare(
                3,
                f"handler overhead, batch {batch_size}: API handler vs raw session.run (pre-tokenised)",
                handler_t,
                raw_t,
                baseline_name="raw session.run",
                ratio="ours / baseline",
                ratio_means="handler median / raw median (overhead)",
                target=Target("<=", 1.2) if batch_size == 1 else None,
                headline="handler overhead over raw session.run, batch 1" if batch_size == 1 else None,
                detail={"iterations": raw_t.iterations},
            )
        )
        for label, timing in (
            ("API handler (ours)", handler_t),
            ("raw session.run", raw_t),
            ("PyTorch eager", torch_t),
        ):
            run.by_batch.setdefault(label, {})[batch_size] = timing.median_ms
    run.sections["pytorch_baseline"] = {"weights": torch_model.weights, "argmax_agreement": agreement}
    return measurements
