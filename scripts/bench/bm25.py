"""BM25 benchmark: our library vs raw bm25s (same index, same tokens) vs pyserini (Lucene).

On the ~664k passages of ``../shared/data/wikiextractor-enwiki-30k.txt.gz`` with the NQ test
questions as queries: build time and peak RSS (ours, Lucene), load time and RSS in a fresh
process, queries/s at k=3 and k=10 one query at a time and in batches of 64, p50/p99 latency,
and agreement. Prints a table and one JSON line; appends the table to the benchmark history.

    .venv/bin/python scripts/bench/bm25.py [--root /tmp/bm25-bench] [--no-pyserini]
    .venv/bin/python scripts/bench/bm25.py --smoke  # bundled 40-article slice, no Lucene
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import common as c
import numpy as np

CORPUS_INPUT = c.SHARED_DATA / "wikiextractor-enwiki-30k.txt.gz"
ENV = c.child_env()


LOAD_PROBE = r"""
import json, os, sys, time, psutil
kind, root = sys.argv[1], sys.argv[2]
proc = psutil.Process()
base = proc.memory_info().rss
t = time.perf_counter()
if kind == "ours":
    from retriever.index import Index
    r = Index.open(root).retriever("bm25")
    r.search(["who wrote hamlet"], 10)
elif kind == "bm25s":
    import bm25s
    r = bm25s.BM25.load(root + "/bm25", mmap=True)
    r.retrieve([["hamlet"]], k=10, show_progress=False, n_threads=1)
else:
    from retriever.index import Index
    r = Index.open(root).retriever("bm25-lucene")
    r.search(["who wrote hamlet"], 10)
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": proc.memory_info().rss / 2**20,
                  "rss_added_mb": (proc.memory_info().rss - base) / 2**20}))
