"""The Stage base class, the stage registry, and how one batch is run.

A per-item stage is a pure function over a batch: ``process(batch) -> outputs``, one output per input
item, each either a dict of fields or an exception (an ``ItemError`` names what is wrong with the item).
Heavy libraries and models load lazily in ``setup()``, once per process (or per Ray actor), never at
import time. ``holds_model`` marks stages whose setup loads a model worth keeping alive between batches
(executors give them long-lived workers).

A dataset-level stage (``dataset_level = True``, e.g. ``fuse``, ``train``) needs every item's upstream
output at once; the runner plans it after its inputs and calls ``run_dataset(ctx)`` (see
``pipeline.dataset``), which computes or reuses its output and returns the per-item keys it holds.

``inputs`` names what a stage consumes: ``raw:text`` / ``raw:image`` / ``raw:audio`` for raw manifest
data, or the names of upstream stages. Stages register themselves with ``@register`` when their module
is imported; registering also adds the stage's ``Config`` as a config section — unless the stage reads
another stage's section (``config_section``, e.g. ``bert_speech`` runs the ``[bert]`` model on
transcripts). ``uses`` names further sections whose settings shape the outputs (e.g. ``transcribe``
cleans its text with ``[clean_text]``): they are handed to the stage and enter its key. Build stage
objects with ``build_stage(name, config)``. The core never imports a stage module: the CLI does
(``import stages``).
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .config import key_fields, register_section
from .errors import UnknownStageError
from .keys import digest_bytes, digest_obj
from .outputs import Field

if TYPE_CHECKING:
    from .dataset import DatasetContext, DatasetResult

STAGES: dict[str, type["Stage"]] = {}


def register(cls: type["Stage"]) -> type["Stage"]:
    if cls.name in STAGES:
        raise ValueError(f"stage {cls.name!r} registered twice")
    STAGES[cls.name] = cls
    if cls.config_section is None:
        register_section(cls.name, cls.Config)
    return cls


def build_stage(name: str, config: Any) -> "Stage":
    """A stage object for ``name`` from a whole ``Config``: its own section plus the ones it ``uses``."""
    cls = stage_class(name)
    return cls(config[cls.section()], {section: config[section] for section in cls.uses})


def stage_class(name: str) -> type["Stage"]:
    """The registered stage called ``name``; ``UnknownStageError`` (with a did-you-mean) otherwise."""
    try:
        return STAGES[name]
    except KeyError:
        raise UnknownStageError(name, list(STAGES)) from None


def downstream(name: str) -> list[str]:
    """Every registered stage that consumes ``name``'s outputs, directly or not."""
    below = [s for s, cls in STAGES.items() if name in cls.inputs]
    return below + [d for s in below for d in downstream(s) if d not in below]


