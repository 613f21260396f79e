"""The batch-1 hot path, profiled: what the API handler does around `session.run` for one sentiment request.

`python -m bench.probes.hot_path [calls]` serves the approved packages exactly as the bench does, swaps the
sentiment session's `run` for one that returns a recorded answer (so the profile is the handler's own work, not
the graph), and prints the handler's own microseconds per request, then pyinstrument's call tree of those calls.
Then the two ways the real graph call and the handler's work slow each other down, each timed in interleaved blocks:
the graph call right after the handler's work against back to back, and the handler's work right after a real graph
call against after another handler call (its weights and activations go through the caches the handler's work used).
Last, the batch-1 request built up layer by layer, timed side by side as `make bench` times item 3: raw `session.run`
on pre-tokenised feeds, then with the runtime's tokenising, then the scoring route itself (body read and validated,
v2 codec, metric calls) without Powertools' resolver, then through the resolver without Powertools' decorator stack
(logger, tracer, metrics), then the function as shipped: what taking each layer off the hot route would buy.
"""

from __future__ import annotations

import contextlib
import inspect
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from pyinstrument import Profiler

from bench.__main__ import THREADS
from bench.contenders import ApiHandler, infer_event, raw_session, tokenize
from bench.graphs import run_graph
from bench.inputs import text_batches
from bench.packages import APPROVED_DIR, approved_packages
from bench.run import text_max_length
from bench.timing import time_side_by_side


class RecordedRun:
    """`session.run` stand-in: the real session's answer for the first feed, returned for every call."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.answer: Any = None
        self.feeds: Any = None

    def __call__(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        if self.answer is None:
            self.answer, self.feeds = self.session.run(output_names, feeds, run_options), feeds
        return self.answer


def main(argv: list[str]) -> None:
    numbers = [word for word in argv if word.isdigit()]
    calls = int(numbers[0]) if numbers else 3000
    handler = ApiHandler(approved_packages(APPROVED_DIR), threads=THREADS)  # as `make bench` runs every contender
    model = handler.served_model("sentiment")
    backend = model.backend
    backend.session = _Recorded(backend.session)
    events = [infer_event("sentiment", "text", texts, "BYTES") for texts in text_batches(1, 64)]
    for event in events:  # warm: the first answer is recorded, every path is imported
        handler(event)
    started = time.process_time()  # CPU time: steadier than wall time on a shared machine, and nothing here waits
    for step in range(calls):
        handler(events[step % len(events)])
    own_us = (time.process_time() - started) / calls * 1e6
    profiler = Profiler(interval=0.0001)
    with profiler:
        for step in range(calls):
            handler(events[step % len(events)])
    print(f"handler's own work per batch-1 request (session.run recorded): {own_us:.0f} µs over {calls} calls")
    print(profiler.output_text(unicode=True, color=False, show_all="--all" in argv))
    session, feeds = backend.session._session, backend.session.run.feeds

    def graph_call(step: int) -> Any:
        return session.run(None, feeds)

    def handler_call(step: int) -> Any:  # its graph call is the recorded one
        return handler(events[step % len(events)])

    back_to_back, after_handler = interleaved(graph_call, after=handler_call)
    print(
        f"session.run, batch 1, median of interleaved blocks: {back_to_back * 1e3:.3f} ms back to back, "
        f"{after_handler * 1e3:.3f} ms right after the handler's own work ({after_handler / back_to_back:.3f}x)"
    )
    warm, after_graph = interleaved(handler_call, after=graph_call)
    print(
        f"handler's own work (session.run recorded), median of interleaved blocks: {warm * 1e6:.0f} µs after another "
        f"request, {after_graph * 1e6:.0f} µs right after a real session.run ({after_graph / warm:.2f}x)"
    )
    backend.session = backend.session._session
    print("batch 1, layer by layer (median ms, and over raw session.run):")
    for layer, timing in layers(handler, model).items():
        print(f"  {layer:64s} {timing}")


def layers(handler: ApiHandler, model: Any) -> dict[str, str]:
    """The bench's item-3 contenders with the layers between them, timed side by side (alternating blocks)."""
    texts = text_batches(1, 64)
    events = [infer_event("sentiment", "text", batch, "BYTES") for batch in texts]
    feeds = [tokenize(model.package.tokenizer_path, text_max_length(model.manifest), batch) for batch in texts]
    session = raw_session(model.package.graph_path, THREADS)
    app = handler.function.app
    undecorated = inspect.unwrap(handler.function.lambda_handler)
    # the v2 infer route's function as registered (the body read and validated inside it); the resolver keeps its
    # routes in private lists, and a probe may read them
    path = "/v2/models/sentiment/infer"
    infer = next(route.func for route in app._dynamic_routes if route.method == "POST" and route.rule.match(path))
    requests = [APIGatewayProxyEventV2(event) for event in events]

    def without_resolver(step: int) -> Any:
        BaseRouter.current_event = requests[step % 64]  # what `resolve` sets before it calls a route
        with contextlib.redirect_stdout(handler.sink):  # Powertools flushes its metrics every 100 values
            return infer(name="sentiment")

    def without_decorators(step: int) -> Any:
        with contextlib.redirect_stdout(handler.sink):
            return undecorated(events[step % 64], handler.context)

    timings = time_side_by_side(
        {
            "raw session.run, pre-tokenised (the bench's baseline)": lambda step: run_graph(session, feeds[step % 64]),
            "+ tokenising: ServedModel.score": lambda step: model.score(texts[step % 64]),
            "+ validation, v2 codec, metrics added: the route, no resolver": without_resolver,
            "+ Powertools resolver: undecorated": without_decorators,
            "+ Powertools logger, tracer, metrics decorators: as shipped": lambda step: handler(events[step % 64]),
        },
        iterations=1000,
        rounds=10,
    )
    raw = next(iter(timings.values())).median_ms
    return {name: f"{timing.median_ms:.3f} ({timing.median_ms / raw:.3f}x)" for name, timing in timings.items()}


def interleaved(timed: Callable[[int], Any], *, after: Callable[[int], Any]) -> tuple[float, float]:
    """Median seconds of `timed` right after itself, and right after `after`, in alternating blocks of 30 so that
    drift on a shared machine hits both alike (the first three blocks warm up)."""
    sides: dict[bool, list[float]] = {False: [], True: []}
    for block in range(40):
        for follows in (False, True):
            for step in range(30):
                if follows:
                    after(step)
                started = time.perf_counter()
                timed(step)
                if block >= 3:
                    sides[follows].append(time.perf_counter() - started)
    return statistics.median(sides[False]), statistics.median(sides[True])


class _Recorded:
    """A session whose `run` is a `RecordedRun`; everything else (inputs, outputs) is the real session's."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.run = RecordedRun(session)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


if __name__ == "__main__":
    main(sys.argv[1:])
