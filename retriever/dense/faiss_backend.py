"""FAISS search backends (CPU, and GPU when faiss-gpu is installed) and faiss file helpers.

Call faiss from one thread with batched queries: every call sets the OpenMP pool to one thread
for a single query (no fork/join overhead) and to all cores for a batch, and puts the calling
thread's setting back after; a lock keeps two threads from entering faiss at once (two OpenMP
pools would fight over the cores).

Why put it back: with torch imported first, faiss's ``omp_set_num_threads`` is torch's OpenMP
runtime's, and OpenMP keeps that number per thread. The server's worker thread encodes the
next batch with torch on whatever the last search left, so one single-query search put every
later encode on one core (issue 26: lone queries on one core, bimodal throughput).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cores import default_threads
from ..errors import BadRequestError, IndexFormatError

log = logging.getLogger(__name__)

METRICS = {0: "ip", 1: "l2"}  # faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2
GPU_ADD_ROWS = 1 << 20
RERANK_ELEMENTS = 1 << 22  # float64 values held at once while re-scoring


def flat_file_vectors(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """The vectors of a faiss ``IndexFlatIP``/``IndexFlatL2`` file, memory-mapped, and its metric.

    Reads Search-R1's 65 GB ``e5_Flat.index`` without loading it: the file is a short header
    (fourcc, d, ntotal, two dummies, is_trained, metric) followed by ``ntotal * d`` floats.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(64)
    fourcc = head[:4]
    if fourcc not in (b"IxFI", b"IxF2"):
        raise IndexFormatError(
            f"{path} is not a faiss Flat index (header {fourcc!r}): use the faiss backend"
        )
    d, ntotal = struct.unpack_from("<iq", head, 4)
    pos = 4 + 4 + 8 + 8 + 8 + 1
    (metric_type,) = struct.unpack_from("<i", head, pos)
    pos += 4
    if metric_type > 1:
        pos += 4
    (count,) = struct.unpack_from("<Q", head, pos)
    pos += 8
    if count != ntotal * d:
        raise IndexFormatError(f"{path}: header says {ntotal} x {d} but holds {count} floats")
    if path.stat().st_size != pos + 4 * count:
        raise IndexFormatError(
            f"{path} is {path.stat().st_size} bytes, expected {pos + 4 * count}: truncated?"
        )
    vectors = np.memmap(path, dtype=np.float32, mode="r", offset=pos, shape=(ntotal, d))
    return vectors, METRICS.get(metric_type, "l2")


def read_index(path: str | os.PathLike):
    """Open a faiss index file, memory-mapping its vectors where faiss can (flat codes, IVF lists)."""
    import faiss

    path = str(path)
    if not os.path.isfile(path):
        raise IndexFormatError(
            f"faiss index {path} is missing: rebuild it with python -m index_build faiss"
        )
    for flags in (
        faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY,
        faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY,
        0,
    ):
        try:
            return faiss.read_index(path, flags)
        except RuntimeError as exc:
            log.debug("faiss.read_index(%s, %d) failed: %s", path, flags, exc)
    raise IndexFormatError(f"faiss cannot read {path}: is it a faiss index file?")


