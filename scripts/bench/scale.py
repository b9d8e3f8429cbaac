"""Scale-out: one vs two replicas under load, and the 8-GPU sharded/replicated plan on paper.

Measured here, each against its one-replica baseline in the same run:

- ``plain``: ``python -m retriever.server`` processes, the multi-URL ``HTTPClient`` spreading
  requests over them (least outstanding);
- ``ray-serve``: ``python -m retriever.ray_serve --replicas N`` (a local Ray, Ray's HTTP proxy);
- ``torch dense`` (when the dense code is present): exact search over synthetic vectors on one
  CPU "device", sharded over two, replicated over two.

Load: closed-loop clients in 2 load-generator processes, the NQ test questions as queries,
result cache off; two shapes: single-query requests (many agents) and 64-query requests (a
trainer's batched step). On a 2-core machine the replicas, the proxy and the load generators
share the same two cores: a second replica can only help where one replica leaves a core idle.

Then prints the 8-GPU arithmetic from docs/design.md's performance model (21M x 768 fp16, H200
4.3 TB/s and 790 TFLOP/s): labelled as arithmetic, not measurement.

    .venv/bin/python scripts/bench/scale.py --index /tmp/h5/wx
    .venv/bin/python scripts/bench/scale.py --smoke  # a few bundled articles, plain servers only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import common as c
import plan_gpu

CORES = os.cpu_count() or 1


def start_plain(index: str, n: int, retriever: str) -> tuple[list, list[str], float]:
    """``n`` server processes; the seconds until the last one is ready."""
    t0 = time.perf_counter()
    threads = str(max(1, CORES // n))
    flags = ["--retrievers", retriever, "--cache-size", "0", "--queue-size", "4096"]
    servers = [c.ServerProcess(index, *flags, "--search-threads", threads) for _ in range(n)]
    for s in servers:
        s.wait()
    return servers, [s.url for s in servers], time.perf_counter() - t0


def start_serve(index: str, n: int, retriever: str) -> tuple[list, list[str], float]:
    flags = ["--replicas", str(n), "--num-cpus-per-replica", str(CORES / n)]
    flags += ["--retrievers", retriever, "--cache-size", "0", "--queue-size", "4096"]
    flags += ["--search-threads", str(max(1, CORES // n))]
    server = c.ServerProcess(
        index, *flags, module="retriever.ray_serve", env={"RAY_DEDUP_LOGS": "1"}
    )
    return [server], [server.url], server.wait()


def stop(servers: list) -> None:
    for s in servers:
        s.stop()


def _generator(args) -> tuple[list[float], int, float]:
    """One load-generator process: ``clients`` closed-loop clients of ``HTTPClient(urls)``."""
    urls, retriever, queries, clients, per_request, seconds, offset = args
    from retriever.client import HTTPClient

    async def main():
        client = HTTPClient(urls, retries=3, max_connections=clients)
        latencies: list[float] = []
        errors = 0
        stop_at = time.perf_counter() + seconds

        async def one(i: int):
            nonlocal errors
            j = offset + i * 7919
            while time.perf_counter() < stop_at:
                batch = [queries[(j + x) % len(queries)] for x in range(per_request)]
                j += per_request * clients + 1
                t = time.perf_counter()
                try:
                    await client.aretrieve(batch, topk=3, retriever=retriever)
                    latencies.append(time.perf_counter() - t)
                except Exception:
                    errors += 1

        t0 = time.perf_counter()
        try:
            await asyncio.gather(*[one(i) for i in range(clients)])
        finally:
            await client.aclose()
        return latencies, errors, time.perf_counter() - t0

    return asyncio.run(main())


def drive(urls, retriever, queries, clients, per_request, seconds, procs=2) -> dict:
    lat, errors, elapsed = c.in_processes(
        _generator,
        clients,
        procs,
        lambda i, share: (urls, retriever, queries, share, per_request, seconds, i * 100_003),
    )
    return {
        "req_s": len(lat) / elapsed,
        "q_s": len(lat) * per_request / elapsed,
        "p50_ms": c.percentile(lat, 50),
        "p99_ms": c.percentile(lat, 99),
        "errors": errors,
    }


def dense_devices(
    n: int, d: int, devices: list[str], dtype: str, reps: int = 5, batches=(1, 64, 1024)
) -> list[dict]:
    """Torch exact search: one device, sharded over ``devices``, replicated over them."""
    import numpy as np

    from retriever.dense.torch_backend import TorchBackend

    rng = np.random.default_rng(0)
    x = np.empty((n, d), np.float16 if dtype == "fp16" else np.float32)
    for s in range(0, n, 1 << 20):
        e = min(s + (1 << 20), n)
        x[s:e] = rng.standard_normal((e - s, d), dtype=np.float32)
    modes = [("1 device", devices[:1], True)]
    if len(devices) > 1:
        modes += [(f"sharded x{len(devices)}", devices, True)]
        modes += [(f"replicated x{len(devices)}", devices, False)]
    out = []
    for label, devs, shard in modes:
        backend = TorchBackend([(0, x)], devs, dtype, shard=shard)
        for batch in batches:
            q = rng.standard_normal((batch, d), dtype=np.float32)
            backend.search(q, 10)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                backend.search(q, 10)
                times.append(time.perf_counter() - t)
            out.append({"batch": batch, "mode": label, "ms": 1000 * c.median(times)})
        del backend
    base = {r["batch"]: r["ms"] for r in out if r["mode"] == "1 device"}
    for r in out:
        r["vs_1"] = base[r["batch"]] / r["ms"]
    return sorted(out, key=lambda r: r["batch"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--index", help="index root with a bm25 part (the 664k one)")
    ap.add_argument("--retriever", default="bm25")
    ap.add_argument("--seconds", type=float, default=4.0, help="per run of a point")
    ap.add_argument("--repeat", type=int, default=3, help="runs per point (median reported)")
    ap.add_argument("--families", default="plain,ray-serve", help="comma list")
    ap.add_argument("--no-dense", action="store_true", help="skip the torch device rows")
    ap.add_argument("--dense-devices", default="cpu:0,cpu:1", help="e.g. cuda:0,cuda:1,...")
    ap.add_argument("--dense-n", type=int, default=200_000, help="synthetic vectors")
    ap.add_argument("--dense-dim", type=int, default=384)
    ap.add_argument("--dense-dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.index = str(c.smoke_index())
        args.families, args.seconds, args.repeat = "plain", 0.5, 1
        args.dense_n, args.dense_dim = 2000, 16
        args.procs = 1  # load-generator processes per point, and no warm-up runs
        print("smoke: Ray Serve left out (plain servers only)")
    if not args.index:
        ap.error("--index is required (or --smoke)")
    queries = c.nq_questions(3610, smoke=args.smoke)
    shapes = [("1 query/request", 1, 32), ("64 queries/request", 64, 4)]
    starters = {"plain": start_plain, "ray-serve": start_serve}
    rows, out = [], {"bench": "scale", "machine": c.machine(), "index": args.index}
    for family in [f for f in args.families.split(",") if f]:
        results = {}
        for n in (1, 2):
            procs, urls, ready = starters[family](args.index, n, args.retriever)
            try:
                for _, per_request, clients in [] if args.smoke else shapes:  # warm up both
                    warm = queries[-300:]
                    drive(urls, args.retriever, warm, clients, per_request, 1.5, args.procs)
                for shape, per_request, clients in shapes:
                    runs = [
                        drive(
                            urls,
                            args.retriever,
                            queries,
                            clients,
                            per_request,
                            args.seconds,
                            args.procs,
                        )
                        for _ in range(args.repeat)
                    ]
                    r = {k: v for k, v in c.medians(runs).items() if k != "errors"}
                    r["errors"] = sum(x["errors"] for x in runs)
                    results[(n, shape)] = r
                    base = results[(1, shape)]["q_s"]
                    row = [family, n, shape, clients, f"{r['q_s']:.0f}", f"{r['req_s']:.0f}"]
                    row += [f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", r["errors"]]
                    row += [f"{r['q_s'] / base:.2f}x", f"{ready:.1f}"]
                    rows.append(row)
                    out[f"{family} x{n} {shape}"] = {k: round(v, 2) for k, v in r.items()}
                    print(" | ".join(str(c) for c in row), flush=True)
            finally:
                stop(procs)
    header = ["family", "replicas", "shape", "clients", "queries/s", "req/s", "p50 ms", "p99 ms"]
    header += ["errors", "vs 1 replica", "ready s"]
    dense = []
    if not args.no_dense:
        devices = args.dense_devices.split(",")
        dense = dense_devices(args.dense_n, args.dense_dim, devices, args.dense_dtype)
    for r in dense:
        print(
            f"torch dense, batch {r['batch']:5d}, {r['mode']:14s} {r['ms']:8.2f} ms  {r['vs_1']:.2f}x"
        )
    out["dense_devices"] = [
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in dense
    ]
    plan = plan_gpu.plan()
    print()
    print(plan_gpu.render(plan))
    out["gpu_plan_arithmetic"] = plan["summary"]
    print()
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(c) for c in row))
    print(json.dumps(out))
    if not args.no_record:
        load = os.getloadavg()[0]
        ratio = {
            shape: out[f"ray-serve x1 {shape}"]["q_s"] / out[f"plain x1 {shape}"]["q_s"]
            for shape, _, _ in shapes
            if f"ray-serve x1 {shape}" in out and f"plain x1 {shape}" in out
        }
        notes = (
            f"Retriever `{args.retriever}` on `{args.index}`; cache off; 2 load-generator processes "
            f"using the multi-URL `HTTPClient`; medians of {args.repeat} runs of {args.seconds:.0f} s "
            f"per point; BM25 threads per replica = cores / replicas; load average {load:.1f} at "
            "the end (other jobs share this machine). Honest about 2 cores: the replicas, Ray's "
            "proxy and the load generators all share the same two cores, so these ratios say what a "
            "second process on the same node buys, not what a second machine would: one server "
            "process runs its Python (HTTP, JSON, batching) under one GIL, so a second process can "
            "use a core the first leaves idle."
        )
        if ratio:
            notes += (
                " Ray Serve vs plain server, one replica (its proxy hop): "
                + ", ".join(f"{shape} {v:.2f}x" for shape, v in ratio.items())
                + "."
            )
        if dense:
            notes += (
                f" Torch exact search, {args.dense_n:,} x {args.dense_dim} {args.dense_dtype}, "
                f"k=10, devices {args.dense_devices}: "
                + ", ".join(
                    f"batch {r['batch']} {r['mode']} {r['ms']:.1f} ms ({r['vs_1']:.2f}x)"
                    for r in dense
                )
                + "."
            )
            if args.dense_devices.startswith("cpu"):
                notes += (
                    " CPU devices are the same two cores: this checks the code path, not a GPU "
                    "speed-up. No GPU was used in this run: the one-H200 figures at batch 1, 64, "
                    "1024 are to be measured with --dense-devices cuda:0 --dense-n 21000000 "
                    "--dense-dim 768 --dense-dtype fp16 --families '' on a GPU node."
                )
        command = c.command_line("scale.py", argv)
        c.append_section(
            "Scale-out: one vs two replicas", command, rows, header, notes, smoke=args.smoke
        )
        plan_gpu.append(plan, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
