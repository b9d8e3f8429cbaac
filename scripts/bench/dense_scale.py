"""Dense search at scale on CPU: IVF-PQ and HNSW built from memory-mapped shards.

Writes clustered synthetic vectors (the distribution of ``dense_search.py``: random centres,
spread in a 24-d subspace, small noise; normalised) as fp16 ``emb-*.npy`` shards of a
``dense-scale`` part, as ``index_build encode --fp16`` leaves them. Then, each in its own
process so that peak RSS is that build's alone:

- ``python -m index_build faiss`` (ours: train on a seeded sample, add in chunks read from the
  shard files) for each factory, against
- the naive build (baseline, as Search-R1-style scripts do it): every vector loaded into RAM as
  float32, trained on the same sample size, added in one call.

For each index: build time, peak RSS, file size, and for a sweep of nprobe / efSearch the
queries/s at batch 1 (one thread) and 64 (all threads) through our ``FaissBackend`` with
recall@10 against exact search (our torch backend, fp32, over the same shards). HNSW is built
on the first ``--hnsw-n`` rows (its build cost grows with n log n; on two cores millions take
hours); the naive baseline is built for the IVF-PQ index only. Checks free disk first.

    python scripts/bench/dense_scale.py [--n 2000000] [--d 768] [--hnsw-n 200000]
    python scripts/bench/dense_scale.py --smoke  # 4,000 x 32 in a temporary folder, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common as c
import numpy as np

K = 10
RERANK = 100
SHARD_ROWS = 100_000


def write_part(folder: Path, n: int, d: int, seed: int, shard_rows: int = SHARD_ROWS):
    """Shards of ``n`` clustered unit vectors and a dense manifest; returns held-out queries."""
    from retriever.manifest import write_manifest

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 500, 16), d)).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(d, 24)))[0].T.astype(np.float32) * 4.0

    def draw(m):
        v = centres[rng.integers(0, len(centres), m)]
        v = v + rng.normal(size=(m, 24)).astype(np.float32) @ basis
        v += rng.normal(0, 0.1, (m, d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, start in enumerate(range(0, n, shard_rows)):
        stop = min(start + shard_rows, n)
        name = f"emb-{i:05d}.npy"
        out = np.lib.format.open_memmap(folder / name, "w+", np.float16, (stop - start, d))
        for s in range(0, stop - start, 100_000):
            e = min(s + 100_000, stop - start)
            out[s:e] = draw(e - s)
        out.flush()
        del out
        shards.append({"file": name, "rows": [start, stop]})
    write_manifest(
        folder,
        {
            "kind": "dense",
            "encoder": {"model": "synthetic"},
            "dim": d,
            "metric": "ip",
            "dtype": "float16",
            "num_docs": n,
            "shards": shards,
            "synthetic": {"n": n, "seed": seed},
        },
    )
    return draw(1024)


def subpart(root: Path, name: str, source: str, rows: int) -> None:
    """``dense-name``: the first ``rows`` rows of ``dense-source`` (whole shards), by reference."""
    from retriever.manifest import read_manifest, write_manifest

    manifest = read_manifest(root / f"dense-{source}", kind="dense")
    shards = [s for s in manifest["shards"] if s["rows"][1] <= rows] or manifest["shards"][:1]
    shards = [{**s, "file": f"../dense-{source}/{s['file']}"} for s in shards]
    (root / f"dense-{name}").mkdir(exist_ok=True)
    write_manifest(
        root / f"dense-{name}",
        {**manifest, "shards": shards, "num_docs": shards[-1]["rows"][1], "faiss": None},
    )


def run_measured(cmd: list[str], timeout: float) -> dict:
    """Run ``cmd``; wall seconds, exit status and the end of its output."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=c.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "log": out.decode()[-2000:]}
    wall = time.perf_counter() - t
    return {"seconds": round(wall, 1), "log": out.decode()[-4000:], "rc": proc.returncode}


def measured_python(code: str, timeout: float) -> dict:
    """Run Python ``code`` in a child that reports its own peak RSS on its last line."""
    # VmHWM, not ru_maxrss: on Linux ru_maxrss keeps the parent's peak across fork + exec
    wrapper = (
        f"{code}\nimport re\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print('PEAK_RSS_KB', hwm, flush=True)\n"
    )
    r = run_measured([sys.executable, "-c", wrapper], timeout)
    for line in r.get("log", "").splitlines()[::-1]:
        if line.startswith("PEAK_RSS_KB"):
            r["peak_rss_gb"] = round(int(line.split()[1]) / 1e6, 2)
            break
    return r


def ours_build(root: Path, name: str, factory: str, sample: int, timeout: float) -> dict:
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from index_build.__main__ import main\n"
        f"rc = main(['faiss', '--index', {str(root)!r}, '--name', {name!r}, "
        f"'--factory', {factory!r}, '--train-sample', '{sample}'])\n"
        "assert rc == 0, rc\n"
    )
    return measured_python(code, timeout)


