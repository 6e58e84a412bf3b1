"""Prometheus metrics of the server: requests, latency, batch sizes, queue depth.

With several uvicorn workers the metrics live in prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the launcher) and /metrics sums every worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # A private registry per app (tests build several apps in one process); in multiprocess
        # mode the values go to files and a fresh collector reads them at each scrape.
        registry = None if self._multiprocess else CollectorRegistry()
        self._registry = registry
        self.requests = Counter(
            "deepfleet_requests",
            "HTTP requests answered.",
            ["route", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "deepfleet_request_seconds",
            "Time from arrival to answer.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "deepfleet_batch_size", "Rows per model call.", buckets=BATCH_BUCKETS, registry=registry
        )
        self.batch_requests = Histogram(
            "deepfleet_batch_requests",
            "Requests per model call.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "deepfleet_inference_seconds",
            "Time of one model call.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "deepfleet_queue_depth",
            "Requests waiting for the model.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.rejected = Counter(
            "deepfleet_rejected",
            "Requests refused before the model.",
            ["reason"],
            registry=registry,
        )

    def render(self) -> bytes:
        if self._multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self._registry)
