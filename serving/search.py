"""Similarity search over the manifest's items: find past tickets like a query (text, screenshot, voice
note, any mix) or like a known item.

``Searcher(ws, items)`` opens the per-modality indexes under ``WORKDIR/index/`` (serving/index.py) and
brings them up to date with the items' committed features — adding only new feature keys, removing keys
no item references, rebuilding a space whose files cannot be trusted. Queries are ``serving.query.Encoded``
(features computed in memory by the stages' own code); ``like`` uses an item's cached features.

Scores are cosines. With ``modality="all"`` an item's score is the mean cosine over the modalities present
in both the query and the item, weighted by the share of the query's modalities the item has — i.e. the
sum of its cosines divided by the number of query modalities, a modality the item lacks counting 0. An
item matching only the screenshot of a message+screenshot+voice query cannot outrank one that matches
all three about as well; an item with every query modality scores exactly the plain mean.
``"modalities"`` in each result gives the per-modality cosines that went into it. Scoring is exact: every
indexed vector is compared. Items with identical content share one vector and are returned together:
when the k-th result ties with the next ones, those come too, so a result can hold more than k rows.

The stable API (the HTTP service imports it): ``Searcher``, its ``search``, ``like``, ``item``,
``cleaned_text``, ``modalities`` and ``update_stats``. Errors are ``pipeline.errors.SearchError``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

import numpy as np

from pipeline.errors import CacheCorruptError, SearchError
from pipeline.manifest import Item
from stages.fuse import MODALITIES, feature_keys

from .index import IndexFolder
from .space import Space
from .query import Encoded

CHOICES = ("all", *MODALITIES)
STANDARDIZED = {"mfcc"}  # MFCC dimensions have wildly different scales; BERT and CNN vectors do not
# Threads per query: one exact search of one query is memory-bound, and on a small busy machine OpenMP
# threads cost more than they save (measured 4 ms vs 48 ms at 50,000 x 384 on 2 shared cores).
SEARCH_THREADS = int(os.environ.get("MMP_SEARCH_THREADS", "1"))


@dataclass
class _Table:
    """One space's layout: vector ids in the order the space stores (and scores) them, that order sorted,
    and for each (item, key) pair the item's row and the key's position in storage order."""

    ids: np.ndarray
    sorter: np.ndarray
    pair_item: np.ndarray
    pair_pos: np.ndarray

    def by_position(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores in storage order (as the space returns them, unless its layout changed)."""
        if np.array_equal(ids, self.ids):
            return scores
        out = np.empty(self.ids.size, np.float32)
        out[self.sorter[np.searchsorted(self.ids, ids, sorter=self.sorter)]] = scores
        return out


def problem(encoded: Encoded, modality: str) -> str:
    """Why a query has no features for a modality: 'image: ImageDecodeError: cannot decode ...' or 'not given'."""
    if modality not in encoded.errors:
        return f"{modality}: not given"
    error, message = encoded.errors[modality]
    return f"{modality}: {error}: {message.removeprefix(modality + ': ')}"


