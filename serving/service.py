"""TicketService: what the HTTP app does for a request, without HTTP.

Loads once (``load``, run on a worker thread at start-up): the trained model, its labels and stored
standardization (``serving.predict.load_trained``), the pipeline config the model was trained with
(``model_config``), a ``QueryEncoder`` with every model warmed up on generated samples, the served
manifests' id table, and a ``Searcher`` over their cached features (a ``serving.refresh.Catalog``, followed
while serving: ``refresh`` swaps in a new one when batch runs add manifests, rows or features). Then each request goes through
per-model dynamic batchers: one per modality (the stages' own cleaning + feature code, via
``QueryEncoder.encode``) and one for the classifier (``stages.fuse.fused_record``, the standardization
``mmp predict`` applies, then the same Keras model). Searcher calls run on their Catalog's own thread (it owns SQLite handles).

An uploaded voice note is always transcribed and a screenshot always read (``speech`` and ``screen``, the
``transcribe`` / ``ocr`` stages then ``[bert]``), even for a model trained without them: the answer shows
what was said and shown (``transcript``, ``screen_text``) and the search compares those words with past
tickets' messages, transcripts and screen text. A note without speech or a screenshot without text is
"no words" (an empty transcript / screen text), not an error.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from stages.fuse import MODALITIES

from .errors import InvalidParameter, NoUsableModality, NotFound, NotReady
from .refresh import FollowsCache
from .settings import ServeConfig
from .uploads import Upload

THUMBNAILS_KEPT = 256
RAW = ("text", "image", "audio")  # the manifest's columns
# Encoded for search even when the model does not read them: the words read from the voice note and the
# screenshot, and every text in the multilingual space.
WORD_MODALITIES = ("speech", "screen", "speech_ml", "screen_ml", "text_ml")
# A block's failure is not listed again when the one it is read from failed the same way (a broken note:
# audio; its transcript's vectors: speech, speech_ml).
READ_FROM = {"speech": "audio", "screen": "image", "text_ml": "text", "speech_ml": "speech", "screen_ml": "screen"}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def image_url(item_id: str) -> str:
    return f"/v1/items/{quote(item_id, safe='')}/image"


class TicketService(FollowsCache):
    def __init__(self, model_dir: Path, manifests: list[str], workdir: Path, serve: ServeConfig, on_batch=None,
                 on_refresh=None):
        self.model_dir, self.manifests, self.workdir, self.serve = Path(model_dir), manifests, Path(workdir), serve
        self.on_batch, self.on_refresh = on_batch, on_refresh
        self.state, self.error = "loading", ""
        self.batchers: dict[str, Any] = {}
        self.catalog = None  # serving.refresh.Catalog once loaded
        self.refreshing = asyncio.Lock()
        self.last_refresh: dict[str, Any] = {}
        self.thumbnails: OrderedDict[str, bytes] = OrderedDict()
        self.in_flight = 0

    @property
    def items(self) -> dict:
        return self.catalog.items if self.catalog is not None else {}

    @property
    def searcher(self):
        return self.catalog.searcher

    # ---- start-up ------------------------------------------------------------------------------
    def load(self) -> None:
        from pipeline.config import Config

        from .predict import load_trained, model_config
        from .query import QueryEncoder
        from .refresh import open_catalog

        self.model, self.labels, self.stats = load_trained(self.model_dir)
        self.config = model_config(self.model_dir)
        self.modalities = [m for m in MODALITIES if m in self.stats.mean]  # what the model reads
        # what a request is encoded for: the model's modalities and the words (shown, and searched by)
        self.encoded = [m for m in MODALITIES if m in self.modalities or m in WORD_MODALITIES]
        cnn = replace(self.config["cnn"], batch_size=self.serve.image_batch_size)  # (run) setting: same features
        self.encoder = QueryEncoder(Config({**self.config.sections, "cnn": cnn}))
        self.encoder.warm_up(self.encoded)
        self.catalog = open_catalog(self.manifests, self.workdir, self.config)
        self._warm_models()

    def _warm_models(self) -> None:
        """One pass over generated samples, so tracing happens now and not on the first request."""
        from pipeline.errors import ConfigError

        from pipeline.errors import absent_kinds

        from .query import query_item, raw_input
        from .warmup import write_samples

        with tempfile.TemporaryDirectory(prefix="mmp-warmup-") as folder:
            names = write_samples(Path(folder))
            raws = {raw_input(m) for m in self.encoded}
            item = query_item("warm-up", base=folder, **{("text_path" if r == "text" else r): names[r] for r in raws})
            encoded = self.encoder.encode([item], self.encoded)[0]
        # a model that cannot handle a plain sample: the service must not report ready (a tone has no words:
        # that is no failure)
        failed = [f"{e}: {msg}" for e, msg in encoded.errors.values() if e not in absent_kinds()]
        if failed:
            raise ConfigError("warm-up sample failed: " + "; ".join(failed))
        record = self._fused(encoded.features)
        for size in batch_buckets(self.serve.max_batch_size):
            self._classify_batch([record] * size)

    async def start(self) -> None:
        """Load on a worker thread (``/healthz`` answers meanwhile), then start the batchers."""
        from .batching import DynamicBatcher

        try:
            await asyncio.to_thread(self.load)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz; the process stays up
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        s = self.serve
        for m in self.encoded:
            self.batchers[m] = DynamicBatcher(m, lambda items, m=m: self.encoder.encode(items, [m]), s.max_batch_size,
                                              s.max_wait_ms, s.max_queue, self.on_batch)
        self.batchers["model"] = DynamicBatcher("model", self._classify_batch, s.max_batch_size, s.max_wait_ms,
                                                s.max_queue, self.on_batch)
        for batcher in self.batchers.values():
            batcher.start()
        self.state = "ready"
        if s.refresh_seconds > 0:
            self.follower = asyncio.create_task(self._follow())

    async def close(self) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.cancel()
        for batcher in self.batchers.values():
            await batcher.stop()
        async with self.refreshing:
            if self.catalog is not None:
                catalog, self.catalog = self.catalog, None
                catalog.close()
                await asyncio.to_thread(catalog.thread.shutdown, True)

    # ---- requests ------------------------------------------------------------------------------
    async def encode(self, upload: Upload, wanted: list[str], timings: dict) -> Any:
        """Every modality of the upload through its batcher; the merged ``Encoded``."""
        from .query import Encoded, query_item, raw_input

        given = [m for m in wanted if raw_input(m) in upload.files]
        if not given:
            sent = ", ".join(upload.files) or "nothing"
            raws = " / ".join(dict.fromkeys(raw_input(m) for m in wanted))
            raise NoUsableModality(f"the request holds no {raws} to use (it sent: {sent})")
        raws = dict.fromkeys(raw_input(m) for m in given)
        item = query_item(f"request-{uuid.uuid4().hex[:12]}", base=upload.folder,
                          **{("text_path" if r == "text" else r): r for r in raws})
        started = time.perf_counter()

        async def one(m):
            result = await self.batchers[m].submit(item)
            timings[m] = _ms(time.perf_counter() - started)
            return result

        merged = Encoded(item.id)
        for part in await asyncio.gather(*(one(m) for m in given)):
            merged.features.update(part.features)
            merged.cleaned.update(part.cleaned)
            merged.errors.update(part.errors)
        if not merged.features:
            failures = errors_of(merged)
            raise NoUsableModality("no modality of the request could be used: "
                                   + "; ".join(f"{e['error']}: {e['message']}" for e in failures), failures)
        return merged

    def _fused(self, features: dict[str, np.ndarray]) -> dict[str, Any]:
        from stages.fuse import fused_record

        return fused_record({m: v for m, v in features.items() if m in self.modalities}, self.stats)

    def _classify_batch(self, records: list[dict[str, Any]]) -> list[np.ndarray]:
        """The trained model on fused rows. ``predict_on_batch`` (``mmp predict``'s ``model.predict`` costs
        60-160 ms a call in set-up alone) on a batch padded, by repeating its first row, to a size from
        ``batch_buckets`` (each traced once at start-up); rows never influence each other."""
        size = next(b for b in batch_buckets(self.serve.max_batch_size) if b >= len(records))
        rows = records + [records[0]] * (size - len(records))
        inputs = {}
        for m in self.modalities:
            inputs[m] = np.asarray([r[m] for r in rows], dtype=np.float32)
            inputs[f"{m}_mask"] = np.asarray([r[f"{m}_mask"] for r in rows], dtype=np.float32).reshape(-1, 1)
        return list(np.asarray(self.model.predict_on_batch(inputs))[: len(records)])

    async def classify(self, encoded) -> dict[str, Any]:
        from stages.fuse import BRANCHES

        missing = [m for m in self.modalities if m not in encoded.features]
        lacking = [b for b, blocks in BRANCHES.items()
                   if any(m in self.modalities for m in blocks) and not any(m in encoded.features for m in blocks)]
        if lacking and self.config["fuse"].missing == "drop":
            raise NoUsableModality(f"the model was trained with fuse.missing = \"drop\": it needs every branch "
                                   f"(text; image or screen text; audio or speech), and this request has no "
                                   f"{', '.join(lacking)}", errors_of(encoded))
        probs = await self.batchers["model"].submit(self._fused(encoded.features))
        return {"predicted": self.labels[int(np.argmax(probs))],
                "probabilities": {label: float(p) for label, p in zip(self.labels, probs)},
                "missing_modalities": missing}

    async def similar(self, encoded, k: int, modality: str = "all") -> list[dict[str, Any]]:
        from .search import ALL_WORDS, ML_WORDS, WORDS

        indexed = self.searcher.modalities
        choices = (["words"] if any(m in ALL_WORDS for m in indexed) else []) + indexed
        if modality != "all" and modality not in choices:
            raise InvalidParameter(f"modality must be 'all' or one of {', '.join(choices)}, not {modality!r}")
        needs = ALL_WORDS if modality == "words" else WORDS if modality in WORDS else \
            ML_WORDS if modality in ML_WORDS else (modality,)
        if modality != "all" and not any(m in encoded.features for m in needs):
            what = "words (text, a voice note's speech or a screenshot's text)" if needs != (modality,) else modality
            raise InvalidParameter(f"cannot search by {modality}: the request has no usable {what}", errors_of(encoded))
        if not 1 <= k <= 100:
            raise InvalidParameter(f"k must be within 1..100, not {k}")
        catalog = self.catalog  # one catalog for the whole request, on its own thread
        return await catalog.run(_similar, catalog, encoded, k, modality)

    # ---- the served manifests' items -----------------------------------------------------------
    def manifest_item(self, item_id: str):
        """Ids are looked up in the manifests' id table, never joined to a path."""
        item = self.items.get(item_id)
        if item is None:
            raise NotFound(f"no item {item_id!r} in the served manifests")
        return item

    async def item_info(self, item_id: str) -> dict[str, Any]:
        item = self.manifest_item(item_id)
        catalog = self.catalog  # both reads from one catalog, on its thread
        text, words = await catalog.run(lambda: (catalog.searcher.cleaned_text(item.id), catalog.searcher.words(item.id)))
        return {"id": item.id, "split": item.split, "label": item.label,
                "modalities": [m for m in RAW if item.has(m)], "meta": item.meta, "text": text, "words": words,
                "image": image_url(item.id) if item.image else None}

    async def thumbnail(self, item_id: str) -> bytes:
        item = self.manifest_item(item_id)
        if not item.image:
            raise NotFound(f"item {item_id!r} has no image")
        if item.id not in self.thumbnails:
            self.thumbnails[item.id] = await asyncio.to_thread(self._thumbnail, item)
            if len(self.thumbnails) > THUMBNAILS_KEPT:
                self.thumbnails.popitem(last=False)
        self.thumbnails.move_to_end(item.id)
        return self.thumbnails[item.id]

    def _thumbnail(self, item) -> bytes:
        """The raw image through clean_image's own decode path and caps, at thumbnail size, as JPEG."""
        from PIL import Image

        from pipeline.errors import ItemError
        from pipeline.manifest import resolve_path
        from stages.clean_image import CleanImage

        data = self.config["data"]
        try:
            path, _, _ = resolve_path(item, item.image, data.allow_outside_root, int(data.max_file_mb * 1e6))
            pixels = CleanImage(replace(self.config["clean_image"], size=self.serve.thumbnail_px)).process_one({"path": path})
        except ItemError as exc:
            raise NotFound(f"item {item.id!r}: its image cannot be shown: {exc.kind}: {exc}") from None
        out = io.BytesIO()
        Image.fromarray(pixels["image"]).save(out, format="JPEG", quality=85)
        return out.getvalue()


