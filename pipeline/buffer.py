"""The shard buffer: computed records collected and committed as one shard at a row, size or time
threshold (``cache.shard_rows``, ``cache.shard_mb``, ``cache.flush_seconds``: the most work a crash can lose).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .config import Config
from .store import Store


def _nbytes(record: dict[str, Any]) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else len(str(v)) for v in record.values())


class ShardBuffer:
    """Collects computed records; commits a shard at a row, size or time threshold."""

    def __init__(self, store: Store, stage: str, config: Config):
        cfg = config["cache"]
        self.store, self.stage = store, stage
        self.max_rows, self.max_bytes, self.max_seconds = cfg.shard_rows, cfg.shard_mb * 1e6, cfg.flush_seconds
        self.keys: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.bytes = 0
        self.since = time.monotonic()

    def add(self, key: str, record: dict[str, Any]) -> None:
        self.keys.append(key)
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
            self.store.commit_shard(self.stage, self.keys, self.records)
        self.keys, self.records, self.bytes, self.since = [], [], 0, time.monotonic()
