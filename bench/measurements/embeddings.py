"""Item 8: sentences/s through the API handler vs sentence-transformers `encode` on PyTorch, batch 32."""

from __future__ import annotations

import numpy as np

from bench.contenders import ApiHandler, SentenceTransformerEncoder, infer_event, response_outputs
from bench.inputs import text_batches
from bench.report import Measurement, Target, compare
from bench.run import Run, text_max_length
from bench.timing import by_step, time_side_by_side
from functions.runtime.package import read_manifest

EMBEDDING_BATCH = 32


def measure(run: Run, handler: ApiHandler) -> list[Measurement]:
    max_length = text_max_length(read_manifest(run.packages.package("embeddings")))
    encoder = SentenceTransformerEncoder.build(run.settings.threads, EMBEDDING_BATCH, max_length)
    batches = text_batches(EMBEDDING_BATCH, min(run.settings.iterations, 32))
    events = [infer_event("embeddings", "text", texts, "BYTES") for texts in batches]
    event_of, texts_of = by_step(events), by_step(batches)
    timings = time_side_by_side(
        {
            "handler": lambda step: handler(event_of(step)),
            "sentence-transformers": lambda step: encoder(texts_of(step)),
        },
        iterations=run.settings.iterations,
        warmup=run.settings.warmup,
    )
    ours = response_outputs(handler(events[0]))["embedding"]
    theirs = encoder(batches[0])
    cosine = float(
        np.min(np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1))
    )
    handler_t, st_t = timings["handler"], timings["sentence-transformers"]
    return [
        compare(
            8,
            f"embeddings, batch {EMBEDDING_BATCH}: API handler vs sentence-transformers encode (PyTorch)",
            handler_t,
            st_t,
            baseline_name="sentence-transformers 'encode'",
            ratio="baseline / ours",
            ratio_means="sentence-transformers median / handler median (speed-up)",
            target=Target(">=", 2.0),
            headline=f"embeddings vs sentence-transformers encode, batch {EMBEDDING_BATCH} of real tweets",
            detail={
                "handler_sentences_per_s": handler_t.items_per_s(EMBEDDING_BATCH),
                "sentence_transformers_sentences_per_s": st_t.items_per_s(EMBEDDING_BATCH),
                "min_cosine_vs_sentence_transformers": cosine,
            },
        )
    ]
