"""The shard buffer: computed records collected and committed as one shard at a row, size or time
threshold (``cache.shard_rows``, ``cache.shard_mb``, ``cache.flush_seconds``: the most work a crash can lose).
"""

from __future__ import annotations

import time
from typing import Any

from .config import Config
from .outputs import Field, schema
from .store import Store


def _nbytes(record: dict[str, Any]) -> int:
    return sum(v.nbytes if hasattr(v, "nbytes") else len(str(v)) for v in record.values())


class ShardBuffer:
    """Collects computed records (each with the input digests its key was derived from); commits a
    shard at a row, size or time threshold, with metadata describing its rows."""

    def __init__(self, store: Store, stage: str, config: Config, stage_digest: str = "",
                 spec: dict[str, Field] | None = None):
        cfg = config["cache"]
        self.store, self.stage = store, stage
        self.meta = {"stage_digest": stage_digest, "schema": schema(spec or {})}
        self.max_rows, self.max_bytes, self.max_seconds = cfg.shard_rows, cfg.shard_mb * 1e6, cfg.flush_seconds
        self.keys: list[str] = []
        self.inputs: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.bytes = 0
        self.since = time.monotonic()

    def add(self, key: str, record: dict[str, Any], inputs: str = "") -> None:
        self.keys.append(key)
        self.inputs.append(inputs)
        self.records.append(record)
        self.bytes += _nbytes(record)

    def maybe_flush(self) -> None:
        if (
            len(self.keys) >= self.max_rows
            or self.bytes >= self.max_bytes
            or time.monotonic() - self.since >= self.max_seconds
        ):
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self.store.commit_shard(self.stage, self.keys, self.records, {**self.meta, "inputs": self.inputs})
        self.keys, self.inputs, self.records, self.bytes, self.since = [], [], [], 0, time.monotonic()
