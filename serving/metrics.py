"""Prometheus metrics of one app (its own registry, so several apps in one process never clash).

``mmp_requests_total{endpoint,status}``, ``mmp_errors_total{endpoint,error}`` (error types: the
pipeline's per-modality ones such as ``ImageDecodeError`` and the request-level ones such as
``UploadTooLarge`` or ``Overloaded``), ``mmp_request_seconds{endpoint}``, ``mmp_batch_size{model}`` (requests
per model call), ``mmp_batch_seconds{model}``, ``mmp_requests_in_flight``, ``mmp_ready``; following the cache: ``mmp_indexed_vectors{space}``,
``mmp_served_items``, ``mmp_refreshes_total``, ``mmp_refresh_failures_total``,
``mmp_refresh_last_timestamp_seconds`` and ``mmp_refresh_last_seconds`` (the last successful one). ``endpoint``
is the route template (``/v1/items/{item_id}``), never the raw path.
"""

from __future__ import annotations


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: a timestamp per label set is noise here

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mmp_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("mmp_errors", "Errors by type (request-level and per modality)", ["endpoint", "error"],
                              registry=r)
        self.latency = Histogram("mmp_request_seconds", "Request latency", ["endpoint"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("mmp_batch_size", "Requests per model call (dynamic batching)", ["model"],
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_seconds = Histogram("mmp_batch_seconds", "Seconds per model call", ["model"], registry=r,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.in_flight = Gauge("mmp_requests_in_flight", "Requests admitted and not yet answered", registry=r)
        self.ready = Gauge("mmp_ready", "1 once the models are loaded", registry=r)
        self.indexed = Gauge("mmp_indexed_vectors", "Vectors in each search space", ["space"], registry=r)
        self.items = Gauge("mmp_served_items", "Items in the served manifests", registry=r)
        self.refreshes = Counter("mmp_refreshes", "Refreshes that swapped in a new index", registry=r)
        self.refresh_failures = Counter("mmp_refresh_failures", "Refreshes that failed (the old index kept serving)",
                                        registry=r)
        self.refresh_time = Gauge("mmp_refresh_last_timestamp_seconds", "When the last refresh finished (Unix time)",
                                  registry=r)
        self.refresh_seconds = Gauge("mmp_refresh_last_seconds", "Duration of the last refresh", registry=r)

    def on_catalog(self, service) -> None:
        """The served items and index sizes (at start-up and after each refresh)."""
        if service.catalog is None:
            return
        self.items.set(len(service.catalog.items))
        for space, size in service.catalog.searcher.sizes().items():
            self.indexed.labels(space).set(size)

    def on_refresh(self, service, seconds: float, error: str | None) -> None:
        import time

        if error:
            self.refresh_failures.inc()
            return
        self.refreshes.inc()
        self.refresh_time.set(time.time())
        self.refresh_seconds.set(seconds)
        self.on_catalog(service)

    def on_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.batch_seconds.labels(model).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
