"""What a dataset-level stage sees and returns.

The runner plans a dataset-level stage (``Stage.dataset_level``) like any other: after its inputs, in
dependency order, in the same run. It calls ``stage.run_dataset(ctx)`` once with every item's
committed upstream keys and their output digests (what its own keys should be derived from); the stage computes what it must, reuses what it can
(per-item rows through ``ctx.buffer()`` and the store, or a folder of its own under
``ctx.folder``), and returns a ``DatasetResult``: the per-item keys it holds (empty for a stage whose
output is a folder, like ``train``), a value later dataset-level stages read from ``ctx.results``, and
facts for the run report. With ``ctx.dry`` set (``status``, ``export``, ``gc``) it must only plan:
return what it would hold without computing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config
    from .manifest import Item
    from .report import Report
    from .store import Store


@dataclass
class DatasetResult:
    keys: dict[str, str] = field(default_factory=dict)  # item id -> key of the per-item row it holds
    value: Any = None  # for later dataset-level stages (e.g. fuse -> its statistics)
    note: str = ""  # one line for ``status`` (e.g. "model 3fa1... is up to date")
    computed: int = 0  # rows (or models) computed in this call
    cached: int = 0  # rows (or models) reused


@dataclass
class DatasetContext:
    name: str
    items: list["Item"]
    config: "Config"
    store: "Store"
    workdir: Path
    inputs: dict[str, dict[str, str]]  # upstream stage -> {item id -> committed key}
    digests: dict[str, dict[str, str]]  # upstream stage -> {key -> content digest of that output}
    results: dict[str, DatasetResult]  # earlier dataset-level stages of this run or plan
    report: "Report | None" = None  # None in a dry plan
    dry: bool = False
    force: bool = False  # recompute even if the output exists (mmp train --force)
    make_buffer: Any = None  # (stage digest, output spec) -> a ShardBuffer for this stage's per-item rows

    @property
    def folder(self) -> Path:
        """WORKDIR/<stage>/: where a dataset-level stage keeps files of its own."""
        return self.workdir / self.name

    def buffer(self, stage_digest: str, spec: dict[str, Any]):
        """Where per-item rows go: ``add(key, record, inputs)``, ``maybe_flush()``, ``flush()``;
        ``stage_digest`` and ``spec`` describe the rows in the shard metadata."""
        return self.make_buffer(stage_digest, spec)

    def input_digest(self, stage: str, item_id: str) -> str | None:
        """The content digest of an item's committed output in an upstream stage (None: no output)."""
        key = self.inputs.get(stage, {}).get(item_id)
        return None if key is None else self.digests[stage][key]
