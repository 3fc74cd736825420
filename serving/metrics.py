"""Prometheus metrics of one app (its own registry, so several apps in one process never clash).

``mmp_requests_total{endpoint,status}``, ``mmp_errors_total{endpoint,error}`` (error types: the
pipeline's per-modality ones such as ``ImageDecodeError`` and the request-level ones such as
``UploadTooLarge`` or ``Overloaded``), ``mmp_request_seconds{endpoint}``, ``mmp_batch_size{model}`` (requests
per model call), ``mmp_batch_seconds{model}``, ``mmp_requests_in_flight``, ``mmp_ready``. ``endpoint``
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

    def on_batch(self, model: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.batch_seconds.labels(model).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