class Searcher:
    def __init__(self, ws, items: list[Item], *, progress: bool = False):
        import faiss

        faiss.omp_set_num_threads(SEARCH_THREADS)
        self.ws = ws
        self._items = {item.id: item for item in items}
        self._order = [item.id for item in items]
        self._row = {item_id: n for n, item_id in enumerate(self._order)}
        self._keys = self._feature_keys(items)  # modality -> {item id -> feature key}
        self._spaces: dict[str, Space] = {}
        self._tables: dict[str, _Table] = {}
        self._clean_keys: dict[str, str] | None = None
        self.update_stats: dict[str, dict] = {}
        with IndexFolder(ws.workdir / "index", progress=progress) as folder:
            for modality, stage in MODALITIES.items():
                by_item = self._keys.get(modality, {})
                space, stats = folder.sync(modality, ws.stage(stage).digest(), set(by_item.values()),
                                           self._reader(stage), standardize=stage in STANDARDIZED)
                self.update_stats[modality] = stats
                if space is not None:
                    self._spaces[modality] = space
                    self._tables[modality] = self._table(space, by_item)
        self.modalities: list[str] = [m for m in MODALITIES if m in self._spaces]

    def _feature_keys(self, items: list[Item]) -> dict[str, dict[str, str]]:
        return feature_keys(self.ws, items)

    def _reader(self, stage: str):
        def read(keys: list[str]) -> np.ndarray:
            records = self.ws.store.read(stage, keys)
            return np.stack([np.asarray(records[k][stage], np.float32).reshape(-1) for k in keys])

        return read

    def _table(self, space: Space, by_item: dict[str, str]) -> _Table:
        ids = space.stored_ids()
        sorter = np.argsort(ids)
        pairs = [(self._row[i], space.ids[k]) for i, k in by_item.items()]
        rows = np.array([r for r, _ in pairs], np.int64)
        positions = sorter[np.searchsorted(ids, np.array([i for _, i in pairs], np.int64), sorter=sorter)]
        return _Table(ids, sorter, rows, positions)

    # ---- queries -------------------------------------------------------------------------------
    def search(self, encoded: Encoded, k: int = 10, modality: str = "all", exclude: set[str] = frozenset()) -> list[dict]:
        """Items most similar to an encoded query, best first."""
        wanted = self._wanted(modality)
        given = {m: v for m, v in encoded.features.items() if m in wanted}
        if not given:
            reasons = "; ".join(problem(encoded, m) for m in wanted)
            raise SearchError(f"query {encoded.id!r} has no usable modality ({reasons})")
        usable = {m: v for m, v in given.items() if m in self._spaces}
        if not usable:
            raise self._not_indexed(list(given))
        vectors = {}
        for m, v in usable.items():
            space = self._spaces[m]
            if np.asarray(v).size != space.dim:
                raise SearchError(f"query {encoded.id!r}: its {m} vector has {np.asarray(v).size} dimensions, the "
                                  f"index {space.dim}; encode queries with the same config as the index")
            vectors[m] = space.prepare(v)[0]
        return self._rank(vectors, k, exclude)

    def like(self, item_id: str, k: int = 10, modality: str = "all") -> list[dict]:
        """Items most similar to a manifest item, from its cached features; the item itself is left out
        (other items with identical content are returned)."""
        if item_id not in self._items:
            close = difflib.get_close_matches(item_id, self._order, n=1)
            raise SearchError(f"unknown item id {item_id!r}: not in the manifest" + (f" (did you mean '{close[0]}'?)" if close else ""))
        wanted = self._wanted(modality)
        vectors = {m: self._spaces[m].vector(self._keys[m][item_id])
                   for m in wanted if m in self._spaces and item_id in self._keys.get(m, {})}
        if not vectors:
            raise SearchError(f"item {item_id!r} has no indexed {'' if modality == 'all' else modality + ' '}features "
                              "(its inputs are missing or failed; see 'mmp status')")
        return self._rank(vectors, k, {item_id})

    def item(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def cleaned_text(self, item_id: str) -> str | None:
        """The item's cleaned text from the clean_text cache (None if it has none or it is not computed).
        Reads through ``ws.store``, whose SQLite connection belongs to the thread that opened ``ws``."""
        if item_id not in self._items:
            return None
        if self._clean_keys is None:
            plans = self.ws.plan(["clean_text"], list(self._items.values()), dry=True)
            self._clean_keys = next(p.keys for p in plans if p.stage.name == "clean_text")
        key = self._clean_keys.get(item_id)
        if key is None:
            return None
        try:
            return self.ws.store.read("clean_text", [key])[key]["text"]
        except (KeyError, CacheCorruptError):
            return None

    # ---- scoring -------------------------------------------------------------------------------
    def _wanted(self, modality: str) -> list[str]:
        if modality not in CHOICES:
            raise SearchError(f"unknown modality {modality!r}; use one of {', '.join(CHOICES)}")
        if modality == "all":
            return list(MODALITIES)
        if modality not in self._spaces:
            raise self._not_indexed([modality])
        return [modality]

    def _not_indexed(self, modalities: list[str]) -> SearchError:
        have = ", ".join(f"{m} ({self._spaces[m].size} vectors)" for m in self.modalities) or "nothing"
        return SearchError(f"no items with {' or '.join(modalities)} features are indexed; run mmp features "
                           f"(indexed: {have})")

    def _rank(self, vectors: dict[str, np.ndarray], k: int, exclude) -> list[dict]:
        if k < 1:
            raise SearchError(f"k must be at least 1, not {k}")
        n = len(self._order)
        total, count = np.zeros(n), np.zeros(n, np.int64)
        per: dict[str, np.ndarray] = {}
        for m, query in vectors.items():
            table = self._tables[m]
            ids, scores = self._spaces[m].scores(query)
            by_key = table.by_position(ids, scores)
            per[m] = np.full(n, np.nan, np.float32)
            per[m][table.pair_item] = by_key[table.pair_pos]
            total[table.pair_item] += by_key[table.pair_pos]
            count[table.pair_item] += 1
        # mean over the shared modalities x the share of the query's modalities the item has
        mean = np.where(count > 0, total / max(len(vectors), 1), -np.inf)
        for item_id in exclude:
            if item_id in self._row:
                mean[self._row[item_id]] = -np.inf
        candidates = np.flatnonzero(np.isfinite(mean))
        if k < candidates.size:  # the k best, plus whatever ties with the k-th (identical content comes along)
            kth = -np.partition(-mean[candidates], k - 1)[k - 1]
            candidates = candidates[mean[candidates] >= kth]
        order = candidates[np.argsort(-mean[candidates], kind="stable")]  # ties keep manifest order
        return [self._result(r, mean[r], {m: s[r] for m, s in per.items() if not np.isnan(s[r])}) for r in order]

    def _result(self, row: int, score: float, parts: dict[str, float]) -> dict:
        item = self._items[self._order[row]]
        return {"id": item.id, "score": round(float(score), 6), "label": item.label, "split": item.split,
                "modalities": {m: round(float(s), 6) for m, s in parts.items()}}
