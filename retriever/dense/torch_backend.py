"""Exact dense search with torch: matmul plus top-k over blocks of rows, merged exactly.

The embedding matrix is split into contiguous row ranges, one per device (several GPUs, or the
CPU), and each range into blocks. A query batch is scored block by block (the score matrix of
one block bounds the memory), each block keeps its own top k, and the candidates of all blocks
are merged by (score desc, row asc): the same ids as a faiss Flat index, without faiss-gpu.
The matrix is copied to a GPU block by block (converted to fp16/bf16 on the host first), so no
fp32 copy of the whole matrix ever sits on the GPU. On CPU in fp32, blocks are zero-copy views
of the memory-mapped shard files.
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
    the query batch is split between the devices.
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
        # per device: (first_row, tensor on that device) blocks
        self.replicas: list[list[tuple[int, object]]] = []
        for device, (lo, hi) in zip(self.devices, ranges):
            rows = block_rows or (GPU_BLOCK_ROWS if device.startswith("cuda") else CPU_BLOCK_ROWS)
            self.replicas.append(
                [
                    (first, self._upload(a, device, torch))
                    for first, a in _slices(parts, lo, hi, rows)
                ]
            )
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

    def _upload(self, array: np.ndarray, device: str, torch):
        np_dtype = {torch.float32: np.float32, torch.float16: np.float16}.get(self.dtype)
        if np_dtype is not None:
            with warnings.catch_warnings():  # read-only memmap views: we never write to them
                warnings.simplefilter("ignore", UserWarning)
                host = torch.from_numpy(np.ascontiguousarray(array, dtype=np_dtype))
        else:  # bf16 has no numpy type: convert in torch, one block at a time
            host = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.dtype)
        if device.startswith("cpu"):
            return host
        return host.to(device, non_blocking=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids (float32, int64; ``len(queries) x k``), best first."""
        import torch

        n = len(queries)
        k = min(k, self.num_rows)
        if n == 0 or k == 0:
            return np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
        q_host = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        with torch.inference_mode():
            if self.mode == "sharded":
                return _gather(_queue(q_host, self.blocks, k, self.dtype), k)
            # replicated: split the batch; queue every device's work, then gather
            groups = np.array_split(np.arange(n), min(n, len(self.replicas)))
            pending = [
                _queue(q_host[g[0] : g[-1] + 1], blocks, k, self.dtype)
                for g, blocks in zip(groups, self.replicas)
            ]
            results = [_gather(p, k) for p in pending]
        return np.concatenate([s for s, _ in results]), np.concatenate([i for _, i in results])


def _queue(q_host, blocks, k: int, dtype) -> list:
    """Score ``q_host`` against ``blocks`` (asynchronous on GPUs); per-block top-k tensors."""
    import torch

    q_on, pending = {}, []
    for first, block in blocks:
        device = str(block.device)
        if device not in q_on:
            q_on[device] = q_host.to(block.device).to(dtype)
        top = torch.topk(q_on[device] @ block.T, min(k, block.shape[0]), dim=1, sorted=False)
        pending.append((first, top.values, top.indices))
    return pending


def _gather(pending, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bring the per-block candidates to the host (waits for the GPUs) and merge them exactly."""
    scores = np.concatenate([v.float().cpu().numpy() for _, v, _ in pending], axis=1)
    ids = np.concatenate([i.cpu().numpy() + first for first, _, i in pending], axis=1)
    return merge_topk(scores, ids, k)


def _slices(parts, start: int, stop: int, rows: int):
    """``(first_row, array view)`` blocks of at most ``rows`` rows covering ``[start, stop)``."""
    for first, array in parts:
        lo, hi = max(start, first), min(stop, first + len(array))
        for s in range(lo, hi, rows):
            e = min(s + rows, hi)
            yield s, array[s - first : e - first]
