"""Planning: every item's key in every stage, decided from the manifest, raw-file stats and the index.

Nothing here decodes media or imports a deep-learning library, so a no-op run is fast. Dataset-level
stages are planned by their own ``run_dataset`` (see ``pipeline.dataset``); their plan holds its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .errors import ItemError
from .gcpause import without_gc
from .keys import RawHashMemo, digest_bytes, key_maker, stage_key
from .manifest import Item, RawInput
from .paths import PathResolver
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
        self.paths = PathResolver(config["data"].allow_outside_root, int(config["data"].max_file_mb * 1e6))

    def resolve(self, item: Item, modality: str) -> RawInput:
        if modality == "text":
            if item.text:
                return RawInput("text:" + digest_bytes(item.text.encode("utf-8")), item.text, None)
            raw = item.text_path
        else:
            raw = getattr(item, modality)
        path, size, stamp = self.paths.resolve(item.base, item.root, raw)
        return RawInput("file:" + self.memo.digest(path, size, stamp), None, path)


@dataclass
class StagePlan:
    stage: Stage
    keys: dict[str, str] = field(default_factory=dict)  # item id -> key
    payload: dict[str, Any] = field(default_factory=dict)  # key -> RawInput or upstream keys (to read inputs)
    upstream: dict[str, str] = field(default_factory=dict)  # item id -> its input keys, "|"-joined (for notes)
    input_digests: dict[str, str] = field(default_factory=dict)  # key -> the digests it derives from, "|"-joined
    input_errors: list[tuple[Item, ItemError]] = field(default_factory=list)  # raw inputs that cannot be read
    blocked: list[str] = field(default_factory=list)  # ids whose upstream failed (no output)
    pending: list[str] = field(default_factory=list)  # dry plans: ids whose upstream output is still to compute
    result: Any = None  # dataset-level stages: their DatasetResult once planned or run
    context: Any = None  # dataset-level stages: the DatasetContext they are planned and run with

    def ids_by_key(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item_id, key in self.keys.items():
            out.setdefault(key, []).append(item_id)
        return out


@without_gc
def plan_stage(
    stage: Stage,
    items: list[Item],
    available: dict[str, dict[str, str]],
    digests: dict[str, dict[str, str]],
    applies: dict[str, set[str]],
    unresolved: dict[str, set[str]],
    raw: RawResolver,
) -> StagePlan:
    """Keys for the items a stage applies to.

    ``available``: upstream stage -> {item id -> key whose output is committed};
    ``digests``: upstream stage -> {key -> content digest of that output} (the key's input here);
    ``applies``: upstream stage -> ids it was asked to process (so a missing output means it failed);
    ``unresolved``: upstream stage -> ids with no output and no known failure (dry plans only: their
    output is still to compute, so the key here cannot be known yet: ``pending``).
    """
    plan = StagePlan(stage)
    digest = stage.digest()
    source = stage.inputs[0]
    if source.startswith(RAW_PREFIX):
        modality = source[len(RAW_PREFIX) :]
        make_key = key_maker(digest)
        named = [i for i in items if i.text or i.text_path] if modality == "text" else [i for i in items if getattr(i, modality)]
        keys, payload, inputs, upstream, resolve = plan.keys, plan.payload, plan.input_digests, plan.upstream, raw.resolve
        for item in named:
            try:
                ref = resolve(item, modality)
            except ItemError as exc:
                plan.input_errors.append((item, exc))
                continue
            key = make_key(ref.key)
            payload[key] = ref
            inputs[key] = ref.key
            keys[item.id] = key
            upstream[item.id] = ref.key
        return plan
    names = stage.inputs
    have = [available[name] for name in names]
    outputs = [digests[name] for name in names]
    if len(names) == 1:
        return _plan_one_input(plan, items, names[0], available, digests, applies, unresolved, key_maker(digest))
    for item in items:
        item_id = item.id
        input_keys = [h.get(item_id) for h in have]
        if None in input_keys:
            if any(item_id in unresolved.get(name, ()) for name in names):
                plan.pending.append(item_id)
            elif any(k is None and item_id in applies[name] for k, name in zip(input_keys, names)):
                plan.blocked.append(item_id)
            continue
        joined = "|".join([d[k] for d, k in zip(outputs, input_keys)])
        key = stage_key(digest, (joined,))
        plan.payload[key] = input_keys
        plan.input_digests[key] = joined
        plan.keys[item_id] = key
        plan.upstream[item_id] = "|".join(input_keys)
    return plan


def _plan_one_input(plan: StagePlan, items: list[Item], name: str, available, digests, applies, unresolved, make_key) -> StagePlan:
    """``plan_stage`` for the common case of one upstream stage, without per-item lists."""
    have, outputs = available[name], digests[name]
    applied, waiting = applies.get(name, set()), unresolved.get(name, set())
    if not applied:
        return plan  # the upstream stage applies to no item, so neither does this one
    keys, payload, inputs, upstream = plan.keys, plan.payload, plan.input_digests, plan.upstream
    for item in items:
        item_id = item.id
        upstream_key = have.get(item_id)
        if upstream_key is None:
            if item_id in waiting:
                plan.pending.append(item_id)
            elif item_id in applied:
                plan.blocked.append(item_id)
            continue
        joined = outputs[upstream_key]
        key = make_key(joined)
        payload[key] = [upstream_key]
        inputs[key] = joined
        keys[item_id] = key
        upstream[item_id] = upstream_key
    return plan
