"""GPU check sections on search: exact torch search at wiki-18 size, the service under
concurrent load, faiss where installed, the HTTP server where installed."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from gpu_common import QUICK, Skip, median, sync, timed  # noqa: F401
from gpu_encode import _texts

if TYPE_CHECKING:
    from gpu import Run


def _random_matrix(rows: int, dim: int, device: str, seed: int = 0):
    """Unit vectors in fp16 (fp32 on CPU), generated on the device chunk by chunk."""
    import torch

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    x = torch.empty((rows, dim), dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    for s in range(0, rows, 1 << 20):
        chunk = torch.randn((min(1 << 20, rows - s), dim), generator=gen, device=device)
        x[s : s + len(chunk)] = torch.nn.functional.normalize(chunk, dim=1).to(dtype)
    return x


def exact_search(run: Run) -> dict:
    import numpy as np
    import torch

    from retriever.dense.torch_backend import TorchBackend

    s, dev = run.sizes, run.device
    t = time.perf_counter()
    x = _random_matrix(s.rows, s.dim, dev)
    sync(dev)
    out = {
        "rows": s.rows,
        "dim": s.dim,
        "dtype": str(x.dtype),
        "k": 5,
        "build_s": round(time.perf_counter() - t, 1),
    }
    rng = np.random.default_rng(1)
    q = rng.standard_normal((max(s.batches), s.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    dtype = "fp16" if dev.startswith("cuda") else "fp32"
    backend = TorchBackend([(0, x)], [dev], dtype)
    ceil = run.results.get("ceilings", {})
    matrix_bytes = x.numel() * x.element_size()
    rows = []
    for batch in s.batches:
        if run.left() < 30:
            rows.append({"batch": batch, "skipped": "out of time"})
            continue
        times = timed(
            lambda b=batch, f=backend.search: f(q[:b], 5), dev, 20 if batch <= 64 else 5, 20
        )
        ms = 1000 * median(times)
        row = {"batch": batch, "ms": round(ms, 3), "qps": round(1000 * batch / ms, 1)}
        if ceil.get("copy_gb_s"):
            floor = 1000 * matrix_bytes / (ceil["copy_gb_s"] * 1e9)
            row["bandwidth_floor_ms"], row["x_bandwidth_floor"] = (
                round(floor, 3),
                round(ms / floor, 2),
            )
        rate = ceil.get("matmul_fp16_tflops") or ceil.get("matmul_fp32_tflops")
        if rate:
            floor = 1000 * 2 * s.rows * s.dim * batch / (rate * 1e12)
            row["matmul_floor_ms"], row["x_matmul_floor"] = round(floor, 3), round(ms / floor, 2)
        rows.append(row)
        print(f"  exact batch {batch}: {row}", flush=True)
    out["batches"] = rows
    # exactness: same ids as a float64 reference over a subset of the same stored vectors
    sub = x[: s.subset]
    want = _reference_topk(sub, q[:64], 5)
    got_s, got_i = TorchBackend([(0, sub)], [dev], dtype).search(q[:64], 5)
    out["subset_rows"] = int(len(sub))
    out["subset_same_ids"] = float(
        np.mean([a == b for a, b in zip(got_i.tolist(), want[1].tolist())])
    )
    out["subset_max_score_diff"] = float(np.abs(got_s - want[0]).max())
    # layouts: two logical shards / replicas on one GPU (the merge paths); all GPUs if several
    ngpu = torch.cuda.device_count() if dev.startswith("cuda") else 0
    layouts = {
        "2 shards, 1 device": ([dev, dev], True),
        "2 replicas, 1 device": ([dev, dev], False),
    }
    if ngpu > 1:
        devs = [f"cuda:{i}" for i in range(ngpu)]
        layouts |= {f"sharded x{ngpu}": (devs, True), f"replicated x{ngpu}": (devs, False)}
    base = {b: backend.search(q[:b], 5) for b in s.batches[1:3]}
    out["layouts"] = []
    for label, (devs, shard) in layouts.items():
        if run.left() < 40:
            out["layouts"].append({"layout": label, "skipped": "out of time"})
            continue
        other = TorchBackend([(0, x)], devs, dtype, shard=shard)
        for b, (ws, wi) in base.items():
            ms = 1000 * median(timed(lambda b=b, f=other.search: f(q[:b], 5), dev, 5, 10))
            gs, gi = other.search(q[:b], 5)
            out["layouts"].append(
                {
                    "layout": label,
                    "batch": b,
                    "ms": round(ms, 3),
                    "same_ids_and_scores": bool((gi == wi).all() and (gs == ws).all()),
                }
            )
        del other
    del backend, x
    return out


def _reference_topk(x, q, k: int):
    """float64 top-k (ties by row) of ``q`` against the stored rows ``x``, chunk by chunk."""
    import numpy as np
    import torch

    qd = torch.from_numpy(q).to(x.device, torch.float64)
    scores = []
    for s in range(0, len(x), 1 << 18):
        scores.append((qd @ x[s : s + (1 << 18)].to(torch.float64).T).float().cpu().numpy())
    scores = np.concatenate(scores, axis=1)
    ids = np.stack([np.lexsort((np.arange(len(r)), -r))[:k] for r in scores])
    return np.take_along_axis(scores, ids, axis=1), ids


def service_load(run: Run) -> dict:
    from retriever.server.service import RetrievalService, ServiceConfig

    root = run.results.get("index_root")
    if not root:
        raise Skip("needs the index the encode_verb section builds")
    s, dev = run.sizes, run.device
    queries = [f"who wrote {t.split(chr(10))[0]} and when {i}" for i, t in enumerate(_texts(4096))]
    out = []
    for max_batch, label in ((64, "coalesced"), (1, "max_batch=1")):
        config = ServiceConfig(
            index=root,
            retrievers=("dense-whole",),
            device=dev,
            dense_backend="torch",
            cache_size=0,
            max_batch=max_batch,
            queue_size=4096,
        )
        with RetrievalService(config) as service:
            for callers in s.concurrency:
                if run.left() < 20:
                    out.append({"mode": label, "callers": callers, "skipped": "out of time"})
                    continue
                out.append(
                    {
                        "mode": label,
                        "callers": callers,
                        **_load(service, queries, callers, s.seconds),
                    }
                )
                print(f"  service {out[-1]}", flush=True)
    return {"rows": out}


def _load(service, queries, callers: int, seconds: float) -> dict:
    done, errors, stop = [0] * callers, [], time.monotonic() + seconds
    latencies: list[float] = []

    def caller(j):
        i = j
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                service.retrieve([queries[i % len(queries)]], topk=5, retriever="dense-whole")
            except Exception as exc:  # a queue-full answer is a result too: count it
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - t)
            done[j] += 1
            i += callers

    threads = [threading.Thread(target=caller, args=(j,)) for j in range(callers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    latencies.sort()
    return {
        "qps": round(sum(done) / wall, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "errors": len(errors),
    }


def faiss_gpu(run: Run) -> dict:
    import importlib.util

    if importlib.util.find_spec("faiss") is None:
        raise Skip("faiss is not installed here (the GPU image has none): torch backend only")
    import faiss
    import numpy as np

    from retriever.dense.faiss_backend import FaissBackend, to_gpu
    from retriever.dense.torch_backend import TorchBackend

    if run.device.startswith("cuda") and faiss.get_num_gpus() == 0:
        raise Skip("faiss here is CPU-only (no faiss-gpu)")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((min(run.sizes.subset, 200_000), 64)).astype(np.float32)
    q = rng.standard_normal((64, 64)).astype(np.float32)
    flat = faiss.IndexFlatIP(64)
    flat.add(x)
    if run.device.startswith("cuda"):
        index, _ = to_gpu(flat, [run.device])
        backend = FaissBackend(index, on_gpu=True)
    else:
        backend = FaissBackend(flat)
    _, fi = backend.search(q, 5)
    _, ti = TorchBackend([(0, x)], ["cpu"], "fp32").search(q, 5)
    return {"same_ids_as_torch": float((fi == ti).all(axis=1).mean())}


def http(run: Run) -> dict:
    """The FastAPI server over the encode section's index: one /retrieve of 8 queries checked,
    then single-query requests from one client for a few seconds."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed here: the HTTP server is left to tests/")
    root = run.results.get("index_root")
    if not root:
        raise Skip("needs the index the encode_verb section builds")
    import socket

    import httpx
    import uvicorn

    from retriever.server.app import create_app
    from retriever.server.service import ServiceConfig

    config = ServiceConfig(
        index=root,
        retrievers=("dense-whole",),
        device=run.device,
        dense_backend="torch",
        cache_size=0,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, background=False),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    queries = [f"who wrote {t.split(chr(10))[0]}" for t in _texts(64)]
    try:
        deadline = time.monotonic() + 120
        while not server.started:  # the lifespan loads the model and the vectors first
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/retrieve"
        with httpx.Client(timeout=60) as client:
            r = client.post(url, json={"queries": queries[:8], "topk": 5, "return_scores": True})
            r.raise_for_status()
            result = r.json()["result"]
            if len(result) != 8 or any(len(hits) != 5 for hits in result):
                raise RuntimeError(f"/retrieve answered {[len(h) for h in result]} hits")
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < run.sizes.seconds:
                q = queries[done % len(queries)]
                client.post(url, json={"queries": [q], "topk": 5}).raise_for_status()
                done += 1
            rate = done / (time.perf_counter() - start)
    finally:
        server.should_exit = True
        thread.join(30)
    return {"retrieve_8_queries": "ok", "single_query_requests_per_s": round(rate, 1)}