class Stage:
    name: ClassVar[str]
    version: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    Config: ClassVar[type]
    # How many items one process() call gets; stages may override through a config field.
    default_batch_size: ClassVar[int] = 32
    # process_one() releases the GIL for most of its time (decoding, resizing): run items on threads.
    threaded: ClassVar[bool] = False
    # setup() loads a model: executors keep such a stage alive in a long-lived worker (a Ray actor).
    holds_model: ClassVar[bool] = False
    # Needs the whole dataset (statistics over the train split, training): run_dataset() instead of process().
    dataset_level: ClassVar[bool] = False
    # Keeps one cached row per item (False for a stage whose output is a folder, e.g. a trained model).
    per_item_rows: ClassVar[bool] = True
    # A folder under the work directory for files a stage derives once (e.g. converted model weights); set by
    # the workspace. None where no work directory is known (e.g. a Ray actor): the stage must not need it.
    model_dir: Path | None = None
    # What each output record holds (see pipeline.outputs); output_spec() when it depends on config or model.
    outputs: ClassVar[dict[str, Field]] = {}
    # The config section this stage reads when it is not its own (stages sharing one model and its settings).
    config_section: ClassVar[str | None] = None
    # Other config sections whose settings shape this stage's outputs (in its key; ``self.used[name]``).
    uses: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, used: dict[str, Any] | None = None):
        self.config = config
        self.used = dict(used or {})
        missing = [s for s in self.uses if s not in self.used]
        if missing:
            raise ValueError(f"stage {self.name} needs config section(s) {missing}: build it with build_stage()")
        self._ready = False
        self._digest: str | None = None

    @classmethod
    def section(cls) -> str:
        """The config section holding this stage's settings."""
        return cls.config_section or cls.name

    @property
    def batch_size(self) -> int:
        return int(getattr(self.config, "batch_size", self.default_batch_size))

    def identity(self) -> dict[str, Any]:
        """Extra key material beyond the config (e.g. a digest of model weights). Cheap; no model load.

        ``self.digest_file`` (path -> content hash, memoized by size and mtime) is set by the workspace.
        """
        return {}

    @staticmethod
    def digest_file(path: str) -> str:
        from .keys import digest_file

        return digest_file(path)

    def config_digest(self) -> str:
        if self.used:
            return digest_obj([key_fields(self.config), {n: key_fields(c) for n, c in sorted(self.used.items())}])
        return digest_obj(key_fields(self.config))

    def digest(self) -> str:
        """Everything about this stage that shapes its outputs: name, version, code, config, identity."""
        if self._digest is not None:
            return self._digest
        source = inspect.getsource(inspect.getmodule(type(self)))
        parts = {
            "stage": self.name,
            "version": self.version,
            "code": digest_bytes(source.encode("utf-8")),
            "config": key_fields(self.config),
            "identity": self.identity(),
        }
        if self.used:  # (absent otherwise: keys of stages that use no other section stay as they were)
            parts["uses"] = {name: key_fields(section) for name, section in sorted(self.used.items())}
        digest = digest_obj(parts)
        self._digest = digest
        return digest

    def ensure_ready(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def setup(self) -> None:
        """Load libraries and models. Called once before the first batch."""

    def process(self, batch: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """Default: ``process_one`` per item (on a thread pool when ``threaded``); errors stay per item."""
        if self.threaded and len(batch) > 1:
            if getattr(self, "_pool", None) is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix=self.name)
            return list(self._pool.map(self._one, batch))
        return [self._one(record) for record in batch]

    def _one(self, record: dict[str, Any]) -> dict[str, Any] | Exception:
        try:
            return self.process_one(record)
        except Exception as exc:  # noqa: BLE001 - per-item failures are data; the runner names them
            return exc

    def process_one(self, record: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def run_dataset(self, ctx: "DatasetContext") -> "DatasetResult":
        """Dataset-level stages only: compute or reuse the output from every item's upstream outputs."""
        raise NotImplementedError(f"stage {self.name} is not dataset-level")

    def output_spec(self) -> dict[str, Field]:
        """The declared output fields. Called on the driver, set up or not (a Ray run sets up workers only)."""
        return dict(self.outputs)

    def describe_run(self) -> dict[str, Any]:
        """Facts worth printing in the run report (e.g. which weights were used)."""
        return {}


def call_isolated(stage: Stage, records: list[dict[str, Any]]) -> list[Any]:
    """Run a batch; if the batch call itself breaks, run item by item so one bad item fails alone."""
    try:
        outputs = stage.process(records)
        if len(outputs) != len(records):
            raise RuntimeError(f"stage {stage.name} returned {len(outputs)} outputs for {len(records)} inputs")
        return outputs
    except Exception:  # noqa: BLE001 - retried item by item below
        if len(records) == 1:
            return [sys.exc_info()[1]]
    outputs = []
    for record in records:
        try:
            outputs.extend(stage.process([record]))
        except Exception as exc:  # noqa: BLE001 - any per-item failure becomes data
            outputs.append(exc)
    return outputs