def naive_build(root: Path, name: str, factory: str, sample: int, out: Path, timeout: float):
    code = (
        "import numpy as np, faiss\n"
        "from index_build.build_faiss import _no_polysemous\n"
        "from retriever.dense.retriever import vector_parts\n"
        "from retriever.manifest import read_manifest\n"
        f"folder = __import__('pathlib').Path({str(root)!r}) / 'dense-{name}'\n"
        "parts = vector_parts(folder, read_manifest(folder, kind='dense'))\n"
        "x = np.concatenate([np.asarray(a, dtype=np.float32) for _, a in parts])\n"
        f"index = faiss.index_factory(x.shape[1], {factory!r}, faiss.METRIC_INNER_PRODUCT)\n"
        "_no_polysemous(index)\n"
        f"rows = np.sort(np.random.default_rng(0).choice(len(x), min({sample}, len(x)), replace=False))\n"
        "index.train(x[rows])\n"
        "index.add(x)\n"
        f"faiss.write_index(index, {str(out)!r})\n"
    )
    return measured_python(code, timeout)


def timed_search(backend, q: np.ndarray, batch: int, reps: int) -> float:
    batches = [q[i : i + batch] for i in range(0, min(len(q), batch * reps), batch)]
    backend.search(batches[0], K)  # warm up
    times = [c.seconds_of(lambda: [backend.search(b, K) for b in batches]) for _ in range(3)]
    return sum(len(b) for b in batches) / c.median(times)


def recall(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids.tolist(), exact.tolist())]))


def sweep(path: Path, knob: str, values, q, exact, parts=None) -> list[dict]:
    """recall@10 and queries/s for each value of ``knob``; with ``parts``, also re-ranked
    exactly from the shards (``RERANK`` candidates, what the part's manifest turns on for
    PQ/SQ codes)."""
    from retriever.dense.faiss_backend import FaissBackend, read_index, set_search_params

    index = read_index(path)
    variants = [(0, FaissBackend(index))]
    if parts is not None:
        variants.append((RERANK, FaissBackend(index, rerank=(parts, RERANK))))
    rows = []
    for v in values:
        set_search_params(index, **{knob: v})
        for depth, backend in variants:
            _, ids = backend.search(q, K)
            row = {
                knob: v,
                "rerank": depth,
                "recall@10": round(recall(ids, exact), 4),
                "qps_b1": round(timed_search(backend, q, 1, 200), 1),
                "qps_b64": round(timed_search(backend, q, 64, 4), 1),
            }
            rows.append(row)
            print(f"    {knob} {v:>4}: {row}", flush=True)
    return rows


