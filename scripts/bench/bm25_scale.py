"""BM25 at scale: ours (pruned: bmp; exhaustive) vs pyserini 0.25 on the 30k corpus repeated.

The ~666k passages of ``../shared/data/wikiextractor-enwiki-30k.txt.gz`` are written ``--factor``
times into one JSONL passage file with new ids and titles (copy ``c`` of ``"T"`` is titled
``"T (c)"``), so term statistics scale as in a larger corpus: factor 8 gives 5.3M passages,
32 gives 21M (wiki-18's count; about 40 GB of disk). Records, in one run on one machine:

- corpus build (in place over the JSONL), ours and Lucene BM25 builds: wall time, peak RSS of
  the largest process and of the whole process tree (sampled), index size (a ``bm25`` part
  built before row ranges gets them with ``index_build ranges``, timed as its own step);
- index open in a fresh process (incl. first query) and server time-to-ready, with RSS;
- queries/s, p50/p99 at k = 3, 5, 10 for single queries and batches of 64, one thread each:
  ours with the default pruning (``bmp``, row-range block maxima), ours exhaustive (the
  in-run baseline) and Lucene (raw ``SimpleSearcher.search`` for single queries,
  ``batch_search`` with one thread for batches), alternating per repeat;
- answer recall@k on NQ test questions (an answer string in a hit), ours vs Lucene;
- with ``--format compact``, also the compact layout (``retriever.bm25.compact``) as its own
  part ``bm25-compact``: build time, peak RSS, size per file group, and its kernels
  (``bmp-compact``, ``exhaustive-compact``) timed in the same alternation, checked equal.

Stages are skipped when their output exists (``--rebuild`` redoes the BM25 builds), so an
interrupted run continues. Prints a table and one JSON line; appends to the benchmark history.

    .venv/bin/python scripts/bench/bm25_scale.py --factor 8 [--work /tmp/bm25-scale]
    .venv/bin/python scripts/bench/bm25_scale.py --smoke  # 3 bundled articles x2, no Lucene
    .venv/bin/python scripts/bench/bm25_scale.py --factor 1 --format compact --no-pyserini
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common as c

CORPUS_INPUT = c.SHARED_DATA / "wikiextractor-enwiki-30k.txt.gz"
NQ = c.SHARED_DATA / "qa" / "nq-test.tsv"
ENV = c.child_env(NUMBA_THREADING_LAYER="workqueue")
GB_PER_COPY = 1.6  # JSONL + store keys + bm25 + Lucene collection and index, per 666k passages


def sampled(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (largest process, process tree) of one build step."""
    r = c.run_sampled(cmd, ENV)
    return {k: r[k] for k in ("seconds", "peak_rss_mb", "peak_tree_rss_mb")}


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def write_repeated(base: Path, out: Path, factor: int) -> int:
    """The base store's passages ``factor`` times as a Search-R1 style JSONL (id, contents)."""
    import orjson

    from retriever.store.docstore import DocStore

    store = DocStore.open(base / "corpus")
    tmp = out.with_suffix(".tmp")
    n = 0
    with open(tmp, "wb", buffering=1 << 22) as f:
        for c in range(factor):
            for row in range(len(store)):
                p = store.get(row)
                title = p.title if c == 0 else f"{p.title} ({c})"
                pid = p.id if c == 0 else f"{p.id}-{c}"
                f.write(orjson.dumps({"id": pid, "contents": f'"{title}"\n{p.text}'}) + b"\n")
                n += 1
    os.replace(tmp, out)
    return n


LOAD_PROBE = r"""
import json, sys, time, psutil
root, name = sys.argv[1], sys.argv[2]
t = time.perf_counter()
from retriever.index import Index
r = Index.open(root).retriever(name, threads=1)
r.search(["who wrote hamlet"], 10)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "rss_mb": psutil.Process().memory_info().rss / 2**20}))
"""


def probe_load(root: Path, name: str) -> dict:
    return c.python_json(LOAD_PROBE, str(root), name, env=ENV)


def server_ready(root: Path) -> dict:
    """Seconds from starting ``python -m retriever.server`` (bm25 only) to /health 200; RSS."""
    with c.ServerProcess(root, "--retrievers", "bm25", env=ENV) as server:
        return {"seconds": server.ready_s, "rss_mb": server.rss_mb()}


