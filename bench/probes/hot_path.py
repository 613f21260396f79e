"""The batch-1 hot path, profiled: what the API handler does around `session.run` for one sentiment request.

`python -m bench.probes.hot_path [calls]` serves the approved packages exactly as the bench does, swaps the
sentiment session's `run` for one that returns a recorded answer (so the profile is the handler's own work, not
the graph), and prints the handler's own microseconds per request, then pyinstrument's call tree of those calls.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pyinstrument import Profiler

from bench.contenders import ApiHandler, infer_event
from bench.inputs import text_batches
from bench.packages import APPROVED_DIR, approved_packages


class RecordedRun:
    """`session.run` stand-in: the real session's answer for the first feed, returned for every call."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.answer: Any = None

    def __call__(self, output_names: Any, feeds: Any, run_options: Any = None) -> Any:
        if self.answer is None:
            self.answer = self.session.run(output_names, feeds, run_options)
        return self.answer


def main(argv: list[str]) -> None:
    numbers = [word for word in argv if word.isdigit()]
    calls = int(numbers[0]) if numbers else 3000
    handler = ApiHandler(approved_packages(APPROVED_DIR), threads=1)
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


class _Recorded:
    """A session whose `run` is a `RecordedRun`; everything else (inputs, outputs) is the real session's."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.run = RecordedRun(session)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


if __name__ == "__main__":
    main(sys.argv[1:])
