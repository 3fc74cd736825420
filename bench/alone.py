"""``python -m bench.NAME`` for one part of make bench: each recorded ratio printed as bench/run.py prints
it, then the part's figures as JSON (in a temporary folder, removed after)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def run_alone(bench) -> None:
    """``bench(tmp, record)`` with bench/run.py's ``record``; its returned figures printed as JSON."""
    from bench.run import record

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(bench(Path(d), record), indent=2), flush=True)
