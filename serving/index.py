"""Vector indexes for search: one exact faiss index per embedding space, kept under ``WORKDIR/index/``.

Contract:

- One space per modality (``text``, ``image``, ``audio``), as described in serving/space.py: exact cosine
  search over one normalised vector per feature key, int64 ids derived from the keys.
- Files: ``index.sqlite`` (the sidecar: per space its digest, dimension, statistics and segment files; per
  key its id) and ``<space>-<stamp>.faiss`` segments written with ``faiss.write_index`` (no pickle). A
  build writes one segment; an update writes only the added vectors as a new segment and deletes the
  removed keys from the sidecar. The sidecar is the truth: vectors of keys it no longer lists are dropped
  on load. When the segments hold many more rows than the live keys, or too many files, they are
  compacted into one. So an update costs in proportion to the change, not to the index.
- Commit protocol: a segment is written to a temporary file and ``os.replace``d into place, then one
  SQLite transaction makes it count. A crash leaves at most an unreferenced file, deleted next time.
- Nothing on disk is trusted blindly: a different digest (stage code, config or model), a missing,
  truncated or unreadable segment, or a sidecar that does not match the vectors loaded, rebuilds the
  space from the cache.
- Callers hold ``IndexFolder``'s file lock (``with IndexFolder(...)``) while they load and update, so
  concurrent searches and updates of one work directory take turns instead of corrupting it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .space import Space, empty_index, ids_of, key_id

FORMAT = 1
READ_CHUNK = 2048
MAX_SEGMENTS = 8
SLACK = 0.25  # compact when segments hold this fraction more rows than the live keys
SCHEMA = """
CREATE TABLE IF NOT EXISTS spaces (name TEXT PRIMARY KEY, digest TEXT, dim INTEGER, stats TEXT, segments TEXT);
CREATE TABLE IF NOT EXISTS keys (space TEXT, key TEXT, id INTEGER, PRIMARY KEY (space, key));
"""

Reader = Callable[[list[str]], np.ndarray]  # feature keys -> their vectors, one row each, same order


def space_digest(stage_digest: str, standardize: bool) -> str:
    """What a stored space must match: this file format, the feature stage's digest, the standardization."""
    return f"{FORMAT}|{stage_digest}|standardize={standardize}"


class Rebuild(Exception):
    """Internal: the stored space cannot be trusted (the message says why); build it again."""


