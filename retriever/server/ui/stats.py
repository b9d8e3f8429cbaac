"""``/ui/api/stats``: the service's metrics as JSON, read from its ``prometheus_client`` registry.

The samples are taken as the registry holds them (``collect()``): no Prometheus text is rendered
and parsed back on every poll of the stats page. Short names drop the ``retriever_`` prefix and a
counter's ``_total``; ``*_created`` samples (creation times) are left out.

>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> Counter("retriever_requests", "h", ["endpoint", "code"], registry=registry).labels(
...     endpoint="/retrieve", code="200").inc(3)
>>> snapshot(registry)["counters"]["requests"]
[{'labels': {'endpoint': '/retrieve', 'code': '200'}, 'value': 3.0}]
"""

from __future__ import annotations

import math

from prometheus_client.registry import CollectorRegistry


def _short(family: str, prefix: str) -> str:
    name = family[len(prefix) :] if family.startswith(prefix) else family
    return name[: -len("_total")] if name.endswith("_total") else name


def _histograms(metric) -> list[dict]:
    """One entry per label set: cumulative ``[le, count]`` buckets by ``le`` (``"+Inf"`` last,
    as JSON has no infinity), the sum and the count."""
    entries: dict[tuple, dict] = {}
    for sample in metric.samples:
        suffix = sample.name[len(metric.name) :]
        if suffix not in ("_bucket", "_sum", "_count"):
            continue  # _created
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = {"labels": labels, "buckets": [], "sum": 0.0, "count": 0.0}
        if suffix == "_bucket":
            entry["buckets"].append([float(sample.labels["le"]), float(sample.value)])
        else:
            entry[suffix[1:]] = float(sample.value)
    for entry in entries.values():
        entry["buckets"].sort(key=lambda b: b[0])
        entry["buckets"] = [[("+Inf" if le == math.inf else le), c] for le, c in entry["buckets"]]
    return list(entries.values())


def snapshot(registry: CollectorRegistry, prefix: str = "retriever_") -> dict:
    """``{"counters", "gauges", "histograms"}``, each by short name: a list of
    ``{"labels", "value"}`` (histograms: ``{"labels", "buckets", "sum", "count"}``). Metric
    types other than counter and histogram (gauge, info, summary, untyped) count as gauges."""
    out: dict[str, dict[str, list]] = {"counters": {}, "gauges": {}, "histograms": {}}
    for metric in registry.collect():
        short = _short(metric.name, prefix)
        if metric.type == "histogram":
            found = _histograms(metric)
            if found:
                out["histograms"].setdefault(short, []).extend(found)
            continue
        group = out["counters" if metric.type == "counter" else "gauges"]
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            group.setdefault(short, []).append(
                {"labels": dict(sample.labels), "value": float(sample.value)}
            )
    return out
