"""Planning: every item's key in every stage, decided from the manifest, raw-file stats and the index.

Nothing here decodes media or imports a deep-learning library, so a no-op run is fast. Dataset-level
stages are planned by their own ``run_dataset`` (see ``pipeline.dataset``); their plan holds its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .errors import ItemError
from .keys import RawHashMemo, digest_bytes, stage_key
from .manifest import Item, RawInput, resolve_path
from .stage import Stage, stage_class

RAW_PREFIX = "raw:"


def ancestors_and_self(targets: list[str]) -> list[str]:
    """Stages in dependency order that ``targets`` need (each stage after its inputs)."""
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in trail:
            raise ValueError(f"stage cycle: {' -> '.join(trail + (name,))}")
        for dep in stage_class(name).inputs:
            if not dep.startswith(RAW_PREFIX):
                visit(dep, trail + (name,))
        order.append(name)

    for t in targets:
        visit(t, ())
    return order


class RawResolver:
    """Raw inputs -> keys: inline text hashed directly, files hashed once per (path, size, mtime_ns)."""

    def __init__(self, memo: RawHashMemo, config: Config):
        self.memo = memo
        self.allow_outside = config["data"].allow_outside_root
        self.max_bytes = int(config["data"].max_file_mb * 1e6)

    def resolve(self, item: Item, modality: str) -> RawInput:
        if modality == "text" and item.text:
            return RawInput(key="text:" + digest_bytes(item.text.encode("utf-8")), text=item.text)
        raw = item.text_path if modality == "text" else getattr(item, modality)
        path, size, stamp = resolve_path(item, raw, self.allow_outside, self.max_bytes)
        return RawInput(key="file:" + self.memo.digest(path, size, stamp), path=path)


@dataclass
class StagePlan:
    stage: Stage
    keys: dict[str, str] = field(default_factory=dict)  # item id -> key
    payload: dict[str, Any] = field(default_factory=dict)  # key -> RawInput or upstream key
    input_errors: list[tuple[Item, ItemError]] = field(default_factory=list)  # raw inputs that cannot be read
    blocked: list[str] = field(default_factory=list)  # ids whose upstream has no output
    result: Any = None  # dataset-level stages: their DatasetResult once planned or run
    context: Any = None  # dataset-level stages: the DatasetContext they are planned and run with

    def ids_by_key(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item_id, key in self.keys.items():
            out.setdefault(key, []).append(item_id)
        return out


def plan_stage(
    stage: Stage,
    items: list[Item],
    available: dict[str, dict[str, str]],
    applies: dict[str, set[str]],
    raw: RawResolver,
) -> StagePlan:
    """Keys for the items a stage applies to.

    ``available``: upstream stage -> {item id -> key whose output exists (or will, in a dry plan)};
    ``applies``: upstream stage -> ids it was asked to process (so a missing output means it failed).
    """
    plan = StagePlan(stage)
    digest = stage.digest()
    source = stage.inputs[0]
    for item in items:
        if source.startswith(RAW_PREFIX):
            modality = source[len(RAW_PREFIX) :]
            if not item.has(modality):
                continue
            try:
                ref = raw.resolve(item, modality)
            except ItemError as exc:
                plan.input_errors.append((item, exc))
                continue
            key = stage_key(digest, [ref.key])
            plan.payload[key] = ref
        else:
            input_keys = [available[name].get(item.id) for name in stage.inputs]
            if any(k is None for k in input_keys):
                if any(item.id in applies[name] for name in stage.inputs):
                    plan.blocked.append(item.id)
                continue
            key = stage_key(digest, input_keys)
            plan.payload[key] = input_keys
        plan.keys[item.id] = key
    return plan
