"""How many threads a process's search kernels use when no argument or flag says: the cores it
may run on, or ``RETRIEVER_THREADS``.

The BM25 kernel's batch threads, faiss's OpenMP threads and the ONNX query encoder's batch
threads take this default. Every ``--workers`` process takes it too, so by default each worker
may use the whole machine: a worker that gets the only busy connections still uses every core.
``RETRIEVER_THREADS=1`` with ``--workers`` equal to the cores once served more under many small
concurrent requests (dense, 2 cores, 64 clients: 736 vs 595 queries/s), but a few connections
carrying big batches can then land on one worker and leave a core idle (4 x 64: 606 vs 709,
spread 75%); since the ONNX encoder runs a call's batches side by side, one worker at every core
serves 835 and 1,009 there (BENCHMARKS.md, "Query encoders on CPU"). The entry points make a set
``RETRIEVER_THREADS`` bound torch's and faiss's OpenMP threads too (``follow_env``), unless
``OMP_NUM_THREADS`` is set.
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


def _chosen() -> int | None:
    value = os.environ.get(ENV, "").strip()
    return int(value) if value.isdigit() and int(value) >= 1 else None


def default_threads() -> int:
    """``RETRIEVER_THREADS`` when set to a whole number of at least 1, else ``available()``."""
    return _chosen() or available()


def follow_env() -> None:
    """Entry points, before torch or faiss start their thread pools: a ``RETRIEVER_THREADS``
    the user set becomes ``OMP_NUM_THREADS`` too, unless that is set."""
    chosen = _chosen()
    if chosen is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(chosen))