class IndexFolder:
    """``WORKDIR/index``: the sidecar, the segments and the lock. Use as a context manager (takes the lock)."""

    def __init__(self, folder: str | Path, progress: bool = False, lock_timeout: float = 300.0):
        from filelock import FileLock

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.lock = FileLock(str(self.folder / ".lock"), timeout=lock_timeout)
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> "IndexFolder":
        from filelock import Timeout

        from pipeline.errors import LockBusyError

        try:
            self.lock.acquire()
        except Timeout:
            raise LockBusyError(f"the search index {self.folder} is being updated by another process; waited "
                                f"{self.lock.timeout:g} s. Try again when it has finished.") from None
        self.db = sqlite3.connect(self.folder / "index.sqlite", timeout=60)
        self.db.executescript(SCHEMA)
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()
        self.db = None
        self.lock.release()

    def drop(self) -> None:
        """Forget every space (the next sync rebuilds them)."""
        with self.db:
            self.db.execute("DELETE FROM spaces")
            self.db.execute("DELETE FROM keys")
        self._delete_unreferenced()

    # ---- sync ----------------------------------------------------------------------------------
    def sync(self, name: str, digest: str, keys: set[str], read: Reader, standardize: bool = False) -> tuple[Space | None, dict]:
        """Load space ``name`` and bring it to exactly ``keys``. Returns (space or None if empty, stats)."""
        digest = space_digest(digest, standardize)
        try:
            space = self.load(name, digest)
            live = set(space.ids) if space else set()
            added, removed = sorted(keys - live), sorted(live - keys)
            if added and space is None:  # the first vectors of an empty space: a build (fits any statistics)
                return self.build(name, digest, added, read, standardize), {"added": len(added), "removed": 0, "rebuilt": False}
            if added or removed:
                space = self.update(space, added, removed, read)
        except Rebuild as why:
            space = self.build(name, digest, sorted(keys), read, standardize)
            return space, {"added": space.size if space else 0, "removed": 0, "rebuilt": True, "reason": str(why)}
        return (space if space and space.size else None), {"added": len(added), "removed": len(removed), "rebuilt": False}

    def _row(self, name: str):
        return self.db.execute("SELECT digest, dim, stats, segments FROM spaces WHERE name = ?", (name,)).fetchone()

    def load(self, name: str, digest: str) -> Space | None:
        """The stored space (None if it holds no keys); raises Rebuild when it cannot be trusted."""
        import faiss

        row = self._row(name)
        if row is None:
            raise Rebuild("no index yet")
        stored, dim, stats, segments = row[0], row[1], json.loads(row[2]), json.loads(row[3])
        if stored != digest:
            raise Rebuild("the feature stage changed (code, config or model)")
        ids = {k: i for k, i in self.db.execute("SELECT key, id FROM keys WHERE space = ?", (name,))}
        if not ids:
            return None
        wanted = np.fromiter(ids.values(), np.int64, len(ids))
        loaded, present = [], np.empty(0, np.int64)
        for file, rows, size in segments:
            path = self.folder / file
            if not path.is_file() or path.stat().st_size != size:
                raise Rebuild(f"segment {file} is missing or truncated")
            try:
                segment = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise Rebuild(f"segment {file} is unreadable ({str(exc).splitlines()[0][:120]})") from None
            if not isinstance(segment, faiss.IndexIDMap2) or segment.ntotal != rows or segment.d != dim:
                raise Rebuild(f"segment {file} does not match the sidecar")
            seg_ids = ids_of(segment)
            # vectors of keys removed since (the sidecar no longer lists them), or held by an earlier segment
            # (a key removed and added again)
            drop = ~np.isin(seg_ids, wanted) | np.isin(seg_ids, present)
            if drop.any():
                segment.remove_ids(seg_ids[drop])
            loaded.append(segment)
            present = np.concatenate([present, seg_ids[~drop]])
        if present.size != len(ids) or not np.isin(wanted, present).all():
            raise Rebuild(f"the sidecar lists {len(ids)} keys but the segments hold {present.size} of them")
        mean, std = (np.asarray(stats["mean"]), np.asarray(stats["std"])) if stats else (None, None)
        return Space(name, loaded, ids, mean, std)

    def _vectors(self, keys: list[str], read: Reader, desc: str) -> np.ndarray:
        from tqdm import tqdm

        parts = []
        with tqdm(total=len(keys), desc=desc, unit="item", disable=None if self.progress else True, leave=False) as bar:
            for start in range(0, len(keys), READ_CHUNK):
                chunk = read(keys[start : start + READ_CHUNK])
                parts.append(np.asarray(chunk, dtype=np.float32).reshape(len(chunk), -1))
                bar.update(len(chunk))
        return np.concatenate(parts)

    def build(self, name: str, digest: str, keys: list[str], read: Reader, standardize: bool) -> Space | None:
        """Build the space from scratch (fitting the standardization), replacing whatever was stored."""
        if not keys:
            self._commit(name, digest, 0, None, [], replace_keys={})
            return None
        raw = self._vectors(keys, read, f"index {name} (build)")
        mean = std = None
        if standardize:
            spread = raw.astype(np.float64).std(0)
            mean, std = raw.astype(np.float64).mean(0), np.where(spread > 0, spread, 1.0)
        index = empty_index(raw.shape[1])
        space = Space(name, [index], {k: key_id(k) for k in keys}, mean, std)
        _check_unique(space.ids)
        index.add_with_ids(space.prepare(raw), np.fromiter(space.ids.values(), np.int64, len(keys)))
        segment = self._write_segment(name, index)
        stats = {"mean": mean.tolist(), "std": std.tolist()} if standardize else None
        self._commit(name, digest, space.dim, stats, [segment], replace_keys=space.ids)
        return space

    def update(self, space: Space, added: list[str], removed: list[str], read: Reader) -> Space:
        """Remove and add keys in memory and on disk (a segment of the added vectors + one sidecar transaction)."""
        if removed:
            gone = np.array([space.ids.pop(k) for k in removed], np.int64)
            for segment in space.segments:
                segment.remove_ids(gone)
        segments = json.loads(self._row(space.name)[3])
        new_ids = {}
        if added:
            raw = self._vectors(added, read, f"index {space.name} (+{len(added)})")
            if raw.shape[1] != space.dim:
                raise Rebuild(f"new vectors have {raw.shape[1]} dimensions, the index {space.dim}")
            new_ids = {k: key_id(k) for k in added}
            _check_unique({**space.ids, **new_ids})
            vectors, ids = space.prepare(raw), np.fromiter(new_ids.values(), np.int64, len(added))
            delta = empty_index(space.dim)
            delta.add_with_ids(vectors, ids)
            space.segments.append(delta)
            space.ids.update(new_ids)
            segments.append(self._write_segment(space.name, delta))
        if len(segments) > MAX_SEGMENTS or sum(s[1] for s in segments) > (1 + SLACK) * space.size + 64:
            space.segments = [space.merged()] if space.size else []
            segments = [self._write_segment(space.name, space.segments[0])] if space.size else []
        with self.db:
            self.db.executemany("DELETE FROM keys WHERE space = ? AND key = ?", [(space.name, k) for k in removed])
            self.db.executemany("INSERT INTO keys VALUES (?, ?, ?)", [(space.name, k, i) for k, i in new_ids.items()])
            self.db.execute("UPDATE spaces SET segments = ? WHERE name = ?", (json.dumps(segments), space.name))
        self._delete_unreferenced()
        return space

    def _write_segment(self, name: str, index) -> list:
        """Write atomically; returns [file, rows, bytes] for the sidecar (which commits it)."""
        import faiss

        file = f"{name}-{time.time_ns()}-{os.getpid()}.faiss"
        tmp = self.folder / f"{file}.tmp"
        faiss.write_index(index, str(tmp))
        os.replace(tmp, self.folder / file)
        return [file, int(index.ntotal), (self.folder / file).stat().st_size]

    def _commit(self, name: str, digest: str, dim: int, stats, segments: list, replace_keys: dict[str, int]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO spaces VALUES (?, ?, ?, ?, ?)",
                            (name, digest, dim, json.dumps(stats), json.dumps(segments)))
            self.db.execute("DELETE FROM keys WHERE space = ?", (name,))
            self.db.executemany("INSERT INTO keys VALUES (?, ?, ?)", [(name, k, i) for k, i in replace_keys.items()])
        self._delete_unreferenced()

    def _delete_unreferenced(self) -> None:
        """Segments no space lists and temp files (left by a crash or a replaced build)."""
        used = {s[0] for (segments,) in self.db.execute("SELECT segments FROM spaces") for s in json.loads(segments)}
        for path in self.folder.iterdir():
            if path.name.endswith((".faiss", ".faiss.tmp")) and path.name not in used:
                path.unlink(missing_ok=True)


def _check_unique(ids: dict[str, int]) -> None:
    if len(set(ids.values())) != len(ids):
        from pipeline.errors import SearchError

        seen: dict[int, str] = {}
        for key, i in ids.items():
            if i in seen:
                raise SearchError(f"feature keys {seen[i]} and {key} map to the same index id {i}; report this")
            seen[i] = key
