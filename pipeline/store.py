"""The cache: per stage, Parquet shards (``pipeline.shardfile``) plus a SQLite index of committed keys.

Layout under ``<workdir>/cache``::

    index.sqlite            shards (name, stage, checksum, rows), entries (stage, key -> shard, row, output
                            digest), failures (stage, key, item id, error, message), latest (stage, item
                            id -> key, config, upstream keys, note)
    <stage>/<checksum>.parquet   one shard: a ``key`` column and one column per output field

A shard is written to a temporary file, fsynced, renamed into place, and only then recorded in the
index in one transaction, together with each row's content digest (``keys.digest_record``, what keys
downstream are derived from): an item counts as done only once its shard and its digest are committed. A crash leaves at
most an orphan file, which the next run's cleanup (and ``gc``) removes. Every shard's xxh3 checksum is
kept in the index and checked whenever the shard is read; a mismatch drops the shard so its items are
recomputed, never silently read. A shard may also be written by another process (a Ray worker, with
``shardfile.to_parquet`` and the same atomic write) and then committed here with ``adopt_shard``.

Shards describe themselves (stage, stage digest, declared outputs, each row's input and output digests),
so ``maintenance.rebuild_index`` can recreate this index from them; ``maintenance.gc`` compacts.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable


from .errors import CacheCorruptError, StorageError
from .fs import Folder
from .gcpause import without_gc
from .keys import digest_bytes, digest_record
from .shardfile import decode_rows, encode, read_meta, to_parquet  # noqa: F401  (encode: re-exported)

SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, stage TEXT, checksum TEXT, rows INTEGER, bytes INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS entries (stage TEXT, key TEXT, shard TEXT, row INTEGER, digest TEXT, PRIMARY KEY (stage, key));
CREATE INDEX IF NOT EXISTS entries_by_shard ON entries (shard);
CREATE INDEX IF NOT EXISTS entries_digests ON entries (stage, key, digest);  -- committed(): one covering scan
CREATE TABLE IF NOT EXISTS failures (stage TEXT, key TEXT, item_id TEXT, error TEXT, message TEXT, permanent INTEGER,
                                     PRIMARY KEY (stage, key));
CREATE TABLE IF NOT EXISTS latest (stage TEXT, item_id TEXT, key TEXT, config TEXT, inputs TEXT, note TEXT,
                                   PRIMARY KEY (stage, item_id));
CREATE TABLE IF NOT EXISTS plans (stage TEXT PRIMARY KEY, digest TEXT, notes INTEGER);
"""
# Columns added since the first layout; an older index gets them (its keys no longer match: recomputed).
ADDED_COLUMNS = {"entries": ("digest",), "latest": ("inputs", "note")}


