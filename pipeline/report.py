"""Run reports: per-stage counts and timings, per-item failures, stage facts; JSON + terminal summary."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import absent_kinds


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Report:
    def __init__(self, command: str, quiet: bool = False):
        self.started = time.time()
        self.data: dict[str, Any] = {
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "stages": {},
            "failures": [],
            "stage_errors": [],
            "warnings": [],
            "info": {},
        }
        self.show_progress = sys.stderr.isatty() and not quiet
        self._listed: dict[tuple[str, str, str], dict] = {}  # (item, error, message) -> its failure entry

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(
            name, {"computed": 0, "cached": 0, "failed": 0, "skipped": 0, "cutoff": 0, "seconds": 0.0}
        )

    def fail(self, stage: str, item_id: str, error: str, message: str, cached: bool = False) -> None:
        """An item outcome other than an output: a failure, or (for ``absent_kinds``, e.g. a voice note
        without speech) an item with no output here, counted per stage and type but not a failure."""
        if error in absent_kinds():
            counts = self.data.setdefault("no_output", {}).setdefault(stage, {})
            counts[error] = counts.get(error, 0) + 1
            return
        self.stage(stage)["failed"] += 1
        # One bad file read by two stages (clean_audio and transcribe, clean_image and ocr) fails both the
        # same way: it is listed once, naming the other stages in "also" (each stage still counts it).
        first = self._listed.get((item_id, error, message))
        if first is not None:
            first.setdefault("also", []).append(stage)
            return
        entry = {"stage": stage, "id": item_id, "error": error, "message": message}
        if cached:
            entry["cached"] = True
        self.data["failures"].append(entry)
        self._listed[(item_id, error, message)] = entry

    def restart(self) -> None:
        """Forget counts and failures of an attempt that is being replanned (warnings stay)."""
        self.data["stages"], self.data["failures"], self.data["stage_errors"] = {}, [], []
        self.data.pop("no_output", None)
        self._listed = {}

    def stage_error(self, stage: str, message: str, downstream: list[str]) -> None:
        """A stage that could not start (e.g. its model failed to load): its items stay to compute."""
        self.data["stage_errors"].append({"stage": stage, "message": message, "downstream_skipped": downstream})
        print(f"error: stage {stage} could not start: {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        self.data["warnings"].append(message)
        print(f"warning: {message}", file=sys.stderr)

    def info(self, stage: str, facts: dict[str, Any]) -> None:
        if facts:
            self.data["info"][stage] = facts

    def progress(self, stage: str, total: int):
        if not self.show_progress or total == 0:
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, desc=f"{stage:<12}", unit="item", dynamic_ncols=True, leave=False)

    @property
    def failed_count(self) -> int:
        return len(self.data["failures"])

    def write(self, workdir: Path) -> Path:
        runs = workdir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self.data["seconds"] = round(time.time() - self.started, 3)
        text = json.dumps(self.data, indent=2, ensure_ascii=False)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started))
        path = runs / f"{stamp}-{os.getpid()}.json"
        try:
            for target in (path, runs / "latest.json"):
                tmp = target.with_suffix(".tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, target)
        except OSError as exc:
            print(f"warning: could not write the run report to {runs}: {exc}", file=sys.stderr)
        return path

    def summary(self, max_failures: int = 20) -> str:
        lines = [f"{'stage':<12} {'computed':>9} {'cached':>8} {'failed':>7} {'skipped':>8} {'seconds':>8}"]
        for name, s in self.data["stages"].items():
            lines.append(
                f"{name:<12} {s['computed']:>9} {s['cached']:>8} {s['failed']:>7} {s['skipped']:>8} {s['seconds']:>8.2f}"
            )
        for name, s in self.data["stages"].items():
            if s.get("cutoff"):
                lines.append(f"{name}: {s['cutoff']} cached items reused although their input changed: the upstream "
                             "output came out identical (early cutoff)")
        for stage, counts in self.data.get("no_output", {}).items():
            lines.append(f"{stage}: no output for " + ", ".join(f"{n} item(s) ({kind})" for kind, n in counts.items()) +
                         ": not failures; downstream treats them as missing")
        for stage, facts in self.data["info"].items():
            lines.append(f"{stage}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
        for e in self.data["stage_errors"]:
            lines.append(f"STAGE ERROR [{e['stage']}]: {e['message']}")
            if e["downstream_skipped"]:
                lines.append(f"  skipped downstream for its items: {', '.join(e['downstream_skipped'])}")
        failures = self.data["failures"]
        if failures:
            lines.append(f"{len(failures)} item failure(s):")
            for f in failures[:max_failures]:
                mark = (" (known; input unchanged)" if f.get("cached") else "") + \
                    (f" (also {', '.join(f['also'])})" if f.get("also") else "")
                lines.append(f"  [{f['stage']}] {f['id']}: {f['error']}: {f['message']}{mark}")
            if len(failures) > max_failures:
                lines.append(f"  ... {len(failures) - max_failures} more in the JSON report")
        return "\n".join(lines)
