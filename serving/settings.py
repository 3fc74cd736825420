"""The ``[serve]`` config section: the HTTP service's knobs (defaults here and in pipeline.toml).

Only plain values; importing this module imports nothing heavy. The bearer token is deliberately not a
setting (a model folder's ``config.json`` records the whole config): it comes from ``--token`` or
``$MMP_TOKEN``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import register_section


@dataclass
class ServeConfig:
    # Address to bind; 127.0.0.1 keeps the service on this machine.
    host: str = "127.0.0.1"
    port: int = 8000
    # Dynamic batching, per model: a batch closes at this many requests ...
    max_batch_size: int = 32
    # ... or this many milliseconds after its first request arrived.
    max_wait_ms: float = 10.0
    # The image model runs on a fixed batch shape (cnn.batch_size in batch runs, 32): while serving it
    # is this, so a lone screenshot pays for this many images, not 32. Never changes features.
    image_batch_size: int = 8
    # Requests admitted at once (uploading, waiting or computing); more are answered 503 + Retry-After.
    max_queue: int = 64
    # Seconds a 503 tells the client to wait (Retry-After).
    retry_after_s: int = 1
    # Uploaded files larger than this are refused with 413.
    max_upload_mb: float = 20.0
    # Similar past tickets returned with each prediction.
    similar_k: int = 5
    # Side of the square JPEG thumbnails of manifest images.
    thumbnail_px: int = 160
    # Seconds between checks for what batch runs added (new manifest files or rows, new committed features);
    # a change brings the search index up to date in place (SIGHUP or POST /v1/admin/refresh: now). 0 = off.
    refresh_seconds: float = 30.0
    # Hours a page sign-in (the session cookie given for the token) lasts.
    session_hours: float = 8.0

    def validate(self) -> str | None:
        if not 0 <= self.port <= 65535:
            return f"port must be within 0..65535, not {self.port}"
        if self.max_batch_size < 1 or self.max_queue < 1 or self.image_batch_size < 1:
            return "max_batch_size, image_batch_size and max_queue must be at least 1"
        if self.max_wait_ms < 0 or self.max_upload_mb <= 0:
            return "max_wait_ms must be >= 0 and max_upload_mb > 0"
        if not 1 <= self.similar_k <= 100 or not 16 <= self.thumbnail_px <= 1024:
            return "similar_k must be within 1..100 and thumbnail_px within 16..1024"
        if not 0 < self.session_hours <= 24 * 30:
            return f"session_hours must be within (0, 720], not {self.session_hours}"
        if self.refresh_seconds < 0:
            return f"refresh_seconds must be >= 0 (0 = off), not {self.refresh_seconds}"
        return None


register_section("serve", ServeConfig)
