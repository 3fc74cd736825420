"""TicketService: what the HTTP app does for a request, without HTTP.

Loads once (``load``, run on a worker thread at start-up): the trained model, its labels and stored
standardization (``serving.predict.load_trained``), the pipeline config the model was trained with
(``model_config``), a ``QueryEncoder`` with every model warmed up on generated samples, the served
manifests' id table, and a ``Searcher`` over their cached features. Then each request goes through
per-model dynamic batchers: one per modality (the stages' own cleaning + feature code, via
``QueryEncoder.encode``) and one for the classifier (``stages.fuse.fused_record``, the standardization
``mmp predict`` applies, then the same Keras model). Searcher calls run on one thread of their own (it owns SQLite handles).
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from stages.fuse import MODALITIES

from .errors import InvalidParameter, NoUsableModality, NotFound, NotReady
from .settings import ServeConfig
from .uploads import Upload

THUMBNAILS_KEPT = 256


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def image_url(item_id: str) -> str:
    return f"/v1/items/{quote(item_id, safe='')}/image"


class TicketService:
    def __init__(self, model_dir: Path, manifests: list[str], workdir: Path, serve: ServeConfig, on_batch=None):
        self.model_dir, self.manifests, self.workdir, self.serve = Path(model_dir), manifests, Path(workdir), serve
        self.on_batch = on_batch
        self.state, self.error = "loading", ""
        self.batchers: dict[str, Any] = {}
        self.search_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")
        self.thumbnails: OrderedDict[str, bytes] = OrderedDict()
        self.in_flight = 0

    # ---- start-up ------------------------------------------------------------------------------
    def load(self) -> None:
        from pipeline.config import Config
        from pipeline.manifest import load

        from .predict import load_trained, model_config
        from .query import QueryEncoder

        self.model, self.labels, self.stats = load_trained(self.model_dir)
        self.config = model_config(self.model_dir)
        self.modalities = [m for m in MODALITIES if m in self.stats.mean]
        cnn = replace(self.config["cnn"], batch_size=self.serve.image_batch_size)  # (run) setting: same features
        self.encoder = QueryEncoder(Config({**self.config.sections, "cnn": cnn}))
        self.encoder.warm_up(self.modalities)
        self.items = {item.id: item for item in load(self.manifests, self.config["data"].root)}
        self.search_thread.submit(self._open_searcher).result()
        self._warm_models()

    def _open_searcher(self) -> None:
        from pipeline.runner import Workspace

        from .search import Searcher

        self.ws = Workspace(self.workdir, self.config)
        self.searcher = Searcher(self.ws, list(self.items.values()))

    def _warm_models(self) -> None:
        """One pass over generated samples, so tracing happens now and not on the first request."""
        from pipeline.errors import ConfigError

        from .query import query_item
        from .warmup import write_samples

        with tempfile.TemporaryDirectory(prefix="mmp-warmup-") as folder:
            names = write_samples(Path(folder))
            item = query_item("warm-up", base=folder, **{("text_path" if m == "text" else m): names[m] for m in self.modalities})
            encoded = self.encoder.encode([item], self.modalities)[0]
        if encoded.errors:  # a model that cannot handle a plain sample: the service must not report ready
            raise ConfigError("warm-up sample failed: " + "; ".join(f"{e}: {msg}" for e, msg in encoded.errors.values()))
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
        for m in self.modalities:
            self.batchers[m] = DynamicBatcher(m, lambda items, m=m: self.encoder.encode(items, [m]), s.max_batch_size,
                                              s.max_wait_ms, s.max_queue, self.on_batch)
        self.batchers["model"] = DynamicBatcher("model", self._classify_batch, s.max_batch_size, s.max_wait_ms,
                                                s.max_queue, self.on_batch)
        for batcher in self.batchers.values():
            batcher.start()
        self.state = "ready"

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        if getattr(self, "ws", None) is not None:
            self.search_thread.submit(self.ws.close).result()
        self.search_thread.shutdown(wait=True)

    def require_ready(self) -> None:
        if self.state != "ready":
            raise NotReady(f"the service is {self.state}" + (f": {self.error}" if self.error else " (models loading)"))

    # ---- requests ------------------------------------------------------------------------------
    async def encode(self, upload: Upload, wanted: list[str], timings: dict) -> Any:
        """Every modality of the upload through its batcher; the merged ``Encoded``."""
        from .query import Encoded, query_item

        given = [m for m in wanted if m in upload.files]
        if not given:
            sent = ", ".join(upload.files) or "nothing"
            raise NoUsableModality(f"the request holds no {' / '.join(wanted)} to use (it sent: {sent})")
        item = query_item(f"request-{uuid.uuid4().hex[:12]}", base=upload.folder,
                          **{("text_path" if m == "text" else m): m for m in given})
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
            raise NoUsableModality("no modality of the request could be used: "
                                   + "; ".join(f"{e}: {msg}" for e, msg in merged.errors.values()), errors_of(merged))
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
        missing = [m for m in self.modalities if m not in encoded.features]
        if missing and self.config["fuse"].missing == "drop":
            raise NoUsableModality(f"the model was trained with fuse.missing = \"drop\": it needs every modality, "
                                   f"and this request lacks {', '.join(missing)}", errors_of(encoded))
        probs = await self.batchers["model"].submit(self._fused(encoded.features))
        return {"predicted": self.labels[int(np.argmax(probs))],
                "probabilities": {label: float(p) for label, p in zip(self.labels, probs)},
                "missing_modalities": missing}

    async def similar(self, encoded, k: int, modality: str = "all") -> list[dict[str, Any]]:
        if modality != "all" and modality not in self.searcher.modalities:
            raise InvalidParameter(f"modality must be 'all' or one of {', '.join(self.searcher.modalities)}, not {modality!r}")
        if modality != "all" and modality not in encoded.features:
            raise InvalidParameter(f"cannot search by {modality}: the request has no usable {modality}", errors_of(encoded))
        if not 1 <= k <= 100:
            raise InvalidParameter(f"k must be within 1..100, not {k}")
        return await self._on_search_thread(self._similar, encoded, k, modality)

    def _similar(self, encoded, k: int, modality: str) -> list[dict[str, Any]]:
        from pipeline.errors import SearchError

        try:
            hits = self.searcher.search(encoded, k=k, modality=modality)
        except SearchError as exc:  # e.g. no indexed items have the query's modalities
            raise InvalidParameter(f"search: {exc}", errors_of(encoded)) from None
        return [{**hit, "text": self.searcher.cleaned_text(hit["id"]),
                 "image": image_url(hit["id"]) if self.items[hit["id"]].image else None} for hit in hits]

    async def _on_search_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.search_thread, fn, *args)

    # ---- the served manifests' items -----------------------------------------------------------
    def manifest_item(self, item_id: str):
        """Ids are looked up in the manifests' id table, never joined to a path."""
        item = self.items.get(item_id)
        if item is None:
            raise NotFound(f"no item {item_id!r} in the served manifests")
        return item

    async def item_info(self, item_id: str) -> dict[str, Any]:
        item = self.manifest_item(item_id)
        text = await self._on_search_thread(self.searcher.cleaned_text, item.id)
        return {"id": item.id, "split": item.split, "label": item.label,
                "modalities": [m for m in MODALITIES if item.has(m)], "meta": item.meta, "text": text,
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


def batch_buckets(max_batch_size: int) -> list[int]:
    """Padded batch sizes of the classifier: powers of two below the maximum, and the maximum."""
    return [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b < max_batch_size] + [max_batch_size]


def errors_of(encoded) -> list[dict[str, str]]:
    return [{"modality": m, "error": e, "message": msg} for m, (e, msg) in encoded.errors.items()]
