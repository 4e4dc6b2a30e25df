"""Prometheus metrics of the service (text exposition format at GET /metrics).

- `shopfusion_requests_total{endpoint, status}` and `shopfusion_request_duration_seconds{endpoint}`
  (a histogram) for every endpoint;
- `shopfusion_requests_in_flight`;
- `shopfusion_index_info{version, model_id}` = 1 for the version being served, and
  `shopfusion_index_reloads_total{result}` for hot swaps;
- `shopfusion_encode_batch_size`: how many query encodes each forward pass carried (micro-batching).

With several workers (`service.workers > 1`) every process writes its samples to
`PROMETHEUS_MULTIPROC_DIR` (set by `shopfusion serve`) and /metrics adds them up across processes, as
the official client's multiprocess mode does; the index info then carries one series per worker `pid`.
"""

from __future__ import annotations

import os
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """The metrics of one worker process, on their own registry (never the global default one)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("shopfusion_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("shopfusion_request_duration_seconds", "Request latency by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("shopfusion_requests_in_flight", "Requests being answered.",
                               registry=self.registry, multiprocess_mode="livesum")
        self.index_info = Gauge("shopfusion_index_info", "The index version served (1) and its model id.",
                                ["version", "model_id"], registry=self.registry, multiprocess_mode="liveall")
        self.reloads = Counter("shopfusion_index_reloads", "Index versions loaded by hot swap, by result.",
                               ["result"], registry=self.registry)
        self.batch_size = Histogram("shopfusion_encode_batch_size", "Query encodes per forward pass.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self._info: tuple[str, str] | None = None

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def serving(self, version: str, model_id: str) -> None:
        if self._info is not None and self._info != (version, model_id):
            self.index_info.labels(*self._info).set(0)  # multiprocess files keep it: 0 = no longer served
            self.index_info.remove(*self._info)
        self._info = (version, model_id)
        self.index_info.labels(version, model_id).set(1)

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        registry: Any = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
