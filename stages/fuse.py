"""fuse: join each item's bert, cnn and mfcc vectors — and the embedded words of its voice note
(bert_speech) and screenshot (bert_screen) — into one row: a standardized block per modality plus a 0/1
mask per modality. A dataset-level stage: the runner plans and runs it after its inputs.

A missing modality (empty in the manifest, failed upstream, or no words in a note or screenshot) becomes
zeros with mask 0; ``missing = "drop"`` leaves out items missing a whole branch (``BRANCHES``: e.g. no
image and no screen text); both are counted in the run report. Standardization statistics are
fitted on the train split only (``stages.splits``), stored under ``WORKDIR/fuse/`` and copied next to
every trained model, so prediction reuses them (``run_fuse(..., stats=...)``). Fused rows are cached per
item like any stage, keyed by the content digests of the item's features and the statistics' digest
(itself a digest of the train items' feature digests): new val/test items are appended without
refitting; a changed train split refits the statistics (the report says so) and so recomputes every
row; a feature recomputed to the same values changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.dataset import DatasetContext, DatasetResult
from pipeline.errors import ConfigError
from pipeline.keys import digest_obj, stage_key
from pipeline.outputs import Field
from pipeline.stage import Stage, register

from .splits import with_splits

if TYPE_CHECKING:
    import numpy as np

# modality -> the feature stage that provides it. "speech" (what the voice note says) and "screen" (the text
# on the screenshot) are texts embedded by the [bert] model; each is a block with its own mask.
MODALITIES = {"text": "bert", "image": "cnn", "audio": "mfcc", "speech": "bert_speech", "screen": "bert_screen",
              # the same three texts in the [multilingual] model's space (Chinese and English alike)
              "text_ml": "multilingual", "speech_ml": "multilingual_speech", "screen_ml": "multilingual_screen"}
# The model's three branches and the blocks each one sees: the image branch the CNN vector and the screen
# text, the audio branch the MFCCs and the transcript. A branch is present when any of its blocks is.
BRANCHES = {"text": ("text", "text_ml"), "image": ("image", "screen", "screen_ml"), "audio": ("audio", "speech", "speech_ml")}
READ_BATCH = 512


@dataclass
class FuseConfig:
    # zeros: a missing modality is zeros with mask 0 | drop: items missing any of the three branches are left out
    missing: str = "zeros"
    standardize: bool = True
    # A dimension whose standard deviation is at or below this is only centred (divided by 1). Feature
    # scales vary wildly (a randomly initialized CNN's outputs are ~1e-11), so this is absolute and tiny.
    min_std: float = 0.0

    def validate(self) -> str | None:
        if self.missing not in ("zeros", "drop"):
            return f"missing must be zeros or drop, not {self.missing!r}"
        return None


@dataclass
class Stats:
    """Per-modality mean and std, fitted on train rows; ``digest`` names them in cache keys."""

    digest: str
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    train_ids: list[str]

    def save(self, folder: Path) -> Path:
        import numpy as np

        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"{k}_{m}": v for k, d in (("mean", self.mean), ("std", self.std)) for m, v in d.items()}
        np.savez(folder / "stats.npz", **arrays)
        (folder / "stats.json").write_text(json.dumps({"digest": self.digest, "train_ids": self.train_ids}))
        return folder

    @classmethod
    def load(cls, folder: Path) -> "Stats":
        import numpy as np

        meta = json.loads((folder / "stats.json").read_text())
        with np.load(folder / "stats.npz", allow_pickle=False) as z:
            mean = {m: z[f"mean_{m}"] for m in MODALITIES if f"mean_{m}" in z}
            std = {m: z[f"std_{m}"] for m in MODALITIES if f"std_{m}" in z}
        return cls(meta["digest"], mean, std, meta["train_ids"])


@dataclass
class Fused:
    """What fuse hands to later stages: the items kept (with their assigned split) and their keys."""

    kept: list[tuple[Any, str]]
    stats: Stats


@register
class Fuse(Stage):
    name = "fuse"
    version = "1"
    inputs = tuple(MODALITIES.values())
    Config = FuseConfig
    dataset_level = True

    def run_dataset(self, ctx: DatasetContext) -> DatasetResult:
        items = with_splits(ctx.items, ctx.config["train"])
        keys, ident = modality_keys(ctx.inputs), modality_digests(ctx)
        if ctx.dry:
            stats = find_stats(ctx, items, ident, self.config)
            if stats is None:
                return DatasetResult(note="statistics not fitted yet: fitted on the train split when fuse runs")
            kept, _, _, _ = plan_fuse(self, items, keys, ident, stats)
            return DatasetResult(keys={i.id: k for i, k in kept}, value=Fused(kept, stats))
        stats = fit_stats(ctx, items, keys, ident, self.config)
        latest = ctx.folder / "latest"
        if latest.is_file() and latest.read_text() != stats.digest and ctx.report is not None:
            old = Stats.load(ctx.folder / latest.read_text())
            added, removed = set(stats.train_ids) - set(old.train_ids), set(old.train_ids) - set(stats.train_ids)
            ctx.report.warn(f"fuse: the train split changed ({len(added)} train items added, {len(removed)} removed, or "
                            "their features changed): standardization refitted, every fused row recomputed")
        latest.parent.mkdir(parents=True, exist_ok=True)
        latest.write_text(stats.digest)
        return fuse_items(ctx, self, items, stats, fitted=True)


def modality_keys(inputs: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """modality -> {item id -> committed feature key}."""
    return {m: inputs.get(stage, {}) for m, stage in MODALITIES.items()}


def modality_digests(ctx: DatasetContext) -> dict[str, dict[str, str]]:
    """modality -> {item id -> content digest of its committed feature}: what fused keys derive from."""
    return {m: {i: ctx.digests[stage][k] for i, k in ctx.inputs.get(stage, {}).items()} for m, stage in MODALITIES.items()}


def feature_keys(ws, items) -> dict[str, dict[str, str]]:
    """modality -> {item id -> committed feature key}, as the index has them now."""
    return modality_keys(ws.dataset_context("fuse", items).inputs)


def _vectors(store, stage: str, keys: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for start in range(0, len(keys), READ_BATCH):
        chunk = keys[start : start + READ_BATCH]
        for k, rec in store.read(stage, chunk).items():
            out[k] = rec[stage]
    return out


def _stats_digest(items, ident: dict[str, dict[str, str]], cfg: FuseConfig) -> tuple[str, list[str]]:
    train = sorted(i.id for i in items if i.split == "train")
    if not train:
        raise ConfigError("fuse: no item has split 'train'; standardization needs training rows")
    membership = [[i, [ident[m].get(i) for m in MODALITIES]] for i in train]
    return digest_obj({"fuse": cfg.__dict__, "train": membership}), train


def find_stats(ctx: DatasetContext, items, ident, cfg: FuseConfig) -> Stats | None:
    """The statistics for this train split if they were fitted already (planning only: nothing is fitted)."""
    try:
        digest, _ = _stats_digest(items, ident, cfg)
    except ConfigError:
        return None
    folder = ctx.folder / digest
    return Stats.load(folder) if (folder / "stats.json").is_file() else None


def fit_stats(ctx: DatasetContext, items, keys: dict[str, dict[str, str]], ident, cfg: FuseConfig) -> Stats:
    import numpy as np

    digest, train = _stats_digest(items, ident, cfg)
    folder = ctx.folder / digest
    if (folder / "stats.json").is_file():
        return Stats.load(folder)
    mean, std = {}, {}
    for modality, stage in MODALITIES.items():
        present = [keys[modality][i] for i in train if i in keys[modality]]
        if not present:
            continue
        shift = total = sq = None
        unique = list(dict.fromkeys(present))
        for start in range(0, len(unique), READ_BATCH):  # streamed: memory bounded by one batch
            block = np.stack(list(_vectors(ctx.store, stage, unique[start : start + READ_BATCH]).values())).astype(np.float64)
            if shift is None:  # shifted sums: no cancellation when the mean dwarfs the spread
                shift = block.mean(0)
                total, sq = np.zeros_like(shift), np.zeros_like(shift)
            total += (block - shift).sum(0)
            sq += ((block - shift) ** 2).sum(0)
        n = len(unique)
        spread = np.sqrt(np.maximum(sq / n - (total / n) ** 2, 0))
        mean[modality] = (shift + total / n).astype(np.float32)
        std[modality] = np.where(spread > cfg.min_std, spread, 1.0).astype(np.float32)
        if not cfg.standardize:
            mean[modality][:] = 0
            std[modality][:] = 1
    stats = Stats(digest, mean, std, train)
    stats.save(folder)
    return stats


def plan_fuse(stage: Stage, items, keys: dict[str, dict[str, str]], ident: dict[str, dict[str, str]], stats: Stats):
    """Fused keys (from feature digests): (kept [(item, key)], {key: (item, feature keys to read, the
    digests the key derives from)}, missing counts, dropped count)."""
    dims = {m: v.shape[0] for m, v in stats.mean.items()}
    digest = digest_obj([stage.digest(), stats.digest])
    kept: list[tuple[Any, str]] = []
    todo: dict[str, tuple[Any, list[str | None], str]] = {}
    missing = {m: 0 for m in MODALITIES}
    dropped = 0
    for item in items:
        inputs = [keys[m].get(item.id) if m in dims else None for m in MODALITIES]
        for m, k in zip(MODALITIES, inputs):
            missing[m] += k is None
        present = {m for m, k in zip(MODALITIES, inputs) if k is not None}
        lacks_branch = any(not present & set(blocks) for blocks in BRANCHES.values())
        if not present or (stage.config.missing == "drop" and lacks_branch):
            dropped += 1
            continue
        joined = "|".join(ident[m][item.id] if k else "-" for m, k in zip(MODALITIES, inputs))
        key = stage_key(digest, (joined,))
        kept.append((item, key))
        todo.setdefault(key, (item, inputs, joined))
    return kept, todo, missing, dropped


def fused_record(vectors: dict[str, np.ndarray], stats: Stats) -> dict[str, Any]:
    """One item's fused row from its feature vectors (modality -> vector, absent ones left out): each
    modality the statistics know standardized, an absent one zeros; plus a 0/1 mask per modality.
    The batch run and the server both build rows with this."""
    import numpy as np

    record: dict[str, Any] = {}
    for m in MODALITIES:
        if m not in stats.mean:
            continue
        if m in vectors:
            record[m] = ((vectors[m] - stats.mean[m]) / stats.std[m]).astype(np.float32)
            record[f"{m}_mask"] = 1.0
        else:
            record[m], record[f"{m}_mask"] = np.zeros(stats.mean[m].shape[0], np.float32), 0.0
    return record


def fuse_items(ctx: DatasetContext, stage: Stage, items, stats: Stats, fitted: bool) -> DatasetResult:
    """Fused rows for every item (cached rows reused); the result's value is a ``Fused``."""
    kept, todo, missing, dropped = plan_fuse(stage, items, modality_keys(ctx.inputs), modality_digests(ctx), stats)
    committed = ctx.store.committed("fuse")
    cached = sum(1 for _, k in kept if k in committed)
    todo = {k: v for k, v in todo.items() if k not in committed}
    dims = {m: v.shape[0] for m, v in stats.mean.items()}
    spec = {field: spec for m in dims for field, spec in ((m, Field("float32", (dims[m],))), (f"{m}_mask", Field("float")))}
    buffer = ctx.buffer(digest_obj([stage.digest(), stats.digest]), spec)
    todo_keys = list(todo)
    for start in range(0, len(todo_keys), READ_BATCH):
        chunk = todo_keys[start : start + READ_BATCH]
        vectors = {}
        for i, (m, stage_name) in enumerate(MODALITIES.items()):
            wanted = [todo[k][1][i] for k in chunk if todo[k][1][i] is not None]
            vectors[m] = _vectors(ctx.store, stage_name, wanted) if wanted else {}
        for k in chunk:
            present = {m: vectors[m][fkey] for m, fkey in zip(MODALITIES, todo[k][1]) if fkey is not None}
            buffer.add(k, fused_record(present, stats), todo[k][2])
        buffer.maybe_flush()
    buffer.flush()
    if ctx.report is not None:
        ctx.report.data["fuse"] = {
            "missing_modality": missing,
            "policy": stage.config.missing,
            "dropped": dropped,
            "statistics": ("fitted" if fitted else "from model") + f" on {len(stats.train_ids)} train items",
            "modalities": sorted(dims),
        }
    computed = sum(1 for _, k in kept if k in todo)
    return DatasetResult(keys={i.id: k for i, k in kept}, value=Fused(kept, stats), computed=computed, cached=cached)


