"""Status: for one stage, which items are fresh, which must be computed and why, which failed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .plan import StagePlan
from .store import Store


@dataclass
class StageStatus:
    stage: str
    fresh: int = 0
    to_compute: Counter = field(default_factory=Counter)  # reason -> count
    failed: Counter = field(default_factory=Counter)  # error type -> count
    blocked: int = 0
    note: str = ""  # dataset-level stages: what their own planning found

    def line(self) -> str:
        if self.note and not (self.fresh or self.to_compute or self.failed):
            return f"{self.stage:<12} {self.note}"
        todo = sum(self.to_compute.values())
        why = ", ".join(f"{n} {r}" for r, n in self.to_compute.most_common())
        failed = sum(self.failed.values())
        kinds = ", ".join(f"{n} {e}" for e, n in self.failed.most_common())
        parts = [f"{self.stage:<12} fresh {self.fresh:>6}", f"to compute {todo:>6}" + (f" ({why})" if why else "")]
        if failed:
            parts.append(f"failed {failed} ({kinds})")
        if self.blocked:
            parts.append(f"waiting on failed input {self.blocked}")
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)


def stage_status(store: Store, plan: StagePlan) -> StageStatus:
    stage = plan.stage
    status = StageStatus(stage.name, blocked=len(plan.blocked), note=plan.result.note if plan.result else "")
    committed = store.committed(stage.name)
    failures = store.failures(stage.name)
    latest = store.latest(stage.name)
    digest, config_digest = stage.digest(), stage.config_digest()
    for _, exc in plan.input_errors:
        status.failed[exc.kind] += 1
    for item_id, key in plan.keys.items():
        if key in committed:
            status.fresh += 1
        elif key in failures:
            status.failed[failures[key][1]] += 1
        elif item_id not in latest:
            status.to_compute["new item"] += 1
        else:
            old_key, old = latest[item_id]
            old_digest, _, old_config = old.partition("|")
            if old_key == key:
                status.to_compute["not computed yet"] += 1
            elif old_config != config_digest:
                status.to_compute["config change"] += 1
            elif old_digest != digest:
                status.to_compute["stage code or model change"] += 1
            else:
                status.to_compute["changed input"] += 1
    return status
