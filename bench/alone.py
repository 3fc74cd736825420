"""``python -m bench.NAME`` for one part of make bench: each recorded ratio printed as bench/run.py prints
it, then the part's figures as JSON (in a temporary folder, removed after)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def show(name: str, value: float, goal: float, detail: str) -> None:
    print(f"  {name:<44} {value:6.2f}x  (goal >= {goal}x)  {detail}", flush=True)


def run_alone(bench) -> None:
    """``bench(tmp, record)`` with ``show`` as its record; its returned figures printed as JSON."""
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench(Path(d), show), indent=2), flush=True)