def run_fuse(ws, items, report, stats: Stats | None = None) -> tuple[list[tuple[Any, str]], Stats]:
    """Fuse items outside a planned run (e.g. new items with a trained model's statistics); returns
    [(item, fused key)] for the items kept, and the statistics used. Counts go to the report's fuse row."""
    import time

    started = time.monotonic()
    ctx = ws.dataset_context("fuse", items, report)
    stage = ws.stage("fuse")
    if stats is None:
        result = stage.run_dataset(ctx)
    else:
        result = fuse_items(ctx, stage, items, stats, fitted=False)
    row = report.stage("fuse")
    row["computed"] += result.computed
    row["cached"] += result.cached
    row["seconds"] = round(row["seconds"] + time.monotonic() - started, 3)
    return result.value.kept, result.value.stats


def load_fused(ws, kept: list[tuple[Any, str]]) -> dict[str, np.ndarray]:
    """Arrays for the kept items, in order: one per modality block and mask."""
    import numpy as np

    cols: dict[str, list] = {}
    keys = [k for _, k in kept]
    for start in range(0, len(keys), READ_BATCH):
        chunk = keys[start : start + READ_BATCH]
        records = ws.store.read("fuse", chunk)
        for k in chunk:
            for name, value in records[k].items():
                cols.setdefault(name, []).append(value)
    return {name: np.asarray(values, dtype=np.float32) for name, values in cols.items()}