def set_search_params(index, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Apply nprobe / efSearch wherever they exist in the index (also under a pre-transform)."""
    import faiss

    if nprobe is not None:
        try:
            faiss.extract_index_ivf(index).nprobe = int(nprobe)
        except (RuntimeError, AttributeError):
            pass
    if ef_search is not None:
        inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
        for candidate in (faiss.downcast_index(index), inner):
            if hasattr(candidate, "hnsw"):
                candidate.hnsw.efSearch = int(ef_search)


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissBackend:
    """Search a faiss index (CPU, or GPU copies made by ``to_gpu``).

    ``rerank=(parts, depth)``: fetch ``depth`` candidates from the index and score them again
    exactly against the full vectors of the memory-mapped shards (``(first_row, array)``
    pairs). PQ/SQ codes are lossy: on 768-d vectors IVF-PQ alone ranks about half of the true
    top 10; re-scoring 100 candidates reads 100 rows per query from the page cache instead of
    keeping the fp32 matrix in RAM (faiss's own IndexRefineFlat would).
    """

    def __init__(
        self,
        index,
        metric: str = "ip",
        threads: int | None = None,
        on_gpu: bool = False,
        rerank: tuple[Sequence[tuple[int, np.ndarray]], int] | None = None,
    ):
        self.index = index
        self.metric = metric
        self.num_rows = int(index.ntotal)
        self.dim = int(index.d)
        self.threads = threads or default_threads()
        self.on_gpu = on_gpu
        self.rerank = rerank if rerank and rerank[1] > 0 else None
        self._lock = threading.Lock()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (higher is better; L2 distances negated) and row ids, best first."""
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.num_rows)
        if len(queries) == 0 or k == 0:
            return np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        depth = min(max(k, self.rerank[1]), self.num_rows) if self.rerank else k
        with self._lock:
            if self.on_gpu:
                scores, ids = self.index.search(queries, depth)
            else:  # 0.1 us: set it every call, other code may have changed it
                before = faiss.omp_get_max_threads()
                faiss.omp_set_num_threads(1 if len(queries) == 1 else self.threads)
                try:
                    scores, ids = self.index.search(queries, depth)
                finally:
                    faiss.omp_set_num_threads(before)  # this thread's torch encodes with it
        if self.rerank:
            return exact_rerank(queries, ids, self.rerank[0], k, self.metric)
        if self.metric == "l2":
            scores = -scores
        return scores, ids


def exact_rerank(
    queries: np.ndarray, ids: np.ndarray, parts, k: int, metric: str = "ip"
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of candidate rows ``ids`` (-1: none) by their exact float64 scores
    (inner product, or negated squared L2) against the vectors in ``parts``; ties by row."""
    from .torch_backend import merge_topk

    n, depth = ids.shape
    scores = np.empty((n, depth), np.float32)
    step = max(1, RERANK_ELEMENTS // max(1, depth * queries.shape[1]))
    for s in range(0, n, step):
        chunk = ids[s : s + step]
        vectors = np.zeros((*chunk.shape, queries.shape[1]), np.float64)
        for first, array in parts:
            inside = (chunk >= first) & (chunk < first + len(array))
            if inside.any():
                rows = chunk[inside] - first
                order = np.argsort(rows, kind="stable")  # sorted reads: fewer page misses
                where = tuple(axis[order] for axis in inside.nonzero())
                vectors[where] = array[rows[order]]
        q = queries[s : s + step].astype(np.float64)[:, None, :]
        if metric == "l2":
            scores[s : s + step] = -((vectors - q) ** 2).sum(-1)
        else:
            scores[s : s + step] = (vectors * q).sum(-1)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    scores, ids = merge_topk(scores, ids, k)
    return scores, np.where(np.isfinite(scores), ids, -1)


def to_gpu(
    index,
    devices: Sequence[str],
    shard: bool = True,
    vectors: Sequence[tuple[int, np.ndarray]] | None = None,
):
    """A GPU copy of ``index`` in fp16, sharded (or replicated) over ``devices``.

    A Flat index is rebuilt on the GPUs from ``vectors`` (or its own codes) in chunks of
    ``GPU_ADD_ROWS`` rows, so the fp32 copy of the whole matrix is never on a GPU at once.
    """
    import faiss

    if not gpu_available():
        raise BadRequestError(
            "faiss-gpu is not installed (or sees no GPU): use backend='torch' for exact GPU search, "
            "or install faiss-gpu (conda install -c pytorch faiss-gpu)"
        )
    gpus = [int(d.split(":")[1]) if ":" in d else 0 for d in devices]
    resources = [faiss.StandardGpuResources() for _ in gpus]
    flat = faiss.downcast_index(index)
    if isinstance(flat, faiss.IndexFlat):
        parts = vectors or [
            (
                0,
                faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(
                    flat.ntotal, flat.d
                ),
            )
        ]
        return _flat_to_gpus(parts, flat.d, flat.metric_type, resources, gpus, shard), resources
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    options.shard = shard
    vres, vdev = faiss.GpuResourcesVector(), faiss.Int32Vector()
    for res, gpu in zip(resources, gpus):
        vres.push_back(res)
        vdev.push_back(gpu)
    return faiss.index_cpu_to_gpu_multiple(vres, vdev, index, options), resources


def _flat_to_gpus(parts, d: int, metric: int, resources, gpus: list[int], shard: bool):
    import faiss

    def new_gpu_flat(res, gpu):
        config = faiss.GpuIndexFlatConfig()
        config.device = gpu
        config.useFloat16 = True
        return faiss.GpuIndexFlat(res, d, metric, config)

    if len(gpus) == 1:
        target = new_gpu_flat(resources[0], gpus[0])
        members = [target]
    else:
        target = faiss.IndexShards(d, True, True) if shard else faiss.IndexReplicas(d, True)
        members = [new_gpu_flat(res, gpu) for res, gpu in zip(resources, gpus)]
    total = sum(len(a) for _, a in parts)
    bounds = np.linspace(0, total, len(members) + 1).round().astype(np.int64) if shard else None
    for m, member in enumerate(members):
        lo, hi = (int(bounds[m]), int(bounds[m + 1])) if shard else (0, total)
        for first, array in parts:
            a, b = max(lo, first), min(hi, first + len(array))
            for s in range(a, b, GPU_ADD_ROWS):
                chunk = np.ascontiguousarray(
                    array[s - first : min(s + GPU_ADD_ROWS, b) - first], dtype=np.float32
                )
                member.add(chunk)
        if len(members) > 1:
            target.add_shard(member) if shard else target.addIndex(member)
    target.members = members  # keep the Python objects alive as long as the container
    return target
