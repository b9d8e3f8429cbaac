"""Our server beside the real peers, under every load shape of issue 26 (one run, alternating).

Runs ``python -m retriever.server`` (cache off; once as one process and once with
``--workers 2``), Search-R1's ``retrieval_server.py`` and rLLM's auto-batching dense
``rag_server.py`` side by side on the same corpus, the same pyserini Lucene index (Search-R1's
BM25), and the same MiniLM and faiss Flat file (dense). The peers' files are given by path and
run unmodified through ``peer_shim`` (CPU: ``.cuda()``/``.half()`` are no-ops; Search-R1's
hard-coded ``0.0.0.0:8000`` becomes a free local port; rLLM's ``intfloat/e5-base-v2`` becomes the
packaged MiniLM). Get them with ``git clone`` of PeterGriffinJin/Search-R1
(``search_r1/search/retrieval_server.py``) and rllm-org/rllm
(``examples/fully_async/deepresearch/rag/rag_server.py``).

Load: ``server.py``'s closed-loop keep-alive clients (``common.closed_loop``) in a separate
load-generator process, each shape ``CLIENTSxQUERIES`` (queries per request), topk 3 with
scores (Search-R1's trainer sends ``return_scores``; its server fails without it). The systems
alternate at every point, the order reversed every other round; medians of the repeats, the
run-to-run spread ((max - min) / median), the server's CPU per query, and the load average of
the machine around each point. rLLM takes one query per request, so it has no ``x64`` row.

    .venv/bin/python scripts/bench/peers.py --search-r1 /path/retrieval_server.py \\
        --rllm /path/rag_server.py                  # HotpotQA paragraphs, 4,920 passages
    .venv/bin/python scripts/bench/peers.py --smoke  # ours only, bundled articles, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common as c
import server as load

from retriever import cores

BENCH = Path(__file__).resolve().parent
HOTPOT = c.TEST_DATA / "hotpotqa-distractor-500.jsonl"
DENSE = "minilm"
GOALS = {"bm25": 3.0, "dense": 2.0}  # issue 26: ours / each peer at every shape
OK_PREFIX = {"ours": b'{"result"', "search-r1": b'{"result"', "rllm": b'{"query"'}


# ---- data every system reads ------------------------------------------------------------


def prepare(work: Path, index: Path | None, dense: bool) -> dict[str, Path]:
    """Our index root (corpus, bm25, bm25-lucene, dense-minilm with a Flat faiss file), the
    passages as the peers' JSONL corpus in store row order (Lucene docids and faiss rows are
    store rows), and rLLM's data folder (``corpus.json`` + ``e5_Flat.index``, links)."""
    from index_build.__main__ import main as build
    from retriever.store.docstore import DocStore

    work.mkdir(parents=True, exist_ok=True)
    root = index or c.build_index(work / "index", HOTPOT, dense=DENSE if dense else None)
    if not (root / "bm25-lucene" / "manifest.json").is_file():
        if build(["bm25", "--index", str(root), "--backend", "pyserini", "--no-progress"]) != 0:
            raise SystemExit(f"building {root}/bm25-lucene failed")
    corpus = work / "corpus.jsonl"
    if not corpus.is_file():
        import orjson

        store = DocStore.open(root)
        with open(f"{corpus}.tmp", "wb") as f:
            for p in store.iter_passages():
                f.write(orjson.dumps({"id": p.id, "contents": p.contents}) + b"\n")
        os.replace(f"{corpus}.tmp", corpus)
    paths = {"root": root, "corpus": corpus, "lucene": root / "bm25-lucene" / "lucene"}
    if dense:
        from retriever.dense.retriever import faiss_path

        part = root / f"dense-{DENSE}"
        paths["faiss"] = faiss_path(part, json.loads((part / "manifest.json").read_text()))
        rllm = work / "rllm-data"
        rllm.mkdir(exist_ok=True)
        for name, target in (("corpus.json", corpus), ("e5_Flat.index", paths["faiss"])):
            if not (rllm / name).exists():
                (rllm / name).symlink_to(target)
        paths["rllm"] = rllm
    return paths


# ---- peer processes -----------------------------------------------------------------------


