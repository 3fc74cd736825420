"""One embedding space in memory: its faiss segments, key <-> id, and how raw vectors become searchable.

A space holds one L2-normalised float32 vector per feature key (items with identical content share a key,
so they share one vector) in ``IndexIDMap2(IndexFlatIP)`` segments: the inner product is the cosine and the
search is exact (every vector is compared). A space may standardize vectors before normalising (mean/std
fitted when it was built); queries go through the same ``prepare``. Ids are int64s derived from the keys
(the first 63 bits of their xxh3-128), stable across processes and rebuilds. faiss is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ID_MASK = (1 << 63) - 1


def key_id(key: str) -> int:
    """A stable int64 id for a feature key (keys are xxh3-128 hex digests)."""
    return int(key[:16], 16) & ID_MASK


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 first (random-weight CNN outputs are ~1e-11); zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1.0)).astype(np.float32)


@dataclass
class Space:
    """One loaded space: its segments (each an ``IndexIDMap2``; together they hold exactly the vectors of
    ``ids``, each once), key -> id, and the standardization (if any)."""

    name: str
    segments: list  # faiss.IndexIDMap2, as on disk: an update appends one, never copies the big one
    ids: dict[str, int]  # key -> id
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.segments[0].d

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Raw feature vectors (n, dim) -> what the index holds: standardized if the space is, unit length."""
        v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        if self.mean is not None:
            v = (v - self.mean) / self.std
        return normalized(v)

    def vector(self, key: str) -> np.ndarray:
        """The stored (prepared) vector of an indexed key."""
        fid = self.ids[key]
        for segment in self.segments:
            if segment.ntotal and np.isin(fid, ids_of(segment)):
                return segment.reconstruct(fid)
        raise KeyError(key)

    def scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines) of every indexed vector for one prepared query vector (exact: all are compared)."""
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        ids, scores = [], []
        for segment in self.segments:
            # Every cosine of unit vectors is > -2, so this range search returns all of them, unsorted —
            # 3-4x faster than a k = ntotal search, which keeps a heap of every result.
            _, found, labels = segment.range_search(q, -2.0)
            if labels.size != segment.ntotal:  # only if a stored vector were not unit length
                found, labels = (a[0] for a in segment.search(q, segment.ntotal))
            ids.append(labels)
            scores.append(found)
        return np.concatenate(ids), np.concatenate(scores)

    def stored_ids(self) -> np.ndarray:
        """Ids in the order ``scores`` returns them."""
        return np.concatenate([ids_of(segment) for segment in self.segments])

    def merged(self):
        """All segments as one index (for compaction)."""
        if len(self.segments) == 1:
            return self.segments[0]
        index = empty_index(self.dim)
        for segment in self.segments:
            if segment.ntotal:
                index.add_with_ids(segment.index.reconstruct_n(0, segment.ntotal), ids_of(segment))
        return index


def empty_index(dim: int):
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def ids_of(index) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)
