"""How many threads a process's search kernels use when nobody says: the cores it may run on,
or its share of them when ``--workers N`` runs N server processes on one machine.

Why share: each worker's kernels (the BM25 kernel's batch threads, faiss's OpenMP threads, the
ONNX and torch query encoders' intra-op threads) default to every core, so two workers on two
cores ran four busy threads on two cores; under load they take turns at every operator barrier.
A worker now gets ``cores // N`` (at least 1) unless the user chose: ``RETRIEVER_THREADS``, or
``OMP_NUM_THREADS`` for the OpenMP runtimes, set before the start win, as do explicit thread
arguments and flags (``--search-threads``).
"""

from __future__ import annotations

import os

ENV = "RETRIEVER_THREADS"


def available() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """``RETRIEVER_THREADS`` when set to a whole number of at least 1, else ``available()``."""
    value = os.environ.get(ENV, "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    return available()


def share(workers: int) -> int:
    """Make this worker process's default its share of the cores among ``workers`` (at least 1)
    and return it; a ``RETRIEVER_THREADS`` or ``OMP_NUM_THREADS`` the user set is kept. Call it
    before torch, faiss or ONNX Runtime start their thread pools."""
    per = max(1, default_threads() // max(1, workers)) if ENV not in os.environ else None
    if per is not None:
        os.environ[ENV] = str(per)
    per = default_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(per))
    return per
