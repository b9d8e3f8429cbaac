"""Prometheus text-format metrics, written by hand (no client library needed).

>>> m = Metrics()
>>> m.requests.inc(endpoint="/retrieve", code="200")
>>> "retriever_requests_total{code=\\"200\\",endpoint=\\"/retrieve\\"} 1" in m.render()
True
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Counter:
    def __init__(self, name: str, help_text: str):
        self.name, self.help, self.kind = name, help_text, "counter"
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def samples(self) -> Iterable[str]:
        for key, value in sorted(self._values.items()):
            yield f"{self.name}{_labels(dict(key))} {_num(value)}"


class Gauge:
    """A value read at render time from a callback returning {labels tuple: value}."""

    def __init__(self, name: str, help_text: str, read: Callable[[], dict[tuple, float]]):
        self.name, self.help, self.kind = name, help_text, "gauge"
        self._read = read

    def samples(self) -> Iterable[str]:
        for key, value in sorted(self._read().items()):
            yield f"{self.name}{_labels(dict(key))} {_num(value)}"


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        self.name, self.help, self.kind = name, help_text, "histogram"
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[tuple, list] = {}  # labels -> [bucket counts, sum, count]
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [[0] * len(self.buckets), 0.0, 0]
            series[0][i] += 1
            series[1] += value
            series[2] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return 0 if series is None else series[2]

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted((k, (list(v[0]), v[1], v[2])) for k, v in self._series.items())
        for key, (counts, total, n) in items:
            labels = dict(key)
            cumulative = 0
            for le, c in zip(self.buckets, counts):
                cumulative += c
                yield f"{self.name}_bucket{_labels({**labels, 'le': _num(le)})} {cumulative}"
            yield f"{self.name}_sum{_labels(labels)} {_num(total)}"
            yield f"{self.name}_count{_labels(labels)} {n}"


class Metrics:
    """Every metric the service exports; gauges are attached by the service."""

    def __init__(self, prefix: str = "retriever"):
        p = prefix
        self.requests = Counter(f"{p}_requests_total", "HTTP requests by endpoint and status code")
        self.request_seconds = Histogram(
            f"{p}_request_seconds", "Request latency in seconds by endpoint", LATENCY_BUCKETS
        )
        self.queries = Counter(f"{p}_queries_total", "Queries received, by retriever")
        self.batch_size = Histogram(
            f"{p}_batch_size", "Queries per search batch, by retriever", BATCH_BUCKETS
        )
        self.batch_requests = Histogram(
            f"{p}_batch_requests", "Requests coalesced per batch, by retriever", BATCH_BUCKETS
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_seconds", "Search time per batch in seconds, by retriever", LATENCY_BUCKETS
        )
        self.batch_errors = Counter(f"{p}_batch_errors_total", "Batches that raised, by retriever")
        self.cache_hits = Counter(f"{p}_cache_hits_total", "Result cache hits, by retriever")
        self.cache_misses = Counter(f"{p}_cache_misses_total", "Result cache misses, by retriever")
        self.rejected = Counter(f"{p}_rejected_total", "Requests refused with 429, by retriever")
        self._metrics: list = [
            self.requests,
            self.request_seconds,
            self.queries,
            self.batch_size,
            self.batch_requests,
            self.batch_seconds,
            self.batch_errors,
            self.cache_hits,
            self.cache_misses,
            self.rejected,
        ]

    def add_gauge(self, name: str, help_text: str, read: Callable[[], dict[tuple, float]]) -> None:
        self._metrics.append(Gauge(name, help_text, read))

    def observe_batch(
        self,
        retriever: str,
        queries: int,
        requests: int,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """The ``Batcher`` observer hook."""
        self.batch_size.observe(queries, retriever=retriever)
        self.batch_requests.observe(requests, retriever=retriever)
        self.batch_seconds.observe(seconds, retriever=retriever)
        if error is not None:
            self.batch_errors.inc(retriever=retriever)

    def render(self) -> str:
        lines = []
        for metric in self._metrics:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
