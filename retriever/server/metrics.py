"""The service's Prometheus metrics, through ``prometheus_client``: one registry per service (two
services in one process, or a test after a test, never share counts), and the gauges read at
scrape time through a collector.

>>> m = Metrics()
>>> m.requests.labels(endpoint="/retrieve", code="200").inc()
>>> 'retriever_requests_total{code="200",endpoint="/retrieve"} 1.0' in m.render()
True
>>> m.value("retriever_requests_total", endpoint="/retrieve", code="200")
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# a gauge callback returns {((label, value), ...): number}
GaugeRead = Callable[[], dict[tuple, float]]


class _Gauges(Collector):
    """Gauges whose values are read when Prometheus scrapes (queue depth, readiness, memory)."""

    def __init__(self) -> None:
        self._gauges: list[tuple[str, str, GaugeRead]] = []

    def add(self, name: str, help_text: str, read: GaugeRead) -> None:
        self._gauges.append((name, help_text, read))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, help_text, read in self._gauges:
            values = read()
            labels = sorted({k for key in values for k, _ in key})
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for key, value in sorted(values.items()):
                given = dict(key)
                family.add_metric([given.get(k, "") for k in labels], value)
            yield family

    def describe(self) -> list:
        return []  # names are known only at scrape time; no clash check needed


class Metrics:
    """Every metric the service exports; the service attaches its gauges with ``add_gauge``."""

    def __init__(self, prefix: str = "retriever"):
        p = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{p}_requests", "HTTP requests by endpoint and status code",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            f"{p}_request_seconds", "Request latency in seconds by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queries = Counter(
            f"{p}_queries", "Queries received, by retriever", ["retriever"], registry=r
        )
        self.batch_size = Histogram(
            f"{p}_batch_size", "Queries per search batch, by retriever",
            ["retriever"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_requests = Histogram(
            f"{p}_batch_requests", "Requests coalesced per batch, by retriever",
            ["retriever"], buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            f"{p}_batch_seconds", "Search time per batch in seconds, by retriever",
            ["retriever"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_errors = Counter(
            f"{p}_batch_errors", "Batches that raised, by retriever", ["retriever"], registry=r
        )
        self.cache_hits = Counter(
            f"{p}_cache_hits", "Result cache hits, by retriever", ["retriever"], registry=r
        )
        self.cache_misses = Counter(
            f"{p}_cache_misses", "Result cache misses, by retriever", ["retriever"], registry=r
        )
        self.rejected = Counter(
            f"{p}_rejected", "Requests refused with 429, by retriever", ["retriever"], registry=r
        )
        self._children: dict[tuple, Any] = {}
        self._gauges = _Gauges()
        r.register(self._gauges)

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, remembered: the per-request path skips the library's
        label lookup and its lock."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def add_gauge(self, name: str, help_text: str, read: GaugeRead) -> None:
        self._gauges.add(name, help_text, read)

    def observe_batch(
        self,
        retriever: str,
        queries: int,
        requests: int,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """The ``Batcher`` observer hook."""
        self.child(self.batch_size, retriever).observe(queries)
        self.child(self.batch_requests, retriever).observe(requests)
        self.child(self.batch_seconds, retriever).observe(seconds)
        if error is not None:
            self.child(self.batch_errors, retriever).inc()

    def value(self, sample: str, **labels: str) -> float:
        """One sample's current value (0 when it has not been recorded), e.g.
        ``value("retriever_batch_size_count", retriever="bm25")``."""
        return self.registry.get_sample_value(sample, labels) or 0.0

    def render(self) -> str:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry).decode()
