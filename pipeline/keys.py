"""Content keys: xxh3-128 over canonical bytes; raw files hashed once and memoized.

A stage digest = hash(canonical JSON of stage name, version, source digest, output-shaping config,
extra identity such as model weights). An item's key in a stage = hash(stage digest, the item's input
digests): for a stage reading raw data, the hash of the raw bytes; for any other stage, the content
digest of the item's output in the upstream stage (``digest_record``, stored in the index when that
output is committed). So a raw change whose cleaned output is identical stops there: early cutoff.
No Python ``hash()``, no pickles: keys are stable across processes and machines.
"""

from __future__ import annotations

import json
import sqlite3
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import xxhash

from .gcpause import without_gc

CHUNK = 1 << 20


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def digest_lines(lines: Iterable[str], chunk: int = 8192) -> str:
    """``digest_bytes("\\n".join(lines).encode())``, joined and hashed ``chunk`` lines at a time, so hashing
    hundreds of thousands of keys never holds them all as one string (and its bytes) in memory."""
    h, it, first = xxhash.xxh3_128(), iter(lines), True
    while block := list(islice(it, chunk)):
        if not first:
            h.update(b"\n")
        h.update("\n".join(block).encode())
        first = False
    return h.hexdigest()


def digest_obj(obj: Any) -> str:
    return digest_bytes(canonical_json(obj).encode("utf-8"))


def digest_file(path: str | Path) -> str:
    from .fs import open_input

    h = xxhash.xxh3_128()
    with open_input(str(path)) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stage_key(stage_digest: str, inputs: Iterable[str]) -> str:
    """An item's key in a stage: the stage's identity (name, version, code, config) + its input digests.

    The parts are hex digests (raw ones prefixed ``file:`` / ``text:``), never containing ``|``, so
    joining them is unambiguous and costs no serialisation."""
    return xxhash.xxh3_128_hexdigest("|".join((stage_digest, *inputs)).encode("ascii"))


def key_maker(stage_digest: str):
    """``stage_key`` for one stage and one joined input string, without rebuilding the prefix per item."""
    prefix, hexdigest = stage_digest + "|", xxhash.xxh3_128_hexdigest
    return lambda joined: hexdigest((prefix + joined).encode("ascii"))


def digest_record(record: dict[str, Any]) -> str:
    """Content digest of one output record, canonical across processes and machines: per field in name
    order, its name, then for arrays the little-endian dtype, the shape and the raw bytes, for other
    values their canonical JSON."""
    import numpy as np

    h = xxhash.xxh3_128()
    for name in sorted(record):
        value = record[name]
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            h.update(canonical_json(["array", name, array.dtype.str, list(array.shape)]).encode("utf-8"))
            h.update(array.tobytes())
        else:
            if isinstance(value, np.generic):
                value = value.item()
            h.update(json.dumps(["value", name, value], sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


class RawHashMemo:
    """Memo of file content hashes keyed by (absolute path or URI, size, mtime_ns or version stamp).

    A no-op rerun stats files instead of rehashing them; any edit changes size or mtime_ns and
    forces a rehash.
    """

    def __init__(self, db_path: Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS raw_files (path TEXT PRIMARY KEY, size INTEGER, stamp TEXT, digest TEXT)"
        )
        self.memo = self._load()
        self.pending: list[tuple[str, int, int, str]] = []
        self.touched: set[str] | None = None  # a set: record every path looked up (``mmp gc`` prunes the rest)

    @without_gc
    def _load(self) -> dict[str, tuple[str, int, str, str]]:
        """path -> (path, size, stamp, digest): the rows as SQLite returns them (no copies)."""
        return {row[0]: row for row in self.db.execute("SELECT path, size, stamp, digest FROM raw_files")}

    def digest(self, path: str, size: int, stamp: str | int) -> str:
        """stamp: mtime_ns for local files; the store's version marker (mtime, ETag) for URIs."""
        key, stamp = str(path), str(stamp)
        if self.touched is not None:
            self.touched.add(key)
        known = self.memo.get(key)
        if known is not None and known[1] == size and known[2] == stamp:
            return known[3]
        value = digest_file(path)
        self.memo[key] = (key, size, stamp, value)
        self.pending.append((key, size, stamp, value))
        return value

    def digest_path(self, path: str | Path) -> str:
        p = Path(path).resolve()
        st = p.stat()
        return self.digest(str(p), st.st_size, st.st_mtime_ns)

    def stale(self) -> set[str]:
        """Remembered paths not looked up since ``touched`` was set (after planning every manifest: files
        no manifest or model names any more)."""
        return set(self.memo) - (self.touched or set())

    def prune(self) -> int:
        """Forget the stale paths; returns how many."""
        gone = self.stale()
        if gone:
            self.save()
            with self.db:
                self.db.executemany("DELETE FROM raw_files WHERE path = ?", [(p,) for p in gone])
            for path in gone:
                del self.memo[path]
        return len(gone)

    def save(self) -> None:
        if self.pending:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO raw_files VALUES (?, ?, ?, ?)", self.pending)
            self.pending.clear()

    def close(self) -> None:
        self.save()
        self.db.close()
