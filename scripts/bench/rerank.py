"""Rerank quality and cost on HotpotQA: gold-title recall@3/5/10 for bm25, dense and hybrid,
each alone and reranked at depth N = 20, 50, 100 by the packaged MiniLM as a bi-encoder
(``--rerank dense-minilm``), and the latency the rerank adds per query (baseline: the same
retriever without rerank, measured in the same run).

Builds (or reuses, ``--index``) an index of the bundled HotpotQA-500 paragraphs with BM25 and a
MiniLM dense part, then runs ``python -m retriever.evaluate``'s code over it.

    .venv/bin/python scripts/bench/rerank.py --index /tmp/hotpot   # full: 500 questions
    .venv/bin/python scripts/bench/rerank.py --smoke               # 5 questions, N = 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import common as c

HOTPOT = c.REPO / "tests" / "data" / "hotpotqa-distractor-500.jsonl"


def build(root: Path, questions: int) -> None:
    """corpus + bm25 + dense-minilm over the first ``questions`` HotpotQA rows' paragraphs."""
    from index_build.__main__ import main
    from retriever.dense.encoders import packaged_model_path

    if (root / "dense-minilm" / "manifest.json").is_file():
        return
    src = root.parent / "hotpot-subset.jsonl"
    src.write_text("".join(HOTPOT.read_text().splitlines(keepends=True)[:questions]))
    steps = [
        ["corpus", "--input", str(src), "--out", str(root)],
        ["bm25", "--index", str(root)],
        ["encode", "--index", str(root), "--model", str(packaged_model_path()), "--name", "minilm"],
    ]
    for argv in steps:
        assert main([*argv, "--no-progress"]) == 0, argv


def run(root: Path, qa: Path, questions: int, depths: list[int], smoke: bool) -> list[dict]:
    from retriever.evaluate import _search, evaluate_run
    from retriever.evaluation import read_topics
    from retriever.index import Index

    index = Index.open(root)
    topics = read_topics(str(qa), store=index.store, missing_gold="drop")
    topics.items = topics.items[:questions]
    rows = []
    for base in ("bm25", "dense-minilm", "hybrid"):
        configs = [(base, None)] + [(f"{base}+rerank", n) for n in depths]
        base_seconds = None
        for name, depth in configs:
            index._retrievers.pop(name, None)  # a fresh RerankRetriever per depth
            options = {"reranker": "dense-minilm", "rerank_depth": depth} if depth else {}
            _search(index, name, topics, 10, 64, False, **options)  # load and warm up
            t0 = time.perf_counter()
            found = _search(index, name, topics, 10, 64, False, **options)
            ms = 1000 * (time.perf_counter() - t0) / len(topics.items)
            metrics = evaluate_run(index, topics, found, (3, 5, 10), answers=False)
            base_seconds = ms if depth is None else base_seconds
            rows.append(
                {
                    "retriever": name,
                    "N": depth or "-",
                    **{f"R@{k}": round(metrics[f"R@{k}"], 4) for k in (3, 5, 10)},
                    "ms/query": round(ms, 2),
                    "added ms/query": round(ms - base_seconds, 2) if depth else 0.0,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=Path, help="index root to build or reuse")
    p.add_argument("--questions", type=int, default=500)
    c.add_common_args(p)
    args = p.parse_args(argv)
    questions = 5 if args.smoke else args.questions
    depths = [5] if args.smoke else [20, 50, 100]
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        root = args.index or Path(tmp) / "index"
        build(root, questions if args.smoke else 500)
        rows = run(root, HOTPOT, questions, depths, args.smoke)
    header = ["retriever", "N", "R@3", "R@5", "R@10", "ms/query", "added ms/query"]
    table = [[r[h] for h in header] for r in rows]
    c.print_table(header, table)
    print(json.dumps({"bench": "rerank", "questions": questions, "rows": rows}))
    if not args.no_record:
        c.append_section(
            f"Rerank on HotpotQA-{questions} (MiniLM bi-encoder)",
            c.command_line("scripts/bench/rerank.py", argv),
            table,
            header,
            "Gold-title recall (ir_measures, missing gold dropped); ms/query = one pass of "
            "every question in batches of 64 on this machine, CPU.",
            smoke=args.smoke,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
