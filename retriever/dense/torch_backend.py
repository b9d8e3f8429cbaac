"""Exact dense search with torch: matmul plus top-k over blocks of rows, re-scored exactly.

The embedding matrix is split into contiguous row ranges, one per device (several GPUs, or the
CPU), and each range into blocks. A query batch is scored block by block (the score matrix of
one block bounds the memory) and each block keeps its best ``k + TIE_PAD`` rows. A matmul's
rounding depends on where a row falls in the kernel's tiles, so two identical vectors in two
blocks (or two places of one block) can score a few ulps apart and the lower-row-first tie rule
would break. So the best ``k + TIE_PAD`` candidates of each device are scored once more, one
float64 inner product per (query, row) pair, the same arithmetic for every row wherever it lies,
rounded to float32, and merged by (score desc, row asc): the same ids as a faiss Flat index on
exact arithmetic, without faiss-gpu, and the same ids and scores for every device layout and
batch. When a row left out scores within ``TIE_TOLERANCE`` of the k-th (many copies of one
passage), those queries are searched again with more candidates, so ties still go to the lower
row. In fp16/bf16 the candidates are chosen at that precision; only their scores are exact.

Each device holds its rows in one tensor (converted to fp16/bf16 on the host in chunks, so no
fp32 copy of the whole matrix ever sits on a GPU); blocks are views of it. On CPU in fp32 the
rows are zero-copy views of the memory-mapped shard files.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np

from .encoders import torch_dtype

log = logging.getLogger(__name__)

GPU_BLOCK_ROWS = 1 << 20
CPU_BLOCK_ROWS = 1 << 16
UPLOAD_ROWS = 1 << 18  # host rows converted and copied at a time
TIE_PAD = 8  # extra candidates per block: near-ties at the k-th place reach the exact re-score
TIE_TOLERANCE = 1e-5  # a left-out row this close (relative) to the k-th score widens the search
# float64 products held at once while re-scoring: cache-sized on CPUs, few launches on GPUs
CPU_RESCORE_ELEMENTS, GPU_RESCORE_ELEMENTS = 1 << 16, 1 << 25


def merge_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row by score desc, then id asc (ids of -1 are padding, sorted last).

    >>> s, i = merge_topk(np.array([[1.0, 3.0, 3.0, 2.0]]), np.array([[7, 9, 4, 1]]), 3)
    >>> i.tolist(), s.tolist()
    ([[4, 9, 1]], [[3.0, 3.0, 2.0]])
    """
    scores = np.where(ids < 0, -np.inf, scores)
    by_id = np.argsort(np.where(ids < 0, np.iinfo(np.int64).max, ids), axis=1, kind="stable")
    scores = np.take_along_axis(scores, by_id, axis=1)
    ids = np.take_along_axis(ids, by_id, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


class TorchBackend:
    """Exact inner-product search over ``parts`` (``(first_row, array)`` pairs, in row order).

    ``shard=True`` (or one device): each device holds a contiguous share of the rows and every
    query is scored on all of them. ``shard=False`` (replicated): every device holds all rows and
    the query batch is split between the devices. Scores are the float64 inner products of the
    float32 queries with the stored (``dtype``) rows, rounded to float32.
    """

    def __init__(
        self,
        parts: Sequence[tuple[int, np.ndarray]],
        devices: Sequence[str] = ("cpu",),
        dtype: str = "auto",
        block_rows: int | None = None,
        shard: bool = True,
    ):
        import torch

        self.devices = list(devices)
        self.mode = "sharded" if shard or len(self.devices) == 1 else "replicated"
        self.num_rows = sum(len(a) for _, a in parts)
        self.dim = int(parts[0][1].shape[1]) if parts else 0
        self.dtype = torch_dtype(dtype, self.devices[0])
        if self.mode == "sharded":  # contiguous row ranges, one per device
            bounds = np.linspace(0, self.num_rows, len(self.devices) + 1).round().astype(np.int64)
            ranges = [(int(bounds[d]), int(bounds[d + 1])) for d in range(len(self.devices))]
        else:
            ranges = [(0, self.num_rows)] * len(self.devices)
        # per device: the tensors that hold its rows, and (first_row, view) blocks of them
        self.segments: list[list[tuple[int, object]]] = []
        self.replicas: list[list[tuple[int, object]]] = []
        for device, (lo, hi) in zip(self.devices, ranges):
            rows = block_rows or (GPU_BLOCK_ROWS if device.startswith("cuda") else CPU_BLOCK_ROWS)
            segments = self._place(parts, lo, hi, device, torch)
            self.segments.append(segments)
            self.replicas.append(list(_slices(segments, lo, hi, rows)))
        self.blocks = [b for blocks in self.replicas for b in blocks] if shard else self.replicas[0]
        log.info(
            "torch backend: %d x %d in %s on %s (%s), %d blocks per device",
            self.num_rows,
            self.dim,
            self.dtype,
            ",".join(self.devices),
            self.mode,
            max(len(b) for b in self.replicas) if self.replicas else 0,
        )

    def _place(self, parts, lo: int, hi: int, device: str, torch) -> list[tuple[int, object]]:
        """Rows ``[lo, hi)`` on ``device``: views of the parts where they already are there in
        ``dtype`` (CPU fp32 shard files; tensors a caller built on the device), else one tensor
        filled chunk by chunk."""
        if all(
            (_on(a, device, torch) and a.dtype == self.dtype)
            if isinstance(a, torch.Tensor)
            else (device.startswith("cpu") and self.dtype == torch.float32)
            for _, a in parts
        ):
            return [(first, _host(a, self.dtype, torch)) for first, a in _slices(parts, lo, hi)]
        store = torch.empty((hi - lo, self.dim), dtype=self.dtype, device=device)
        for first, a in _slices(parts, lo, hi, UPLOAD_ROWS):
            store[first - lo : first - lo + len(a)].copy_(_host(a, self.dtype, torch))
        return [(lo, store)]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids (float32, int64; ``len(queries) x k``), best first."""
        import torch

        n = len(queries)
        k = min(k, self.num_rows)
        if n == 0 or k == 0:
            return np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
        q_host = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        pad = TIE_PAD
        with torch.inference_mode():
            scores, ids, floor = self._search(q_host, k, pad)
            while k + pad < self.num_rows:  # rare: a tie at the k-th place reaches a dropped row
                kth = scores[:, -1].astype(np.float64)
                tied = np.flatnonzero(kth <= floor + TIE_TOLERANCE * np.abs(kth))
                if len(tied) == 0:
                    break
                pad *= 8
                log.debug("%d queries tie at the k-th place: widening to %d", len(tied), k + pad)
                s, i, f = self._search(q_host[torch.from_numpy(tied)], k, pad)
                scores[tied], ids[tied], floor[tied] = s, i, f
        return scores, ids

    def _search(self, q_host, k: int, pad: int):
        """Merged scores and ids, plus each query's best approximate score left out (floor)."""
        if self.mode == "sharded":  # queue every device's work, then gather
            pending = [
                _queue(q_host, blocks, segments, k, pad, self.dtype)
                for blocks, segments in zip(self.replicas, self.segments)
                if blocks
            ]
            return _gather(pending, k)
        groups = np.array_split(np.arange(len(q_host)), min(len(q_host), len(self.replicas)))
        pending = [
            _queue(q_host[g[0] : g[-1] + 1], blocks, segments, k, pad, self.dtype)
            for g, blocks, segments in zip(groups, self.replicas, self.segments)
        ]
        results = [_gather([p], k) for p in pending]
        return tuple(np.concatenate(r) for r in zip(*results))


def _queue(q_host, blocks, segments, k: int, pad: int, dtype):
    """One device's candidates for ``q_host`` (asynchronous on GPUs).

    Per block, the matmul's best ``k + pad`` rows; of those, the device's best ``k + pad`` are
    re-scored exactly (``_exact_scores``). Returns their float32 scores and row ids, and per
    query the best approximate score among the rows left out (-inf when none was).
    """
    import torch

    device = blocks[0][1].device
    q = q_host.to(device)
    q_low = q.to(dtype)
    m = k + pad
    values, ids, cut = [], [], []
    for first, block in blocks:
        top = torch.topk(q_low @ block.T, min(m, block.shape[0]), dim=1, sorted=False)
        values.append(top.values)
        ids.append(top.indices + first)
        if block.shape[0] > m:
            cut.append(top.values)
    values, ids = torch.cat(values, dim=1), torch.cat(ids, dim=1)
    floor = torch.full((len(q),), -np.inf, dtype=torch.float32, device=device)
    if cut:
        floor = torch.stack(cut).amin(dim=2).amax(dim=0).float()
    if values.shape[1] > m:
        keep = torch.topk(values, m, dim=1, sorted=False)
        ids = torch.gather(ids, 1, keep.indices)
        floor = torch.maximum(floor, keep.values.amin(dim=1).float())
    return _exact_scores(q, ids, segments), ids, floor


def _exact_scores(q, ids, segments):
    """float64 inner products of ``q`` (n x d) with rows ``ids`` (n x m), rounded to float32.

    Elementwise products summed over the last axis: every (query, row) pair gets the same
    arithmetic, so identical vectors score identically wherever they are stored.
    """
    import torch

    n, m = ids.shape
    out = torch.empty((n, m), dtype=torch.float32, device=q.device)
    budget = CPU_RESCORE_ELEMENTS if q.device.type == "cpu" else GPU_RESCORE_ELEMENTS
    step = max(1, budget // max(1, m * q.shape[1]))
    for s in range(0, n, step):
        rows = _rows(segments, ids[s : s + step]).to(torch.float64)
        out[s : s + step] = (rows * q[s : s + step, None, :].to(torch.float64)).sum(-1)
    return out


def _rows(segments, ids):
    """The stored vectors of rows ``ids`` (any shape) from a device's segments."""
    import torch

    if len(segments) == 1:
        first, seg = segments[0]
        return seg[ids - first]
    seg0 = segments[0][1]
    out = torch.empty((*ids.shape, seg0.shape[1]), dtype=seg0.dtype, device=seg0.device)
    for first, seg in segments:  # several segments: views of several shard files or tensors
        mask = (ids >= first) & (ids < first + seg.shape[0])
        out[mask] = seg[ids[mask] - first]
    return out


def _gather(pending, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bring the devices' candidates to the host (waits for the GPUs) and merge them exactly."""
    scores = np.concatenate([s.cpu().numpy() for s, _, _ in pending], axis=1)
    ids = np.concatenate([i.cpu().numpy() for _, i, _ in pending], axis=1)
    floor = np.max([f.cpu().numpy() for _, _, f in pending], axis=0).astype(np.float64)
    return (*merge_topk(scores, ids, k), floor)


def _on(tensor, device: str, torch) -> bool:
    """Whether ``tensor`` lies on ``device`` (``cuda`` means the current GPU; CPUs are one)."""
    want = torch.device(device)
    if tensor.device.type != want.type:
        return False
    if want.type != "cuda":
        return True
    return tensor.device.index == (
        torch.cuda.current_device() if want.index is None else want.index
    )


def _host(array, dtype, torch):
    """A tensor of ``array`` in ``dtype`` (a view when it already is contiguous fp32/fp16)."""
    if isinstance(array, torch.Tensor):
        return array.to(dtype)
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16}.get(dtype)
    with warnings.catch_warnings():  # read-only memmap views: we never write to them
        warnings.simplefilter("ignore", UserWarning)
        if np_dtype is not None:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np_dtype))
        # bf16 has no numpy type: convert in torch
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(dtype)


def _slices(parts, start: int, stop: int, rows: int | None = None):
    """``(first_row, view)`` pieces of at most ``rows`` rows covering ``[start, stop)``."""
    for first, array in parts:
        lo, hi = max(start, first), min(stop, first + len(array))
        step = rows or max(1, hi - lo)
        for s in range(lo, hi, step):
            e = min(s + step, hi)
            yield s, array[s - first : e - first]