class PeerProcess(c.ServerProcess):
    """A peer's server file run through ``peer_shim`` on a free port, ready when ``probe``
    answers 200; ``common.ServerProcess``'s log, pid and stop, its own start and readiness."""

    def __init__(self, file: Path, args: list[str], probe: tuple[str, str, dict | None], **env):
        self.port = c.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.probe = probe
        code = "import peer_shim, sys; peer_shim.run(sys.argv[1:])"
        env = {k: v.replace("{port}", str(self.port)) for k, v in env.items()}
        extra = {"PYTHONPATH": str(BENCH), "PEER_CPU": "1", **env}
        self.log = tempfile.TemporaryFile()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [c.PY, "-c", code, str(file), *[a.replace("{port}", str(self.port)) for a in args]],
            cwd=file.parent, env=c.child_env(**extra), stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.ready_s = float("nan")

    def wait(self, timeout: float = 300.0) -> float:
        import httpx

        method, path, body = self.probe
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"peer exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            try:
                if httpx.request(method, self.url + path, json=body, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - self.t0 > timeout:
                self.stop()
                raise SystemExit(f"peer not ready after {timeout:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        self.ready_s = time.perf_counter() - self.t0
        return self.ready_s


def start_systems(args, retriever: str, paths: dict[str, Path], cache: Path) -> dict[str, object]:
    """Every system of ``retriever``'s rows, started one after another (so each time-to-ready
    is measured alone) and left running side by side (an idle server costs no CPU)."""
    name = "bm25" if retriever == "bm25" else f"dense-{DENSE}"
    flags = ["--retrievers", name, "--cache-size", "0", "--queue-size", "4096", *args.server_arg]
    systems: dict[str, object] = {}
    for workers, threads in args.workers:
        label = "ours" if workers == 1 else f"ours --workers {workers}"
        label += f" ({cores.ENV}={threads})" if threads else ""
        extra = [] if workers == 1 else ["--workers", str(workers)]
        env = {cores.ENV: str(threads)} if threads else None
        server = c.ServerProcess(paths["root"], *flags, *extra, env=env)
        server.wait()
        systems[label] = server
    from retriever.dense.encoders import packaged_model_path

    model = str(packaged_model_path())
    if args.search_r1:
        if retriever == "bm25":
            peer = ["--retriever_name", "bm25", "--index_path", str(paths["lucene"])]
        else:  # a name without e5/bge/dpr: no prefix, mean pooling, normalised, as MiniLM
            peer = ["--retriever_name", DENSE, "--retriever_model", model]
            peer += ["--index_path", str(paths["faiss"])]
        peer += ["--corpus_path", str(paths["corpus"]), "--topk", "3"]
        probe = ("POST", "/retrieve", {"queries": ["warm up"], "topk": 1, "return_scores": True})
        systems["search-r1"] = PeerProcess(
            args.search_r1, peer, probe, PEER_PORT="{port}", HF_DATASETS_CACHE=str(cache)
        )
    if args.rllm and retriever == "dense":
        peer = ["--data_dir", str(paths["rllm"]), "--host", "127.0.0.1", "--port", "{port}"]
        peer += ["--no_gpu", "--embedding_device", "cpu"]
        peer += ["--batch_timeout", str(args.rllm_batch_ms / 1000)]
        systems["rllm"] = PeerProcess(
            args.rllm, peer, ("GET", "/health", None),
            PEER_MODEL_ALIAS=f"intfloat/e5-base-v2={model}",
        )  # fmt: skip
    return systems


# ---- the load -----------------------------------------------------------------------------


def body_of(kind: str, queries: list[str], retriever: str) -> dict:
    """One request in the system's own shape (rLLM: one query per request)."""
    if kind == "rllm":
        return {"query": queries[0], "top_k": 3}
    body = {"queries": queries, "topk": 3, "return_scores": True}
    if kind == "ours":
        body["retriever"] = "bm25" if retriever == "bm25" else f"dense-{DENSE}"
    return body


def _generator(job) -> tuple[list[float], int, float]:
    """One load-generator process: ``clients`` closed-loop clients for ``seconds``."""
    url, kind, retriever, queries, clients, seconds, offset, per_request = job
    import orjson

    step = (clients * 7 + 1) * per_request
    prefix = OK_PREFIX[kind]

    def request(i: int, n: int, host: str) -> bytes:
        at = (offset + i + n * step) % (len(queries) - per_request + 1)
        body = orjson.dumps(body_of(kind, queries[at : at + per_request], retriever))
        return c.http_request("POST", "/retrieve", host, body)

    return c.closed_loop(
        url, clients, seconds, request, lambda s, d: s == 200 and d.startswith(prefix)
    )


def drive(system, kind: str, retriever: str, queries: list[str], shape: tuple[int, int], args):
    clients, per_request = shape
    before, load_before = load.server_cpu(system.pid), os.getloadavg()[0]
    latencies, errors, elapsed = c.in_processes(
        _generator,
        clients,
        args.procs,
        lambda i, share: (system.url, kind, retriever, queries, share, args.seconds, i * 1000, per_request),
    )  # fmt: skip
    n = len(latencies)
    return {
        "qps": n / elapsed,
        "queries_s": per_request * n / elapsed,
        "p50_ms": c.percentile(latencies, 50),
        "p99_ms": c.percentile(latencies, 99),
        "cpu_ms_q": 1000 * (load.server_cpu(system.pid) - before) / max(n * per_request, 1),
        "errors": errors,
        "load": (load_before + os.getloadavg()[0]) / 2,
    }


def kind_of(label: str) -> str:
    return "ours" if label.startswith("ours") else label


def spread(runs: list[dict]) -> float:
    """(max - min) / median of queries/s over the repeats, in percent.

    >>> round(spread([{"queries_s": 90}, {"queries_s": 100}, {"queries_s": 110}]), 1)
    20.0
    """
    qs = [r["queries_s"] for r in runs]
    mid = c.median(qs)
    return 100 * (max(qs) - min(qs)) / mid if mid else float("nan")


def parse_workers(text: str) -> list[tuple[int, int | None]]:
    """``--workers``: (worker processes, ``RETRIEVER_THREADS`` for each or None) per row;
    ``N:T`` starts N workers whose kernels use T threads each (``retriever.cores``).

    >>> parse_workers("1,2,2:1")
    [(1, None), (2, None), (2, 1)]
    """
    out = []
    for item in text.split(","):
        n, _, threads = item.partition(":")
        if threads and not (threads.isdigit() and int(threads) >= 1):
            raise SystemExit(f"--workers {item}: N or N:THREADS")
        out.append((int(n), int(threads) if threads else None))
    return out


def parse_shape(text: str) -> tuple[int, int]:
    """``"16x1"`` -> (16 clients, 1 query per request).

    >>> parse_shape("4x64"), parse_shape("64")
    ((4, 64), (64, 1))
    """
    clients, _, per = text.partition("x")
    return int(clients), int(per or 1)


def measure_retriever(args, retriever: str, paths, queries, out: dict, rows: list) -> None:
    cache = Path(tempfile.mkdtemp(prefix="peers-hf-datasets-"))  # a cold start for Search-R1
    systems = start_systems(args, retriever, paths, cache)
    try:
        for label, system in systems.items():
            if isinstance(system, PeerProcess):
                system.wait()
            out[f"{retriever} {label} ready_s"] = round(system.ready_s, 2)
            rows.append([retriever, "time to ready", label, *["-"] * 8, f"{system.ready_s:.1f} s"])
            print(f"{retriever:5s} {label:18s} ready in {system.ready_s:5.1f} s", flush=True)
        if not args.smoke:  # a short loop first: JIT, caches and pools warm
            for label, system in systems.items():
                drive(system, kind_of(label), retriever, queries, (4, 1), argparse.Namespace(
                    procs=1, seconds=min(2.0, args.seconds)))  # fmt: skip
        for shape in args.shapes:
            names = [s for s in systems if not (kind_of(s) == "rllm" and shape[1] > 1)]
            fns: dict[str, Callable[[], dict]] = {
                s: (
                    lambda s=s, shape=shape: drive(
                        systems[s], kind_of(s), retriever, queries, shape, args
                    )
                )
                for s in names
            }
            runs = c.alternate(fns, args.repeats)
            point = {s: {**c.medians(runs[s]), "spread": spread(runs[s])} for s in names}
            for s in names:
                r = point[s]
                peers = [p for p in ("search-r1", "rllm") if p in point and kind_of(s) == "ours"]
                # queries/s ratio; and server CPU per query, peer / ours: robust to other jobs
                vs = {p: r["queries_s"] / max(point[p]["queries_s"], 1e-9) for p in peers}
                cost = {p: point[p]["cpu_ms_q"] / max(r["cpu_ms_q"], 1e-9) for p in peers}
                shape_s = f"{shape[0]}x{shape[1]}"
                out[f"{retriever} {shape_s} {s}"] = {
                    **{k: round(v, 2) for k, v in r.items()},
                    **{f"x {p}": round(v, 2) for p, v in vs.items()},
                    **{f"cpu x {p}": round(v, 2) for p, v in cost.items()},
                }
                rows.append([
                    retriever, shape_s, s, f"{r['qps']:.0f}", f"{r['queries_s']:.0f}",
                    f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['cpu_ms_q']:.2f}",
                    f"{r['spread']:.0f}%", f"{r['load']:.1f}", int(r["errors"]),
                    ", ".join(f"{vs[p]:.2f}x {p} (CPU {cost[p]:.1f}x)" for p in peers) or "-",
                ])  # fmt: skip
                print(" | ".join(str(x) for x in rows[-1]), flush=True)
    finally:
        for system in systems.values():
            system.stop()


def goals(out: dict, retrievers: list[str], shapes: list[tuple[int, int]]) -> list[str]:
    """One line per (retriever, shape, peer) where ``ours`` misses issue 26's goal."""
    missed = []
    for retriever in retrievers:
        for clients, per in shapes:
            r = out.get(f"{retriever} {clients}x{per} ours", {})
            for key, ratio in r.items():
                if key.startswith("x ") and ratio < GOALS[retriever]:
                    missed.append(
                        f"{retriever} {clients}x{per}: {ratio:.2f}x {key[2:]} "
                        f"(goal {GOALS[retriever]:.0f}x)"
                    )
    return missed + costlier_batches(out, retrievers, shapes)


def costlier_batches(out: dict, retrievers: list[str], shapes: list[tuple[int, int]]) -> list[str]:
    """Issue 26's check that a batched request costs our server no more CPU per query than
    single queries coalesced: each ``CxQ`` shape (Q > 1) of each of our rows against the
    ``Cx1`` shape with the most clients."""
    singles = max((c for c, per in shapes if per == 1), default=None)
    missed = []
    for retriever in retrievers:
        for key, r in out.items():
            parts = key.split(" ", 2)
            if len(parts) < 3 or parts[0] != retriever or kind_of(parts[2]) != "ours":
                continue  # a peer's point, a ready time, the machine
            if not parts[1].replace("x", "").isdigit() or not isinstance(r, dict):
                continue
            clients, per = parse_shape(parts[1])
            single = out.get(f"{retriever} {singles}x1 {parts[2]}", {}).get("cpu_ms_q")
            if per > 1 and single is not None and r.get("cpu_ms_q", 0.0) > single:
                missed.append(
                    f"{key}: {r['cpu_ms_q']:.2f} server CPU ms/query, more than {singles} "
                    f"coalesced single queries ({single:.2f})"
                )
    return missed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--search-r1", type=Path, metavar="FILE", help="Search-R1's retrieval_server.py"
    )
    ap.add_argument("--rllm", type=Path, metavar="FILE", help="rLLM's rag_server.py (dense only)")
    ap.add_argument("--index", type=Path, help="our index root (default: HotpotQA under --work)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "peers-bench")
    ap.add_argument("--retrievers", default="bm25,dense")
    ap.add_argument("--shapes", default="1x1,16x1,64x1,4x64", help="CLIENTSxQUERIES_PER_REQUEST")
    ap.add_argument(
        "--workers",
        default="1,2",
        help="our server's --workers, one row each; N:T runs each worker's kernels on T threads",
    )
    ap.add_argument("--seconds", type=float, default=8.0, help="per point")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1, help="load-generator processes")
    ap.add_argument("--rllm-batch-ms", type=float, default=10.0, help="rLLM's --batch_timeout")
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for ours")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    retrievers = args.retrievers.split(",")
    if args.smoke:  # ours only on the bundled articles: the script's plumbing, in seconds
        args.search_r1 = args.rllm = None
        retrievers, args.workers, args.shapes = ["bm25"], "1", "2x1,2x4"
        args.seconds, args.repeats = 0.5, 1
    args.workers = parse_workers(args.workers)
    args.shapes = [parse_shape(s) for s in args.shapes.split(",")]
    for peer in (args.search_r1, args.rllm):
        if peer is not None and not peer.is_file():
            ap.error(f"{peer} is not a file: pass the peer's server file from its checkout")
    if args.smoke:
        paths = {"root": c.smoke_index()}
    else:
        paths = prepare(args.work, args.index, "dense" in retrievers)
    queries = c.nq_questions(3610, smoke=args.smoke)
    out: dict = {"machine": c.machine(), "index": str(paths["root"])}
    rows: list[list] = []
    for retriever in retrievers:
        measure_retriever(args, retriever, paths, queries, out, rows)
    missed = goals(out, retrievers, args.shapes)
    out["goals missed"] = missed
    header = ["retriever", "clients x queries", "system", "req/s", "queries/s", "p50 ms",
              "p99 ms", "server CPU ms/query", "spread", "load avg", "errors", "ours vs peer (or ready)"]  # fmt: skip
    print()
    c.print_table(header, rows)
    print("goals missed: " + ("; ".join(missed) or "none"))
    print(json.dumps({"bench": "peers", **out}))
    notes = (
        f"Index `{paths['root']}`; topk 3 with scores, cache off; {args.seconds:.0f} s per point, "
        f"median of {args.repeats} alternating runs, {args.procs} load-generator process(es); "
        f"rLLM batch window {args.rllm_batch_ms:.0f} ms. Peers run unmodified through "
        "`scripts/bench/peer_shim.py` (fp32 on CPU, local port, MiniLM for rLLM's e5 name). "
        "Spread: (max - min) / median over the repeats. Goals missed: "
        + ("; ".join(missed) or "none")
    )
    c.record(args, argv, "Server vs Search-R1 and rLLM (issue 26 shapes)", rows, header, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
