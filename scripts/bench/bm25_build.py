"""BM25 build: ours (``index_build bm25``, the spilling bm25s-format builder) vs pyserini 0.25
(Lucene, our ``--backend pyserini``) on the same corpus store, same number of processes/threads.

Each repeat builds both from scratch, alternating which goes first, each in a fresh process
(``python -m index_build bm25``), and records wall time, peak RSS of the largest process
(``ru_maxrss`` of that build's process and its children), peak RSS of the whole process tree
(sampled every 0.1 s) and the index size; for ours also the builder's own phase times
(tokenize, merge) from its log. Reports medians and the ours/Lucene ratio, and appends them to
the benchmark history. The corpus store is only read (symlinked into a work root).

    .venv/bin/python scripts/bench/bm25_build.py --corpus /tmp/h4_scale/base/corpus --repeats 3
    .venv/bin/python scripts/bench/bm25_build.py --smoke  # a few bundled articles, ours only
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import common as c

SYSTEMS = {"ours": ("bm25s", "bm25-bench"), "lucene": ("pyserini", "bm25-lucene-bench")}
PHASES = {
    "tokenize": re.compile(r"tokenized \d+ passages in ([\d.]+) s"),
    "merge": re.compile(r"merged and scored \d+ postings in ([\d.]+) s"),
}


def child(root: str, backend: str, name: str, workers: int) -> int:
    """One build in this process; prints its resource use as the last stdout line."""
    import resource

    from index_build.__main__ import main

    flag = "--workers" if backend == "bm25s" else "--threads"
    argv = ["bm25", "--index", root, "--backend", backend, "--name", name, flag, str(workers)]
    rc = main([*argv, "--no-progress", "-v"])
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "largest_mb": max(own.ru_maxrss, kids.ru_maxrss) / 1024,
                "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
            }
        )
    )
    return rc


def build_once(root: Path, system: str, workers: int) -> dict:
    backend, name = SYSTEMS[system]
    shutil.rmtree(root / name, ignore_errors=True)
    run = c.run_sampled([c.PY, __file__, "--child", str(root), backend, name, str(workers)])
    usage = json.loads(run["stdout"].strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in (root / name).rglob("*") if p.is_file())
    row = {
        "seconds": run["seconds"],
        "cpu_s": usage["cpu_s"],
        "largest_mb": usage["largest_mb"],
        "tree_mb": run["peak_tree_rss_mb"],
        "index_mb": size / 1e6,
    }
    for phase, pattern in PHASES.items():
        if m := pattern.search(run["stderr"]):
            row[phase] = float(m.group(1))
    shutil.rmtree(root / name)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", help="a corpus store folder (only read)")
    p.add_argument(
        "--work", default="/tmp/bm25-build-bench", help="work root (default %(default)s)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="our processes = Lucene's threads")
    p.add_argument("--no-lucene", action="store_true", help="ours only (no Java)")
    c.add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke:
        tmp = c.smoke_dir("bm25-build")
        args.corpus = str(c.smoke_index() / "corpus")
        args.work, args.repeats, args.workers, args.no_lucene = str(tmp / "work"), 1, 1, True
        print("smoke: Lucene (pyserini, Java) left out")
    if not args.corpus:
        p.error("--corpus is required (or --smoke)")
    corpus = Path(args.corpus).resolve()
    if not (corpus / "manifest.json").is_file():
        raise SystemExit(f"{corpus} is not a corpus store (no manifest.json)")
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    link = root / "corpus"
    if not link.exists():
        link.symlink_to(corpus, target_is_directory=True)
    num_docs = json.loads((corpus / "manifest.json").read_text())["num_docs"]
    systems = [s for s in SYSTEMS if not (args.no_lucene and s == "lucene")]

    def build(system: str) -> dict:
        row = build_once(root, system, args.workers)
        print(f"{system}: " + json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
        return row

    runs = c.alternate({s: lambda s=s: build(s) for s in systems}, args.repeats)
    med = {s: c.median([x["seconds"] for x in rows]) for s, rows in runs.items()}
    table = []
    for system, rows in runs.items():
        phases = ", ".join(
            f"{ph} {c.median([x[ph] for x in rows]):.1f} s" for ph in PHASES if ph in rows[0]
        )
        table.append(
            [
                f"{system} ({SYSTEMS[system][0]})",
                f"{med[system]:.1f}",
                " / ".join(f"{x['seconds']:.1f}" for x in rows),
                f"{c.median([x['cpu_s'] for x in rows]):.1f}",
                f"{max(x['largest_mb'] for x in rows):.0f}",
                f"{max(x['tree_mb'] for x in rows):.0f}",
                f"{rows[0]['index_mb']:.0f}",
                phases or "-",
            ]
        )
    header = [
        "system",
        "build s (median)",
        "runs (s)",
        "CPU s (median)",
        "peak RSS largest process MB",
        "peak RSS process tree MB",
        "index MB",
        "phases (median)",
    ]
    ratio = med["ours"] / med["lucene"] if "lucene" in med else float("nan")
    print(" | ".join(header))
    for row in table:
        print(" | ".join(row))
    print(f"ours / Lucene build time: {ratio:.2f}x")
    print(json.dumps({"num_docs": num_docs, "runs": runs, "ratio": ratio}))
    c.record(
        args,
        argv,
        f"BM25 build, ours vs Lucene ({num_docs} passages)",
        table,
        header,
        f"{num_docs} passages; ours with {args.workers} worker processes (plus the "
        f"parent), Lucene with {args.workers} indexing threads; each build a fresh "
        "process, alternating which goes first. Build seconds include process start "
        "(and for Lucene, writing its JSONL collection and the JVM). "
        f"Ours / Lucene median build time: {ratio:.2f}x.",
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        root, backend, name, workers = sys.argv[2:6]
        sys.exit(child(root, backend, name, int(workers)))
    sys.exit(main())
