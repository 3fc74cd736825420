"""Similarity search over the manifest's items: find past tickets like a query (text, screenshot, voice
note, any mix) or like a known item.

``Searcher(ws, items)`` opens the per-space indexes under ``WORKDIR/index/`` (serving/index.py) and
brings them up to date with the items' committed features — adding only new feature keys, removing keys
no item references, rebuilding a space whose files cannot be trusted. Queries are ``serving.query.Encoded``
(features computed in memory by the stages' own code); ``like`` uses an item's cached features.

Spaces: one per ``stages.fuse.MODALITIES`` entry. Three of them hold vectors of the same ``[bert]`` model
— ``text`` (the typed message, ``bert``), ``speech`` (the voice note's transcript, ``bert_speech``) and
``screen`` (the screenshot's text, ``bert_screen``) — so they are comparable with each other: together
they are the **words** channel's bert family. ``text_ml``, ``speech_ml`` and ``screen_ml`` hold the same three
texts embedded by the ``[multilingual]`` model (one space for 16 languages: a Chinese query meets an English
ticket): its multilingual family. The words channel uses the multilingual family when it is indexed, the
bert family otherwise (all-MiniLM reads Chinese as [UNK]s, so its cosines would pull a Chinese query toward
any Chinese ticket); each bert space stays searchable on its own. ``image`` (cnn) and ``audio`` (mfcc) are
one channel each.

Scores are cosines. A query's word vectors — its typed text (``text``), the transcript of its voice note
(``speech``), the text on its screenshot (``screen``) — are each compared with all three text spaces; an
item's **words score** is the best cosine over those pairs, and the result says where it matched
(``"matched"``: the item's ``text``, ``speech`` or ``screen``; ``"query_words"``: which of the query's
words). So a typed query finds a voice-only ticket by what its note says and a screenshot-only ticket by
what its screen shows, and a voice query finds a typed ticket about the same thing.

With ``modality="all"`` an item's score is (its words score, if the query has words) + (its image cosine,
if the query has an image) + (its audio cosine, if the query has audio), divided by the number of those
channels the query has; a channel the item lacks counts 0. An item matching only the screenshot of a
message+screenshot+voice query cannot outrank one that matches all three about as well; an item with
every channel of the query scores exactly their mean. Other choices (``CHOICES``): ``words`` (the words
channel alone), ``text`` / ``speech`` / ``screen`` (one text space, compared with every word vector of
the query), ``image``, ``audio``. ``"modalities"`` in each result gives the per-space cosines (for a text
space, the best over the query's word vectors). A query voice note without speech or a screenshot
without text simply has no words there (``NoWords`` is not an error). Scoring is exact: every indexed
vector is compared. Items with identical content share one vector and are returned together: when the
k-th result ties with the next ones, those come too, so a result can hold more than k rows.

The stable API (the HTTP service imports it): ``Searcher``, its ``search``, ``like``, ``item``,
``cleaned_text``, ``transcript``, ``screen_text``, ``words``, ``modalities``, ``sizes`` and ``update_stats``.
Errors are ``pipeline.errors.SearchError``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

import numpy as np

from pipeline.errors import CacheCorruptError, SearchError, absent_kinds
from pipeline.manifest import Item
from pipeline.stage import STAGES
from stages.fuse import MODALITIES, feature_keys

from .index import IndexFolder
from .space import Space
from .query import Encoded

# The spaces of the [bert] model (comparable with each other), and those of the [multilingual] model
# (comparable with each other, not with bert's): together the words channel.
WORDS = tuple(m for m in ("text", "speech", "screen") if m in MODALITIES)
ML_WORDS = tuple(m for m in ("text_ml", "speech_ml", "screen_ml") if m in MODALITIES)
ALL_WORDS = WORDS + ML_WORDS
SHOWN_ONLY = {"bert_words"}  # channels whose cosines are reported in "modalities" but not scored
CHOICES = ("all", "words", *ALL_WORDS, *(m for m in MODALITIES if m not in ALL_WORDS))
# Where an item's words come from (stage, field) and what a result calls them.
TEXT_STAGES = {"text": "clean_text", "speech": "transcribe", "screen": "ocr"}
WORD_NAMES = {"text": "text", "speech": "said", "screen": "on_screen"}
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
    """Why a query has no features for a modality: 'image: ImageDecodeError: cannot decode ...',
    'speech: no words (no speech in the voice note ...)' or 'speech: not given'."""
    if modality not in encoded.errors:
        return f"{modality}: not given"
    error, message = encoded.errors[modality]
    message = message.removeprefix(modality + ": ")
    if error in absent_kinds():
        return f"{modality}: no words ({message})"
    return f"{modality}: {error}: {message}"


def query_modalities(modality: str) -> list[str] | None:
    """What a query must encode for a search by ``modality`` (None: everything)."""
    if modality == "all":
        return None
    if modality == "words" or modality in ALL_WORDS:
        return list(ALL_WORDS)
    return [modality]


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
        self._text_keys: dict[str, dict[str, str]] | None = None  # text stage -> {item id -> key}
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

    def sizes(self) -> dict[str, int]:
        """Vectors indexed per space."""
        return {m: self._spaces[m].size for m in self.modalities}

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
        channels = self._channels(modality)
        wanted = list(dict.fromkeys(m for sources, _ in channels.values() for m in sources))
        given = {m: np.asarray(v, np.float32).reshape(-1) for m, v in encoded.features.items() if m in wanted}
        if not given:
            reasons = "; ".join(problem(encoded, m) for m in wanted)
            raise SearchError(f"query {encoded.id!r} has no usable modality ({reasons})")

        def query_vector(source: str, space: Space) -> np.ndarray:
            if given[source].size != space.dim:
                raise SearchError(f"query {encoded.id!r}: its {source} vector has {given[source].size} dimensions, "
                                  f"the {space.name} index {space.dim}; encode queries with the same config as the index")
            return space.prepare(given[source])[0]

        return self._rank(self._plan(channels, set(given), query_vector), k, exclude)

    def like(self, item_id: str, k: int = 10, modality: str = "all") -> list[dict]:
        """Items most similar to a manifest item, from its cached features (its word vectors compared the
        same way as a query's); the item itself is left out (other items with identical content are returned)."""
        if item_id not in self._items:
            close = difflib.get_close_matches(item_id, self._order, n=1)
            raise SearchError(f"unknown item id {item_id!r}: not in the manifest" + (f" (did you mean '{close[0]}'?)" if close else ""))
        channels = self._channels(modality)
        own = {m: self._spaces[m].vector(self._keys[m][item_id]) for sources, _ in channels.values() for m in sources
               if m in self._spaces and item_id in self._keys.get(m, {})}

        def query_vector(source: str, space: Space) -> np.ndarray:
            # A stored vector is prepared for its own space; the text spaces are not standardized, so for
            # another text space preparing again only re-normalises it.
            return own[source] if source == space.name else space.prepare(own[source])[0]

        plan = self._plan(channels, set(own), query_vector, raise_not_indexed=False)
        if not plan:
            raise SearchError(f"item {item_id!r} has no indexed {'' if modality == 'all' else modality + ' '}features "
                              "(its inputs are missing or failed; see 'mmp status')")
        return self._rank(plan, k, {item_id})

    def item(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def cleaned_text(self, item_id: str) -> str | None:
        """The item's cleaned text from the clean_text cache (None if it has none or it is not computed).
        Reads through ``ws.store``, whose SQLite connection belongs to the thread that opened ``ws``."""
        return self._cached_text("text", item_id)

    def transcript(self, item_id: str) -> str | None:
        """What the item's voice note says, from the transcribe cache (None: no note, no words, not computed)."""
        return self._cached_text("speech", item_id)

    def screen_text(self, item_id: str) -> str | None:
        """The text on the item's screenshot, lines joined by newlines, from the ocr cache (None as above)."""
        return self._cached_text("screen", item_id)

    def words(self, item_id: str) -> dict[str, str]:
        """The item's words that exist: {"text": typed, "said": transcript, "on_screen": screen text}."""
        out = {}
        for source, name in WORD_NAMES.items():
            value = self._cached_text(source, item_id)
            if value:
                out[name] = value
        return out

    def _cached_text(self, source: str, item_id: str) -> str | None:
        stage = TEXT_STAGES[source]
        if item_id not in self._items or stage not in STAGES:
            return None
        if self._text_keys is None:  # planned once (dry: nothing runs), for the three text stages together
            names = [s for s in TEXT_STAGES.values() if s in STAGES]
            plans = list(self.ws.plan(names, list(self._items.values()), dry=True))
            self._text_keys = {p.stage.name: p.keys for p in plans if p.stage.name in names}
        key = self._text_keys.get(stage, {}).get(item_id)
        if key is None:
            return None
        try:  # not committed (failed, NoWords, not computed yet) or unreadable: no text
            return self.ws.store.read(stage, [key])[key]["text"]
        except (KeyError, CacheCorruptError):
            return None

    # ---- scoring -------------------------------------------------------------------------------
    def _channels(self, modality: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """channel -> (the query's modalities it uses, the spaces it compares them with)."""
        if modality not in CHOICES:
            raise SearchError(f"unknown modality {modality!r}; use one of {', '.join(CHOICES)}")
        # The words channel reads the multilingual spaces when they are indexed (all-MiniLM reads Chinese as
        # [UNK]s: any two Chinese texts score ~0.5 there, a Chinese text and its English twin ~0.1, so mixing
        # its cosines in pulls a Chinese query to unrelated Chinese tickets); the bert spaces otherwise.
        # (the bert spaces' cosines are still computed for "modalities", as "bert_words", outside the score)
        family = ML_WORDS if any(m in self._spaces for m in ML_WORDS) else WORDS
        words = {"words": (family, family), **({"bert_words": (WORDS, WORDS)} if family != WORDS else {})}
        if modality == "all":
            return {**words, **{m: ((m,), (m,)) for m in MODALITIES if m not in ALL_WORDS}}
        if modality == "words":
            if not any(m in self._spaces for m in ALL_WORDS):
                raise self._not_indexed(list(ALL_WORDS))
            return words
        if modality not in self._spaces:
            raise self._not_indexed([modality])
        family = WORDS if modality in WORDS else ML_WORDS if modality in ML_WORDS else (modality,)
        return {modality: (family, (modality,))}

    def _plan(self, channels, sources: set[str], query_vector, raise_not_indexed: bool = True) -> dict[str, list]:
        """channel -> [(query modality, space, prepared query vector)] for the pairs both sides have."""
        plan, unindexed = {}, []
        for channel, (wanted, spaces) in channels.items():
            have = [m for m in wanted if m in sources]
            if not have:
                continue
            pairs = [(m, name, query_vector(m, self._spaces[name])) for name in spaces if name in self._spaces for m in have]
            if pairs:
                plan[channel] = pairs
            else:
                unindexed += [name for name in spaces if name not in unindexed]
        if not plan and raise_not_indexed:
            raise self._not_indexed(unindexed)
        return plan

    def _not_indexed(self, modalities: list[str]) -> SearchError:
        have = ", ".join(f"{m} ({self._spaces[m].size} vectors)" for m in self.modalities) or "nothing"
        return SearchError(f"no items with {' or '.join(modalities)} features are indexed; run mmp features "
                           f"(indexed: {have})")

    def _rank(self, plan: dict[str, list], k: int, exclude) -> list[dict]:
        if k < 1:
            raise SearchError(f"k must be at least 1, not {k}")
        n = len(self._order)
        total, count = np.zeros(n), np.zeros(n, np.int64)

        per: dict[str, np.ndarray] = {}  # space -> the item's best cosine in it (nan: the item has none)
        match = None  # (pair index per item, the pairs) of the words channel
        for channel, pairs in plan.items():
            best, which = np.full(n, -np.inf), np.full(n, -1, np.int64)
            for j, (_, name, query) in enumerate(pairs):
                table = self._tables[name]
                ids, scores = self._spaces[name].scores(query)
                cosines = np.full(n, np.nan, np.float32)
                cosines[table.pair_item] = table.by_position(ids, scores)[table.pair_pos]
                per[name] = cosines if name not in per else np.fmax(per[name], cosines)
                better = cosines > best  # strictly: a tie keeps the earlier pair (text before speech, screen)
                best[better], which[better] = cosines[better], j
            present = which >= 0
            if channel in SHOWN_ONLY:
                continue
            total[present] += best[present]
            count[present] += 1
            if channel == "words" or channel in ALL_WORDS:
                match = (which, pairs)
        # the channels' cosines summed over the query's channels: a channel the item lacks counts 0
        mean = np.where(count > 0, total / max(len(set(plan) - SHOWN_ONLY), 1), -np.inf)
        for item_id in exclude:
            if item_id in self._row:
                mean[self._row[item_id]] = -np.inf
        candidates = np.flatnonzero(np.isfinite(mean))
        if k < candidates.size:  # the k best, plus whatever ties with the k-th (identical content comes along)
            kth = -np.partition(-mean[candidates], k - 1)[k - 1]
            candidates = candidates[mean[candidates] >= kth]
        order = candidates[np.argsort(-mean[candidates], kind="stable")]  # ties keep manifest order
        results = []
        for r in order:
            matched = match[1][match[0][r]] if match is not None and match[0][r] >= 0 else None
            results.append(self._result(r, mean[r], {m: s[r] for m, s in per.items() if not np.isnan(s[r])}, matched))
        return results

    def _result(self, row: int, score: float, parts: dict[str, float], matched) -> dict:
        item = self._items[self._order[row]]
        return {"id": item.id, "score": round(float(score), 6), "label": item.label, "split": item.split,
                "modalities": {m: round(float(parts[m]), 6) for m in MODALITIES if m in parts},
                "matched": matched[1].removesuffix("_ml") if matched else None,
                "query_words": matched[0].removesuffix("_ml") if matched else None}