"""


def probe_load(kind: str, root: Path) -> dict:
    return c.python_json(LOAD_PROBE, kind, str(root))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="/tmp/bm25-bench", help="index root to build into")
    p.add_argument(
        "--corpus", default="/tmp/wx30k", help="existing root with the 664k corpus store"
    )
    p.add_argument("--single", type=int, default=1000, help="queries for one-at-a-time runs")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement (median kept)")
    p.add_argument("--no-pyserini", action="store_true", help="skip Lucene")
    p.add_argument("--rebuild", action="store_true", help="rebuild indexes that exist")
    p.add_argument("--input", default=str(CORPUS_INPUT), help="corpus input for --corpus")
    c.add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        args.corpus = c.smoke_index()  # its corpus; the bm25 part is built here as always
        args.root, args.single, args.repeats = c.smoke_dir("bm25") / "root", 20, 1
        args.input = str(args.corpus.parent / "tiny-wiki.txt.gz")
        args.no_pyserini = True
        print("smoke: pyserini (Lucene, Java) left out; raw bm25s on its numpy backend")

    root, corpus = Path(args.root), Path(args.corpus)
    if not (corpus / "corpus" / "manifest.json").is_file():
        cmd = [c.PY, "-m", "index_build", "corpus", "--input", args.input, "--out", str(corpus)]
        subprocess.run([*cmd, "--no-progress"], check=True, env=ENV)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "corpus").exists():
        (root / "corpus").symlink_to((corpus / "corpus").resolve())
    builds = {}
    use_lucene = not args.no_pyserini
    if use_lucene:
        from retriever.bm25.lucene import java_available

        use_lucene = java_available() is not None
    for name, extra, wanted in (
        ("bm25", [], True),
        ("bm25-lucene", ["--backend", "pyserini"], use_lucene),
    ):
        if wanted and (args.rebuild or not (root / name / "manifest.json").is_file()):
            cmd = [c.PY, "-m", "index_build", "bm25", "--index", str(root), "--no-progress", *extra]
            r = c.run_sampled(cmd, ENV)
            builds[name] = (r["seconds"], r["peak_rss_mb"])
    queries = c.nq_questions(200 if args.smoke else None, smoke=args.smoke)
    single = queries[: args.single]
    n_docs = json.loads((root / "corpus" / "manifest.json").read_text())["num_docs"]

    loads = {"ours": probe_load("ours", root)}
    if not args.smoke:  # its numba compile in a fresh process: see below
        loads["bm25s"] = probe_load("bm25s", root)
    if use_lucene:
        loads["pyserini"] = probe_load("pyserini", root)

    import bm25s

    from retriever.bm25.retriever import BM25Retriever
    from retriever.index import Index

    cores = os.cpu_count() or 1
    ours1 = BM25Retriever(root / "bm25", threads=1)
    oursN = BM25Retriever(root / "bm25", threads=cores)
    # numba compiles bm25s's kernels afresh in every process (no cache): tens of seconds
    backend = "numpy" if args.smoke else "numba"
    raw = bm25s.BM25.load(root / "bm25", mmap=True, override_params={"backend": backend})
    analyzer = ours1.analyzer
    raw.retrieve([["warm"]], k=3, show_progress=False, n_threads=1)
    raw.retrieve([["warm"]] * 4, k=3, show_progress=False, n_threads=cores)

    def raw_fn(threads):
        return lambda qs, k: raw.retrieve(
            analyzer.terms_many(qs), k=k, show_progress=False, n_threads=threads
        )

    systems = {
        "ours (1 thread)": (ours1.search, [1, 64]),
        f"ours ({cores} threads)": (oursN.search, [64]),
        f"raw bm25s-{backend} (1 thread)": (raw_fn(1), [1, 64]),
        f"raw bm25s-{backend} ({cores} threads)": (raw_fn(cores), [64]),
    }
    if use_lucene:
        lucene = Index.open(root).retriever("bm25-lucene", threads=cores)
        systems[f"pyserini ({cores} threads)"] = (lucene.search, [1, 64])
    rows = []
    for k in (3, 10):
        for batch in (1, 64):
            # round-robin over the systems, so that load from other processes hits them alike
            names = [n for n, (_, batches) in systems.items() if batch in batches]
            qs = single if batch == 1 else queries
            fns = {
                n: lambda n=n, qs=qs, k=k, b=batch: c.measure(systems[n][0], qs, k, b)
                for n in names
            }
            runs = c.alternate(
                {n: f for n, f in fns.items() if not n.startswith("pyserini")}, args.repeats
            )
            runs.update(
                {n: [f()] for n, f in fns.items() if n.startswith("pyserini")}
            )  # slow, not the subject: one run
            for name in names:
                c.add_qps_row(rows, name, k, batch, runs[name])

    ratios = {}
    one, all_, bm25s_ = "(1 thread)", f"({cores} threads)", f"raw bm25s-{backend}"
    pairs = {  # ratio name: (ours, the other) as "system" names of rows, and the batch
        "ours/raw 1 thread k={k} single": (f"ours {one}", f"{bm25s_} {one}", 1),
        "ours/raw 1 thread k={k} batch64": (f"ours {one}", f"{bm25s_} {one}", 64),
        f"ours/raw {cores} threads k={{k}} batch64": (f"ours {all_}", f"{bm25s_} {all_}", 64),
    }
    if use_lucene:
        pairs["ours/pyserini k={k} batch64"] = (f"ours {all_}", f"pyserini {all_}", 64)
    for k in (3, 10):
        for name, (a, b, batch) in pairs.items():
            ratios[name.format(k=k)] = c.qps_of(rows, a, k, batch) / c.qps_of(rows, b, k, batch)
    agreement = {}
    ours10 = oursN.search(queries, 10)
    raw10 = raw.retrieve(analyzer.terms_many(queries), k=10, show_progress=False, n_threads=cores)
    agreement["ours_vs_raw_same_scores"] = float(
        np.mean(
            [
                np.allclose([h.score for h in hits], raw10.scores[i][: len(hits)], rtol=1e-6)
                for i, hits in enumerate(ours10)
            ]
        )
    )
    if use_lucene:
        luc10 = lucene.search(queries, 10)
        agreement["ours_vs_pyserini_overlap@10"] = float(
            np.mean(
                [len({h.row for h in a} & {h.row for h in b}) / 10 for a, b in zip(ours10, luc10)]
            )
        )

    lines = [
        f"{n_docs} passages ({Path(args.input).name}), {len(queries)} NQ test questions "
        f"({len(single)} for one-at-a-time); median of {args.repeats} runs (pyserini: 1).",
        "",
    ]
    for name, (sec, mb) in builds.items():
        lines.append(f"- build {name}: {sec:.1f} s, peak RSS {mb:.0f} MB")
    for name, ld in loads.items():
        lines.append(
            f"- load {name} (fresh process, incl. first query): {ld['seconds']:.2f} s, "
            f"RSS {ld['rss_mb']:.0f} MB (+{ld['rss_added_mb']:.0f} MB)"
        )
    lines += [
        "",
        "Ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
        "Agreement: " + ", ".join(f"{k} {v:.3f}" for k, v in agreement.items()),
    ]
    print("\n".join(lines))
    print(
        json.dumps(
            {
                "bench": "bm25",
                "machine": c.machine(),
                "num_docs": n_docs,
                "builds": {k: {"seconds": s, "peak_rss_mb": m} for k, (s, m) in builds.items()},
                "loads": loads,
                "rows": rows,
                "ratios": ratios,
                "agreement": agreement,
            }
        )
    )
    c.record(
        args,
        argv,
        f"bm25: ours vs raw bm25s vs pyserini ({n_docs} passages)",
        c.qps_table(rows),
        c.QPS_HEADER,
        "\n".join(lines),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