def answer_recall(store, results, answers, normalize) -> float:
    """Share of questions with an answer string inside one of its hits' passages."""
    found = 0
    for hits, golds in zip(results, answers):
        texts = [" " + normalize(store.get(h.row).contents) + " " for h in hits]
        golds = [" " + normalize(a) + " " for a in golds if normalize(a)]
        found += any(g in t for g in golds for t in texts)
    return found / max(len(results), 1)


def sizes_note(root: Path) -> str:
    """MB of the postings, maxima and vocabulary files of the float and compact parts."""
    groups = {
        "postings": (
            "data.csc.*",
            "indices.csc.*",
            "postings.*",
            "docs.*",
            "terms.idf*",
        ),
        "maxima": ("rows.*", "terms.max*"),
        "rest": ("indptr.*", "vocab.*", "*.json"),
    }
    out = []
    for name, globs in groups.items():
        mb = [
            sum(f.stat().st_size for g in globs for f in (root / part).glob(g)) / 1e6
            for part in ("bm25", "bm25-compact")
        ]
        out.append(f"{name} {mb[0]:.0f} vs {mb[1]:.0f} MB ({mb[1] / max(mb[0], 1e-9):.2f}x)")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--factor", type=int, default=8, help="copies of the 666k corpus (8: 5.3M)")
    p.add_argument("--work", default="/tmp/bm25-scale", help="folder for corpora and indexes")
    p.add_argument("--input", default=str(CORPUS_INPUT), help="base corpus (any corpus format)")
    p.add_argument("--single", type=int, default=500, help="queries for one-at-a-time runs")
    p.add_argument("--batched", type=int, default=1024, help="queries for batch-of-64 runs")
    p.add_argument("--recall", type=int, default=1000, help="NQ questions for answer recall")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs (median kept)")
    p.add_argument("--workers", type=int, default=0, help="tokenizing processes (0: all cores)")
    p.add_argument("--no-pyserini", action="store_true", help="skip Lucene")
    p.add_argument("--rebuild", action="store_true", help="rebuild the BM25 indexes")
    p.add_argument("--build-only", action="store_true", help="stop after the builds")
    p.add_argument("--corpus-only", action="store_true", help="stop after the corpus store")
    p.add_argument(
        "--format",
        choices=["float", "compact"],
        default="float",
        help="compact: also build and time the compact posting layout (part bm25-compact)",
    )
    c.add_common_args(p)
    args = p.parse_args(argv)
    nq = NQ
    if args.smoke:
        tmp = c.smoke_dir("bm25-scale")
        index = c.smoke_index()  # the base corpus: the shared tiny one
        (tmp / "work").mkdir()
        (tmp / "work" / "base").symlink_to(index, target_is_directory=True)
        args.input = str(index.parent / "tiny-wiki.txt.gz")
        args.work, args.factor, args.single, args.batched = str(tmp / "work"), 2, 20, 64
        args.recall, args.repeats, args.workers, args.no_pyserini = 50, 1, 1, True
        nq = c.TEST_DATA / "nq-test.tsv"
        print("smoke: pyserini (Lucene, Java) left out")

    from env.rewards import normalize_answer
    from retriever.queries import answers_of, iter_qa_rows, question_of

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, root = work / "base", work / f"x{args.factor}"
    done = [work / f"passages-x{args.factor}.jsonl", root]  # what an earlier run left counts
    have_gb = sum(f.stat().st_size for p in done if p.exists() for f in [p, *p.rglob("*")]
                  if f.is_file()) / 1e9  # fmt: skip
    need_gb = max(GB_PER_COPY * args.factor + 1 - have_gb, 1)
    free_gb = shutil.disk_usage(work).free / 1e9
    print(
        f"disk: {free_gb:.0f} GB free under {work}, about {need_gb:.0f} GB more needed", flush=True
    )
    if not (root / "bm25" / "manifest.json").is_file() and free_gb < need_gb:
        print(f"not enough disk for factor {args.factor}: free space or lower --factor")
        return 1
    saved = work / f"stats-x{args.factor}.json"  # build figures survive a rerun that skips them
    stats: dict = json.loads(saved.read_text()) if saved.is_file() else {"factor": args.factor}
    if not (base / "corpus" / "manifest.json").is_file():
        cmd = [c.PY, "-m", "index_build", "corpus", "--input", args.input]
        subprocess.run([*cmd, "--out", str(base), "--no-progress"], check=True, env=ENV)
    jsonl = work / f"passages-x{args.factor}.jsonl"
    if not jsonl.is_file():
        t = time.perf_counter()
        n = write_repeated(base, jsonl, args.factor)
        print(f"wrote {n} passages to {jsonl} in {time.perf_counter() - t:.0f} s", flush=True)
    if not (root / "corpus" / "manifest.json").is_file():
        cmd = [c.PY, "-m", "index_build", "corpus", "--input", str(jsonl), "--out", str(root)]
        stats["corpus"] = sampled([*cmd, "--no-progress"])
        print("corpus", stats["corpus"], flush=True)
        saved.write_text(json.dumps(stats))
    if args.corpus_only:
        return 0
    use_lucene = not args.no_pyserini
    if use_lucene:
        from retriever.bm25.lucene import java_available

        use_lucene = java_available() is not None
    builds = [("bm25", [])] + ([("bm25-lucene", ["--backend", "pyserini"])] if use_lucene else [])
    if args.format == "compact":
        builds.append(("bm25-compact", ["--name", "bm25-compact", "--format", "compact"]))
    for name, extra in builds:
        if args.rebuild or not (root / name / "manifest.json").is_file():
            cmd = [c.PY, "-m", "index_build", "bm25", "--index", str(root), "--no-progress"]
            cmd += ["--workers", str(args.workers)] if name.startswith("bm25") else []
            stats[f"build {name}"] = {**sampled([*cmd, *extra]), "mb": 0.0}
            stats[f"build {name}"]["mb"] = folder_mb(root / name)
            print(name, stats[f"build {name}"], flush=True)
            saved.write_text(json.dumps(stats))
    if not json.loads((root / "bm25" / "manifest.json").read_text())["postings"].get("row_ranges"):
        cmd = [c.PY, "-m", "index_build", "ranges", "--index", str(root), "--no-progress"]
        stats["ranges bm25"] = sampled(cmd)
        stats["build bm25"]["mb"] = folder_mb(root / "bm25")
        print("ranges", stats["ranges bm25"], flush=True)
        saved.write_text(json.dumps(stats))
    if args.build_only:
        return 0
    n_docs = json.loads((root / "corpus" / "manifest.json").read_text())["num_docs"]
    stats["load bm25"] = probe_load(root, "bm25")
    if use_lucene:
        stats["load bm25-lucene"] = probe_load(root, "bm25-lucene")
    stats["server bm25"] = server_ready(root)
    print({k: v for k, v in stats.items() if k.startswith(("load", "server"))}, flush=True)

    from retriever.bm25.retriever import KERNELS, BM25Retriever
    from retriever.index import Index

    rows_qa = [r for _, r in iter_qa_rows(nq)]
    queries = [question_of(r) for r in rows_qa]
    answers = [answers_of(r) for r in rows_qa]
    index = Index.open(root)
    ours = BM25Retriever(root / "bm25", threads=1)
    exhaustive = BM25Retriever(root / "bm25", threads=1, pruning=False)
    assert ours.method == "bmp", "the bm25 part has no row-range maxima"
    systems = {"ours bmp (default)": ours.search}
    others = {  # any further kernel (was: daat), so every one is timed and checked
        m: BM25Retriever(root / "bm25", threads=1, pruning=m)
        for m in KERNELS
        if m not in ("bmp", "exhaustive") and not m.endswith("-compact")
    }
    if args.format == "compact":  # the compact part's kernels, on their own part
        others |= {
            m: BM25Retriever(root / "bm25-compact", threads=1, pruning=m)
            for m in KERNELS
            if m.endswith("-compact")
        }
    systems |= {f"ours {m}": r.search for m, r in others.items()}
    systems["ours exhaustive"] = exhaustive.search
    if use_lucene:
        lucene = index.retriever("bm25-lucene", threads=1)
        raw = lucene._searcher  # the pyserini SimpleSearcher the part wraps

        def lucene_fn(qs, k):
            if len(qs) == 1:  # the raw single-query call, no mapping: the peer's own speed
                return [raw.search(qs[0], k)]
            return lucene.search(qs, k)

        systems["pyserini (Lucene)"] = lucene_fn
    rows = []
    for k in (3, 5, 10):
        for batch, qs in ((1, queries[: args.single]), (64, queries[: args.batched])):
            runs = c.alternate(
                {
                    n: lambda fn=fn, qs=qs, k=k, b=batch: c.measure(fn, qs, k, b)
                    for n, fn in systems.items()
                },
                args.repeats,
            )
            for name in systems:
                c.add_qps_row(rows, name, k, batch, runs[name])

    ratios = {}
    for k in (3, 5, 10):
        for batch in (1, 64):
            ours_qps = c.qps_of(rows, "ours bmp (default)", k, batch)
            ratios[f"bmp/exhaustive k={k} b={batch}"] = ours_qps / c.qps_of(
                rows, "ours exhaustive", k, batch
            )
            if args.format == "compact":
                ratios[f"bmp-compact/bmp k={k} b={batch}"] = (
                    c.qps_of(rows, "ours bmp-compact", k, batch) / ours_qps
                )
            if use_lucene:
                ratios[f"bmp/pyserini k={k} b={batch}"] = ours_qps / c.qps_of(
                    rows, "pyserini (Lucene)", k, batch
                )
            if use_lucene and args.format == "compact":
                ratios[f"bmp-compact/pyserini k={k} b={batch}"] = c.qps_of(
                    rows, "ours bmp-compact", k, batch
                ) / c.qps_of(rows, "pyserini (Lucene)", k, batch)
    qa = list(zip(queries, answers))[: args.recall]
    qtexts, golds = [q for q, _ in qa], [a for _, a in qa]
    recall = {}
    for k in (3, 5, 10):
        recall[f"ours@{k}"] = answer_recall(
            index.store, ours.search(qtexts, k), golds, normalize_answer
        )
        if use_lucene:
            recall[f"pyserini@{k}"] = answer_recall(
                index.store, lucene.search(qtexts, k), golds, normalize_answer
            )
    want = exhaustive.search(qtexts, 10)
    same = all(r.search(qtexts, 10) == want for r in [ours, *others.values()])

    notes = [f"{n_docs} passages ({Path(args.input).name} x{args.factor}, new ids and titles)."]
    for key in ("corpus", "build bm25", "ranges bm25", "build bm25-compact", "build bm25-lucene"):
        if key in stats:
            s = stats[key]
            size = f", size {s['mb'] / 1e3:.2f} GB" if s.get("mb") else ""
            notes.append(
                f"- {key}: {s['seconds']:.0f} s, peak RSS {s['peak_rss_mb']:.0f} MB (largest "
                f"process), {s['peak_tree_rss_mb']:.0f} MB (process tree){size}"
            )
    for key in ("load bm25", "load bm25-lucene", "server bm25"):
        if key in stats:
            what = "time-to-ready" if key.startswith("server") else "open + first query"
            notes.append(
                f"- {key} ({what}): {stats[key]['seconds']:.2f} s, RSS {stats[key]['rss_mb']:.0f} MB"
            )
    notes.append(
        "- answer recall on "
        f"{len(qa)} NQ test questions: " + ", ".join(f"{k} {v:.3f}" for k, v in recall.items())
    )
    notes.append(f"- pruned == exhaustive (rows and scores, k=10, {len(qa)} questions): {same}")
    size = sum(f.stat().st_size for f in (root / "bm25").glob("rows.*.npy")) / 1e9
    notes.append(f"- row-range maxima (part of the bm25 size): {size:.2f} GB")
    if args.format == "compact":
        notes.append("- bytes by file group, float vs compact: " + sizes_note(root))
    notes.append(
        "- ratios (median of alternating runs, one thread each): "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )
    print("\n".join(notes))
    print(
        json.dumps(
            {
                "bench": "bm25_scale",
                "machine": c.machine(),
                "num_docs": n_docs,
                "stats": stats,
                "rows": rows,
                "ratios": ratios,
                "recall": recall,
                "pruned_equals_exhaustive": same,
            }
        )
    )
    c.record(
        args,
        argv,
        f"BM25 at scale: {n_docs} passages, pruned vs exhaustive vs pyserini"
        + (", float vs compact layout" if args.format == "compact" else ""),
        c.qps_table(rows),
        c.QPS_HEADER,
        "\n".join(notes),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
