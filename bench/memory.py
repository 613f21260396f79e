"""A process's resident memory from /proc/<pid>/status: now, its high-water mark, and the peak while a block runs."""

from __future__ import annotations

import threading
from pathlib import Path

RSS_SAMPLE_S = 0.05


def _status_mb(field: str, pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | str = "self") -> float:
    return _status_mb("VmRSS", pid)


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's high-water RSS. Not ru_maxrss: Linux carries that across exec from the forked parent."""
    return _status_mb("VmHWM", pid)


class RssSampler:
    """Peak resident memory while a block runs (the high-water mark only knows the lifetime peak, init included)."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            self._stop.wait(RSS_SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
