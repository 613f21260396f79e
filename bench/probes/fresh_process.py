"""The parent's side of a probe: start `python -m bench.probes.<name>` in a new process and read its one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_probe(name: str, args: list[str], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The probe's last stdout line as JSON (`given` goes to its stdin as JSON); a failed probe raises with stderr."""
    command = [sys.executable, "-m", f"bench.probes.{name}", *args]
    stdin = json.dumps(given) if given is not None else None
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe {' '.join(command[2:])} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
