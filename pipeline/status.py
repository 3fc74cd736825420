"""Status: for one stage, which items are fresh, which must be computed and why, which failed; and
``record_plan``, which remembers each run's plan so the next status can explain what changed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from .errors import absent_kinds
from .keys import digest_lines
from .plan import StagePlan
from .store import Store


@dataclass
class StageStatus:
    stage: str
    fresh: int = 0
    reused: Counter = field(default_factory=Counter)  # fresh items with a note from the last run
    to_compute: Counter = field(default_factory=Counter)  # reason -> count
    failed: Counter = field(default_factory=Counter)  # error type -> count
    blocked: int = 0  # upstream failed
    no_input: Counter = field(default_factory=Counter)  # upstream had nothing to give (absent kind -> count)
    pending: int = 0  # upstream output still to compute: reused here if it comes out unchanged
    upstream: str = ""
    note: str = ""  # dataset-level stages: what their own planning found

    def line(self) -> str:
        if self.note and not (self.fresh or self.to_compute or self.failed):
            return f"{self.stage:<12} {self.note}"
        todo = sum(self.to_compute.values())
        why = ", ".join(f"{n} {r}" for r, n in self.to_compute.most_common())
        absent = absent_kinds()
        failed = sum(n for e, n in self.failed.items() if e not in absent)
        kinds = ", ".join(f"{n} {e}" for e, n in self.failed.most_common() if e not in absent)
        empty = ", ".join(f"{n} {e}" for e, n in self.failed.most_common() if e in absent)
        notes = ", ".join(f"{n} {r}" for r, n in self.reused.most_common())
        parts = [f"{self.stage:<12} fresh {self.fresh:>6}" + (f" ({notes})" if notes else ""),
                 f"to compute {todo:>6}" + (f" ({why})" if why else "")]
        if self.pending:
            parts.append(f"waiting on {self.upstream} {self.pending} (reused where its new output is unchanged)")
        if failed:
            parts.append(f"failed {failed} ({kinds})")
        if empty:
            parts.append(f"no output {empty} (not failures)")
        if self.blocked:
            parts.append(f"waiting on failed input {self.blocked}")
        if self.no_input:
            gaps = ", ".join(f"{n} {e}" for e, n in self.no_input.most_common())
            parts.append(f"no input {sum(self.no_input.values())} ({self.upstream}: {gaps}; not failures)")
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)


def stage_status(store: Store, plan: StagePlan) -> StageStatus:
    """Counts for one planned stage. An item whose upstream output is still to compute has no key yet:
    it is certainly computed when it is new here or this stage's config or code changed, and otherwise
    ``pending`` (reused if the upstream output comes out unchanged)."""
    stage = plan.stage
    status = StageStatus(stage.name, upstream=" / ".join(stage.inputs), note=plan.result.note if plan.result else "")
    _count_blocked(store, plan, status)
    committed = store.committed(stage.name)
    for _, exc in plan.input_errors:
        status.failed[exc.kind] += 1
    waiting = [(i, k) for i, k in plan.keys.items() if k not in committed]
    status.fresh = len(plan.keys) - len(waiting)
    notes = store.plan_state(stage.name)[1]
    if not (waiting or plan.pending or notes):
        return status  # all fresh, nothing to explain: the index need not be read item by item
    failures = store.failures(stage.name) if waiting else {}
    latest = store.latest(stage.name)
    digest, config_digest = stage.digest(), stage.config_digest()
    if notes:
        for item_id, key in plan.keys.items():
            old = latest.get(item_id)
            if key in committed and old is not None and old[3] and old[0] == key:
                status.reused[old[3]] += 1
    for item_id, key in waiting:
        old = latest.get(item_id)
        if key in failures:
            status.failed[failures[key][1]] += 1
        elif old is not None and old[0] == key:
            status.to_compute["not computed yet"] += 1
        else:
            status.to_compute[_why(old, digest, config_digest) or ("changed input" if stage.inputs[0].startswith("raw:")
                                                                    else "upstream output changed")] += 1
    for item_id in plan.pending:
        why = _why(latest.get(item_id), digest, config_digest)
        if why:
            status.to_compute[why] += 1
        else:
            status.pending += 1
    return status


def _count_blocked(store: Store, plan: StagePlan, status: StageStatus) -> None:
    """Split the items with no upstream output into those whose upstream failed and those whose upstream
    had nothing to give (an absent outcome such as NoWords: a voice note without speech)."""
    if not plan.blocked:
        return
    absent = absent_kinds()
    upstream = [(store.latest(name), store.failures(name)) for name in plan.stage.inputs if not name.startswith("raw:")]
    for item_id in plan.blocked:
        kinds = []
        for latest, failures in upstream:
            old = latest.get(item_id)
            failure = failures.get(old[0]) if old is not None else None
            if failure is not None:
                kinds.append(failure[1])
        if kinds and all(kind in absent for kind in kinds):
            status.no_input[kinds[0]] += 1
        else:
            status.blocked += 1


def _why(old: tuple[str, str, str, str] | None, digest: str, config_digest: str) -> str:
    """What certainly changed for an item against its last planned key ("" if nothing did here)."""
    if old is None:
        return "new item"
    old_digest, _, old_config = old[1].partition("|")
    if old_config != config_digest:
        return "config change"
    if old_digest != digest:
        return "stage code or model change"
    return ""


def record_plan(store: Store, plan: StagePlan, stats: dict[str, Any], before: set[str] | None = None) -> None:
    """Remember each item's key and inputs as planned now (``status`` explains changes against it).
    An item whose input keys changed while its key did not (the upstream output came out identical)
    was reused by early cutoff: counted in the report and noted for ``status`` until the next run.
    A plan equal to the last recorded one, with no notes to clear, is recognised by its digest alone.
    ``before``: the keys committed before this run (None: all of this plan's were)."""
    stage = plan.stage
    config = f"{stage.digest()}|{stage.config_digest()}"
    # ids, keys and inputs in one order (dicts keep insertion order; upstream is filled with keys)
    digest = digest_lines(chain([config], plan.keys, plan.keys.values(), plan.upstream.values()))
    if store.plan_state(stage.name) == (digest, 0):
        return
    latest = store.latest(stage.name)
    cutoff_note = f"reused: input changed, {stage.inputs[0]} output unchanged"
    rows, notes = [], 0
    for item_id, key in plan.keys.items():
        inputs = plan.upstream[item_id]
        old = latest.get(item_id)
        note = ""
        if old is not None and old[0] == key and old[2] != inputs and (before is None or key in before):
            note = cutoff_note
            notes += 1
        row = (key, config, inputs, note)
        if old != row:
            rows.append((item_id, *row))
    stats["cutoff"] += notes
    store.set_latest(stage.name, rows, (digest, notes))