class Store:
    def __init__(self, workdir: str | Path, any_thread: bool = False, shard_root: str = ""):
        self.root = Path(workdir) / "cache"  # the index always lives here, on a local disk
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards = Folder(shard_root or str(self.root))  # shards: here, or under a URI (s3://, gs://, ...)
        self.db = sqlite3.connect(self.root / "index.sqlite", timeout=60, check_same_thread=not any_thread)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        self._tables: OrderedDict[str, Any] = OrderedDict()
        self._committed: dict[str, dict[str, str]] = {}  # stage -> {key -> output digest}, kept current

    # ---- queries -------------------------------------------------------------------------------
    @without_gc
    def committed(self, stage: str) -> dict[str, str]:
        """{key -> output digest} of a stage's committed entries (loaded once, kept current by commits)."""
        if stage not in self._committed:
            self._committed[stage] = dict(
                self.db.execute("SELECT key, digest FROM entries WHERE stage = ? AND digest IS NOT NULL", (stage,))
            )
        return self._committed[stage]

    def failures(self, stage: str) -> dict[str, tuple[str, str, str, bool]]:
        rows = self.db.execute("SELECT key, item_id, error, message, permanent FROM failures WHERE stage = ?", (stage,))
        return {k: (i, e, m, bool(p)) for k, i, e, m, p in rows}

    def refresh(self) -> None:
        """Forget what was loaded from the index (another connection may have dropped a shard)."""
        self._committed.clear()

    def latest(self, stage: str) -> dict[str, tuple[str, str, str, str]]:
        """item id -> (key, config digest, upstream keys, note) as last planned."""
        rows = self.db.execute("SELECT item_id, key, config, inputs, note FROM latest WHERE stage = ?", (stage,))
        return {i: (k, c, u or "", n or "") for i, k, c, u, n in rows}

    def locations(self, stage: str, keys: Iterable[str]) -> dict[str, tuple[str, int]]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, tuple[str, int]] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for key, shard, row in self.db.execute(
                f"SELECT key, shard, row FROM entries WHERE stage = ? AND key IN ({marks})", (stage, *chunk)
            ):
                found[key] = (shard, row)
        return found

    # ---- writes --------------------------------------------------------------------------------
    def commit_shard(self, stage: str, keys: list[str], records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
        """Write records as one shard and record their keys, atomically. Returns the shard name.

        ``meta``: what describes the rows (``stage_digest``, ``schema``, per-row ``inputs``); the rows'
        output digests are computed here, once, and go both into the file and into the index."""
        digests = [digest_record(r) for r in records]
        data = to_parquet(keys, records, {"stage": stage, **(meta or {}), "digests": digests})
        checksum = digest_bytes(data)
        name = f"{stage}/{checksum}.parquet"
        try:
            self._write_shard_file(stage, checksum, data)
            self._record_shard(stage, name, checksum, list(zip(keys, digests)), len(data))
        except (OSError, sqlite3.OperationalError) as exc:
            raise StorageError(
                f"cannot write the cache under {self.shards.root} ({type(exc).__name__}: {exc}); nothing of this shard "
                "was committed. Free space or fix permissions, then rerun: committed work is kept."
            ) from None
        return name

    def _write_shard_file(self, stage: str, checksum: str, data: bytes) -> None:
        self.shards.write_atomic(f"{stage}/{checksum}.parquet", data, f".{os.getpid()}.tmp")

    def _record_shard(self, stage: str, name: str, checksum: str, entries: list[tuple[str, str]], size: int) -> None:
        """The commit point: one transaction makes the shard's items, with their output digests
        (``entries``: [(key, digest)] in row order), count as done."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?)", (name, stage, checksum, len(entries), size, time.time())
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", [(stage, k, name, i, d) for i, (k, d) in enumerate(entries)]
            )
            self.db.executemany("DELETE FROM failures WHERE stage = ? AND key = ?", [(stage, k) for k, _ in entries])
        if stage in self._committed:
            self._committed[stage].update(entries)

    def adopt_shard(self, stage: str, name: str, checksum: str, entries: list[tuple[str, str]], size: int) -> None:
        """Commit a shard another process (a Ray worker) already wrote, with its rows' [(key, output digest)]:
        it must be in place and whole."""
        if self.shards.size(name) != size:
            raise StorageError(f"shard {self.shards.path(name)} written by a worker is missing or incomplete here: "
                               "cache.root must be storage that every node and the driver reach")
        try:
            self._record_shard(stage, name, checksum, entries, size)
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot write the cache index under {self.root} ({exc})") from None

    def checksums(self, stage: str) -> dict[str, str]:
        """Shard name -> recorded checksum, for one stage's shards."""
        return dict(self.db.execute("SELECT name, checksum FROM shards WHERE stage = ?", (stage,)).fetchall())

    def record_failures(self, stage: str, rows: list[tuple[str, str, str, str, bool]]) -> None:
        """rows: (key, item id, error type, message, permanent)."""
        if rows:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                    [(stage, k, i, e, m, int(p)) for k, i, e, m, p in rows],
                )

    def plan_state(self, stage: str) -> tuple[str, int]:
        """(digest of the last recorded plan of a stage, how many of its items carry a note)."""
        row = self.db.execute("SELECT digest, notes FROM plans WHERE stage = ?", (stage,)).fetchone()
        return (row[0], row[1]) if row else ("", 0)

    def set_latest(self, stage: str, rows: list[tuple[str, str, str, str, str]], plan: tuple[str, int]) -> None:
        """rows: (item id, key, config digest, upstream keys, note) as planned in this run (changed ones);
        ``plan``: (digest of the whole plan, number of items with a note), so an unchanged plan is
        recognised next time without comparing it item by item."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?, ?, ?)", [(stage, *r) for r in rows])
            self.db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?, ?)", (stage, *plan))

    # ---- reads ---------------------------------------------------------------------------------
    def table(self, name: str):
        """A shard as an Arrow table, checksum verified (a mismatch drops the shard: CacheCorruptError)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if name in self._tables:
            self._tables.move_to_end(name)
            return self._tables[name]
        row = self.db.execute("SELECT stage, checksum FROM shards WHERE name = ?", (name,)).fetchone()
        path = self.shards.path(name)
        try:
            data = self.shards.read(name)
        except FileNotFoundError:
            data = b""
        if row is None or digest_bytes(data) != row[1]:
            stage = row[0] if row else name.split("/")[0]
            dropped = self.drop_shard(name)
            raise CacheCorruptError(
                f"cache shard {path} is missing or fails its checksum; dropped its {dropped} entries of stage "
                f"'{stage}' so they are recomputed"
            )
        table = pq.read_table(pa.BufferReader(data))
        self._tables[name] = table
        while len(self._tables) > 2:
            self._tables.popitem(last=False)
        return table

    def read(self, stage: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Committed records for keys (all must be committed), grouped by shard for locality."""
        where = self.locations(stage, keys)
        missing = [k for k in keys if k not in where]
        if missing:
            raise KeyError(f"stage {stage}: {len(missing)} keys not committed, e.g. {missing[0]}")
        by_shard: dict[str, list[str]] = {}
        for k in dict.fromkeys(keys):
            by_shard.setdefault(where[k][0], []).append(k)
        out: dict[str, dict[str, Any]] = {}
        for shard, shard_keys in by_shard.items():
            table = self.table(shard)
            for k, rec in zip(shard_keys, decode_rows(table, [where[k][1] for k in shard_keys])):
                rec.pop("key", None)
                out[k] = rec
        return out

    def verify(self) -> list[str]:
        """Check every shard's checksum; drop bad ones. Returns messages for the dropped shards."""
        bad = []
        for (name,) in self.db.execute("SELECT name FROM shards").fetchall():
            try:
                self.table(name)
            except CacheCorruptError as exc:
                bad.append(str(exc))
        self._tables.clear()
        return bad

    # ---- maintenance ---------------------------------------------------------------------------
    def drop_shard(self, name: str) -> int:
        self._committed.clear()
        with self.db:
            n = self.db.execute("DELETE FROM entries WHERE shard = ?", (name,)).rowcount
            self.db.execute("DELETE FROM shards WHERE name = ?", (name,))
        self.shards.delete(name)
        self._tables.pop(name, None)
        return n

    def check_sizes(self) -> list[str]:
        """Cheap per-run check (one stat per shard): a missing or truncated shard is dropped so its items
        are recomputed. Bit flips are caught by the checksum whenever a shard is read."""
        messages = []
        for name, size in self.db.execute("SELECT name, bytes FROM shards").fetchall():
            actual = self.shards.size(name)
            if actual != size:
                dropped = self.drop_shard(name)
                state = "missing" if actual < 0 else f"{actual} bytes instead of {size}"
                messages.append(f"cache shard {name} is {state}; dropped its {dropped} entries so they are recomputed")
        return messages

    def remove_debris(self) -> int:
        """Delete temp files and shard files the index does not know (left by a crash)."""
        known = {n for (n,) in self.db.execute("SELECT name FROM shards")}
        removed = 0
        for name in self.shards.listing():
            if name.endswith(".tmp") or (name.endswith(".parquet") and name not in known):
                self.shards.delete(name)
                removed += 1
        return removed

    def close(self) -> None:
        self.db.close()