def exact_ids(root: Path, name: str, q: np.ndarray) -> tuple[np.ndarray, float]:
    from retriever.dense.retriever import vector_parts
    from retriever.dense.torch_backend import TorchBackend
    from retriever.manifest import read_manifest

    folder = root / f"dense-{name}"
    parts = vector_parts(folder, read_manifest(folder, kind="dense"))
    backend = TorchBackend(parts, ["cpu"], "fp32")
    t = time.perf_counter()
    _, ids = backend.search(q, K)
    return ids, len(q) / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--hnsw-n", type=int, default=100_000)
    ap.add_argument("--ivf", default="IVF1024,PQ64", help="IVF-PQ factory")
    ap.add_argument("--hnsw", default="HNSW32,SQ8", help="HNSW factory ('' to skip)")
    ap.add_argument("--train-sample", type=int, default=65_536)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--work", default="/tmp/dense_scale", help="scratch folder (kept for reruns)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per build")
    ap.add_argument("--skip-naive", action="store_true", help="no in-RAM baseline build")
    ap.add_argument(
        "--reuse", action="store_true", help="search indexes an earlier run built (results.json)"
    )
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.d, args.hnsw_n, args.ivf, args.hnsw = 4000, 32, 2000, "IVF16,SQ8", "HNSW16"
        args.train_sample, args.queries, args.timeout = 2000, 16, 300
        args.work = tempfile.mkdtemp(prefix="dense-scale-smoke-")
    root = Path(args.work)
    t0 = time.perf_counter()
    part = root / "dense-scale"
    need = args.n * args.d * 2 * 1.6  # fp16 shards + IVF-PQ and HNSW files + naive copy
    free = shutil.disk_usage(root.parent if not root.exists() else root).free
    print(f"disk: need about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free", flush=True)
    if free < need:
        print("not enough free disk: lower --n", file=sys.stderr)
        return 1
    qfile = root / "queries.npy"
    tag = {"n": args.n, "d": args.d}
    have = (part / "manifest.json").is_file() and json.loads(
        (part / "manifest.json").read_text()
    ).get("synthetic", {}).get("n") == args.n
    if have and qfile.is_file():
        print(f"data: reusing {part}", flush=True)
        queries = np.load(qfile)
    else:
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        queries = write_part(part, args.n, args.d, seed=0)
        np.save(qfile, queries)
        print(f"data: {args.n:,} x {args.d} fp16 in {time.perf_counter() - t:.0f} s", flush=True)
    q = queries[: args.queries]
    results = {"bench": "dense_scale", **tag, "indexes": []}

    t = time.perf_counter()
    exact, exact_qps = exact_ids(root, "scale", q)
    results["exact_qps_b256"] = round(exact_qps, 2)
    print(f"exact (torch fp32, batch {len(q)}): {exact_qps:.1f} q/s", flush=True)

    plans = [("scale", args.ivf, "nprobe", (8, 32, 128), args.n)]
    if args.hnsw:
        subpart(root, "hnsw", "scale", args.hnsw_n)
        plans.append(("hnsw", args.hnsw, "ef_search", (32, 128, 512), args.hnsw_n))
    earlier = {}
    if args.reuse and (root / "results.json").is_file():
        earlier = {
            e["factory"]: e for e in json.loads((root / "results.json").read_text())["indexes"]
        }
    for name, factory, knob, values, n in plans:
        from index_build.build_faiss import default_rerank, factory_file
        from retriever.dense.retriever import vector_parts
        from retriever.manifest import read_manifest

        print(f"{factory} over {name}:", flush=True)
        want = exact if name == "scale" else exact_ids(root, name, q)[0]
        path = root / f"dense-{name}" / factory_file(factory)
        if args.reuse and path.is_file() and factory in earlier:
            entry = {k: v for k, v in earlier[factory].items() if k != "sweep"}
            print(f"  reusing {path} (built earlier: {entry['ours']})", flush=True)
        else:
            ours = ours_build(root, name, factory, args.train_sample, args.timeout)
            entry = {"factory": factory, "n": n, "ours": _short(ours)}
            print(f"  ours: {entry['ours']}", flush=True)
            if not args.skip_naive and name == "scale":  # the baseline that holds every vector
                naive_file = root / "naive.index"
                naive = naive_build(
                    root, name, factory, args.train_sample, naive_file, args.timeout
                )
                naive_file.unlink(missing_ok=True)
                entry["naive"] = _short(naive)
                print(f"  naive: {entry['naive']}", flush=True)
        if path.is_file():
            folder = root / f"dense-{name}"
            parts = vector_parts(folder, read_manifest(folder, kind="dense"))
            entry["file_gb"] = round(path.stat().st_size / 1e9, 3)
            entry["sweep"] = sweep(
                path, knob, values, q, want, parts if default_rerank(factory) else None
            )
        results["indexes"].append(entry)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    results["load_avg"] = os.getloadavg()[0]
    results["self_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    print(json.dumps(results))
    (root / "results.json").write_text(json.dumps(results))
    if not args.no_record:
        _append(results, args, argv)
    return 0


def _short(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "log"} | (
        {"log_tail": r["log"][-300:]} if r.get("rc") not in (0, None) or "error" in r else {}
    )


def _append(results: dict, args, argv: list[str] | None) -> None:
    header = [
        "index",
        "vectors",
        "build s (ours / naive)",
        "peak RSS GB (ours / naive)",
        "file GB",
        "knob",
        "re-rank",
        "recall@10",
        "q/s batch 1 (1 thread)",
        "q/s batch 64",
    ]
    table = []
    for e in results["indexes"]:
        o, nv = e["ours"], e.get("naive", {})
        build = f"{o.get('seconds', o.get('error'))} / {nv.get('seconds', nv.get('error', '-'))}"
        rss = f"{o.get('peak_rss_gb', '?')} / {nv.get('peak_rss_gb', '-')}"
        for row in e.get("sweep", []):
            knob = next(k for k in row if k in ("nprobe", "ef_search"))
            table.append(
                [
                    e["factory"],
                    f"{e['n']:,}",
                    build,
                    rss,
                    e.get("file_gb", "-"),
                    f"{knob} {row[knob]}",
                    row.get("rerank", 0),
                    row["recall@10"],
                    row["qps_b1"],
                    row["qps_b64"],
                ]
            )
    notes = (
        f"Synthetic clustered unit vectors, {args.n:,} x {args.d} stored fp16 in "
        f"{SHARD_ROWS:,}-row shards (HNSW over the first {args.hnsw_n:,}); "
        f"trained on {args.train_sample:,} sampled rows; {args.queries} held-out queries. "
        "Ours = `python -m index_build faiss` (sample read with pread, vectors added in chunks "
        "read from the shard files); naive = all vectors loaded into RAM as float32, then "
        "train + one add (each build in its own process; peak RSS = that process's VmHWM). "
        f"Re-rank {RERANK}: the {RERANK} best candidates of the index re-scored exactly from the "
        "memory-mapped shards (what a part built with PQ/SQ codes does by default). Exact "
        f"search (torch fp32, batch {args.queries}): {results['exact_qps_b256']} q/s. "
        f"Load average {results['load_avg']:.1f} at the end (the 2 cores are shared); "
        f"total {results['total_s']} s"
        + (
            " (searches only: the indexes were built by the run before, same flags)."
            if args.reuse
            else "."
        )
    )
    c.record(args, argv, "Dense at scale on CPU (IVF-PQ, HNSW)", table, header, notes)


if __name__ == "__main__":
    sys.exit(main())