def _similar(catalog, encoded, k: int, modality: str) -> list[dict[str, Any]]:
    from pipeline.errors import SearchError

    searcher = catalog.searcher
    try:
        hits = searcher.search(encoded, k=k, modality=modality)
    except SearchError as exc:  # e.g. no indexed items have the query's modalities
        raise InvalidParameter(f"search: {exc}", errors_of(encoded)) from None
    return [{**hit, "text": searcher.cleaned_text(hit["id"]), "words": searcher.words(hit["id"]),
             "image": image_url(hit["id"]) if catalog.items[hit["id"]].image else None} for hit in hits]


def batch_buckets(max_batch_size: int) -> list[int]:
    """Padded batch sizes of the classifier: powers of two below the maximum, and the maximum."""
    return [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b < max_batch_size] + [max_batch_size]


def errors_of(encoded) -> list[dict[str, str]]:
    """The request's failures, per modality. "No words" (a note without speech, a screenshot without text)
    is not one; nor is the speech / screen failure of a file whose audio / image failure is listed."""
    from pipeline.errors import absent_kinds

    absent, out = absent_kinds(), []
    for m, (e, msg) in encoded.errors.items():
        source = READ_FROM.get(m)
        if e in absent or (source is not None and encoded.errors.get(source, ("",))[0] == e):
            continue
        out.append({"modality": m, "error": e, "message": msg})
    return out


def words_of(encoded, upload_files) -> dict[str, Any]:
    """``transcript`` and ``screen_text`` of a request: what its voice note says (text, language, seconds of
    speech) and what its screenshot shows; empty text when there are no words; None when no such file was
    sent or it could not be read (the failure is in ``errors``)."""
    from pipeline.errors import absent_kinds

    def absent(m):
        return m in encoded.errors and encoded.errors[m][0] in absent_kinds()

    transcript = screen = None
    if "audio" in upload_files and "speech" in MODALITIES:
        said = encoded.cleaned.get("speech")
        if said is not None:
            transcript = {"text": said["text"], "language": said.get("language"),
                          "speech_seconds": said.get("speech_seconds"), "seconds": said.get("seconds"), "no_words": None}
        elif absent("speech"):
            transcript = {"text": "", "language": None, "speech_seconds": None, "seconds": None,
                          "no_words": encoded.errors["speech"][1].removeprefix("speech: ")}
    if "image" in upload_files and "screen" in MODALITIES:
        shown = encoded.cleaned.get("screen")
        screen = shown["text"] if shown is not None else ("" if absent("screen") else None)
    return {"transcript": transcript, "screen_text": screen}
