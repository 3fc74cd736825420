"""The Stage base class and the registry decorator.

A stage is a pure function over a batch: ``process(batch) -> outputs``, one output per input item,
each either a dict of fields or an ``ItemError``. Heavy libraries and models load lazily in
``setup()``, once per process (or per Ray actor), never at import time.

``inputs`` names what a stage consumes: ``raw:text`` / ``raw:image`` / ``raw:audio`` for raw manifest
data, or the names of upstream stages.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar

from .config import key_fields
from .errors import ItemError
from .keys import digest_bytes, digest_obj

STAGES: dict[str, type["Stage"]] = {}


def register(cls: type["Stage"]) -> type["Stage"]:
    if cls.name in STAGES:
        raise ValueError(f"stage {cls.name!r} registered twice")
    STAGES[cls.name] = cls
    return cls


class Stage:
    name: ClassVar[str]
    version: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    Config: ClassVar[type]
    # How many items one process() call gets; stages may override through a config field.
    default_batch_size: ClassVar[int] = 32
    # process_one() releases the GIL for most of its time (decoding, resizing): run items on threads.
    threaded: ClassVar[bool] = False
    # Needs the whole dataset (e.g. statistics over the train split): run by its own module, not planned per item.
    dataset_level: ClassVar[bool] = False
    # A folder under the work directory for files a stage derives once (e.g. converted model weights); set by
    # the workspace. None where no work directory is known (e.g. a Ray actor): the stage must not need it.
    model_dir: Path | None = None

    def __init__(self, config: Any):
        self.config = config
        self._ready = False
        self._digest: str | None = None

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
        return digest_obj(key_fields(self.config))

    def digest(self) -> str:
        """Everything about this stage that shapes its outputs: name, version, code, config, identity."""
        if self._digest is not None:
            return self._digest
        source = inspect.getsource(inspect.getmodule(type(self)))
        digest = digest_obj(
            {
                "stage": self.name,
                "version": self.version,
                "code": digest_bytes(source.encode("utf-8")),
                "config": key_fields(self.config),
                "identity": self.identity(),
            }
        )
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

    def describe_run(self) -> dict[str, Any]:
        """Facts worth printing in the run report (e.g. which weights were used)."""
        return {}
