"""Following the cache while serving: a ``Catalog`` is what searches read (the served manifests' items, a
``Workspace`` on the work directory and a ``Searcher`` over its committed features), owned by one thread of
its own (it holds SQLite handles). A refresh opens a new Catalog off to the side — re-reading the
manifests and bringing the search index up to date with ``Searcher``'s own incremental sync, the same one
``mmp index`` runs — and the service then swaps it in with one assignment: requests already queued on the
old Catalog's thread are answered from it, later ones from the new one; the old one closes after them.

``signature`` is the cheap check that tells whether a refresh can find anything new: the manifest files
(a served folder's new files included) with their sizes and modification times, and the cache index's
SQLite files (every batch commit writes them). Nothing here imports a model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NotReady

log = logging.getLogger("mmpipe.serve")


@dataclass
class Catalog:
    items: dict[str, Any]
    ws: Any
    searcher: Any
    thread: ThreadPoolExecutor
    signature: tuple = field(default_factory=tuple)

    async def run(self, fn, *args):
        """``fn(*args)`` on this catalog's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    def close(self) -> None:
        """Close once the work already queued on its thread is done (never blocks the caller)."""
        self.thread.submit(self.ws.close)
        self.thread.shutdown(wait=False)


def _stat(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:  # a URI (s3://...) or a file gone: its name alone
        return (path,)
    return (path, st.st_size, st.st_mtime_ns)


def signature(manifests: list[str], workdir: Path) -> tuple:
    """What changes when a batch run adds manifests, rows or committed features (cheap: stats only)."""
    from pipeline.manifest import manifest_files

    try:
        files = sorted(str(p) for p in manifest_files(manifests))
    except Exception as exc:  # noqa: BLE001 - a manifest folder gone or unreadable: a refresh reports it
        files = [f"unreadable: {exc}"]
    cache = Path(workdir) / "cache"
    return tuple(_stat(p) for p in files) + tuple(_stat(str(cache / n)) for n in ("index.sqlite", "index.sqlite-wal"))


def open_catalog(manifests: list[str], workdir: Path, config, prefix: str = "search") -> Catalog:
    """A new Catalog, built on its own new thread (so its SQLite handles belong to it). Raises what the
    manifests or the index raise (ManifestError, CacheCorruptError, a held index lock's Timeout, ...)."""
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=prefix)
    sig = signature(manifests, workdir)

    def build() -> Catalog:
        from pipeline.manifest import load
        from pipeline.runner import Workspace

        from .search import Searcher

        items = {item.id: item for item in load(manifests, config["data"].root)}
        ws = Workspace(workdir, config)
        try:
            searcher = Searcher(ws, list(items.values()))
        except BaseException:
            ws.close()
            raise
        return Catalog(items, ws, searcher, thread, sig)

    try:
        return thread.submit(build).result()
    except BaseException:
        thread.shutdown(wait=False)
        raise


class FollowsCache:
    """The refresh half of ``TicketService`` (``catalog``, ``refreshing``, ``last_refresh``, ``on_refresh``,
    ``thumbnails``, ``manifests``, ``workdir``, ``config``, ``serve`` are the service's)."""

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.serve.refresh_seconds)
            await self.refresh("timer")

    async def refresh(self, reason: str, force: bool = False) -> dict[str, Any]:
        """Bring the served items and search index up to date with the manifests and the cache, off to the
        side, then swap them in. Unchanged stats (and no ``force``): nothing is opened. A refresh that fails
        is logged and counted and the current catalog keeps serving. One refresh at a time."""
        if self.catalog is None:
            raise NotReady(f"the service is {self.state}: nothing to refresh yet")
        async with self.refreshing:
            started = time.perf_counter()
            old = self.catalog
            try:
                if not force and await asyncio.to_thread(signature, self.manifests, self.workdir) == old.signature:
                    return {"refreshed": False, "reason": reason, "changed": False, "items": len(old.items)}
                new = await asyncio.to_thread(open_catalog, self.manifests, self.workdir, self.config)
            except Exception as exc:  # noqa: BLE001 - the old catalog keeps serving; the failure is reported
                seconds = time.perf_counter() - started
                error = f"{type(exc).__name__}: {exc}"
                log.warning("refresh (%s) failed after %.2f s, still serving the previous index: %s", reason, seconds, error)
                self.last_refresh = {"refreshed": False, "reason": reason, "error": error, "seconds": round(seconds, 3),
                                     "items": len(old.items)}
                if self.on_refresh:
                    self.on_refresh(self, seconds, error)
                return self.last_refresh
            self.catalog = new  # one assignment: later requests read the new catalog
            old.close()  # after the requests already queued on it
            self.thumbnails.clear()
            seconds = time.perf_counter() - started
            added = sorted(set(new.items) - set(old.items))
            log.info("refresh (%s): %d items (+%d, -%d) in %.2f s", reason, len(new.items), len(added),
                     len(set(old.items) - set(new.items)), seconds)
            self.last_refresh = {"refreshed": True, "reason": reason, "changed": True, "seconds": round(seconds, 3),
                                 "items": len(new.items), "added": len(added), "removed": len(set(old.items) - set(new.items)),
                                 "index": new.searcher.update_stats}
            if self.on_refresh:
                self.on_refresh(self, seconds, None)
            return self.last_refresh

    def require_ready(self) -> None:
        if self.state != "ready":
            raise NotReady(f"the service is {self.state}" + (f": {self.error}" if self.error else " (models loading)"))
