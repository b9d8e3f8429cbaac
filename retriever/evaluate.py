"""``python -m retriever.evaluate --index ROOT [--retriever bm25] (--qa FILE | --qrels FILE --queries FILE)``

Retrieval quality of any retriever of an index root (or of a TREC run, ``--run``): R@k, nDCG@10
and RR@10 (MRR@10) by ``ir_measures`` against qrels or HotpotQA's gold titles, and answer
recall@k (DPR's / pyserini's has_answer) for QA files with answers. Prints a table, or with
``--json`` one JSON object per retriever on stdout (the table then goes to stderr).
``--save-run FILE`` writes the TREC run it searched.
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from .errors import RetrieverError
from .evaluation import CUTOFFS, MISSING_GOLD, Run, Topics
from .rerank import split_name

BATCH = 256
log = logging.getLogger(__name__)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m retriever.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--index", required=True, metavar="ROOT", help="index root")
    p.add_argument(
        "--retriever",
        default="bm25",
        help="bm25 (default), dense-NAME, hybrid, ...; comma-separated for several",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--qa",
        metavar="FILE",
        help="QA file with answers (any layout the search CLI reads; HotpotQA rows also judge titles)",
    )
    src.add_argument("--qrels", metavar="FILE", help="TREC qrels 'qid 0 docid rel' or JSONL")
    p.add_argument(
        "--queries", metavar="FILE", help="with --qrels: topics 'qid<TAB>query' or a QA file"
    )
    p.add_argument(
        "-k", "--depth", type=int, default=100, help="hits searched per query (default 100)"
    )
    p.add_argument(
        "--cutoffs",
        type=_ints,
        help=f"k of R@k and answer_recall@k (default {','.join(map(str, CUTOFFS))}, up to --depth)",
    )
    p.add_argument("--run", metavar="FILE", help="evaluate this TREC run instead of searching")
    p.add_argument("--save-run", metavar="FILE", help="write the run searched (TREC format)")
    p.add_argument(
        "--missing-gold",
        choices=MISSING_GOLD,
        default="error",
        help="a HotpotQA gold title the corpus lacks: error (default), keep (counts as not found) or drop",
    )
    p.add_argument(
        "--rerank",
        metavar="[KIND:]MODEL",
        help="reranker of NAME+rerank retrievers: a dense part or a model folder "
        "(default: the index's dense part as a bi-encoder)",
    )
    p.add_argument(
        "--rerank-depth",
        type=int,
        default=None,
        help="NAME+rerank: candidates reranked per query (default 50; at least --depth)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per retriever on stdout")
    p.add_argument("--batch-size", type=int, default=BATCH, help="queries per search call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _search(
    index, name: str, topics: Topics, depth: int, batch: int, progress: bool, **options
) -> Run:
    from tqdm import tqdm

    index.retriever(name, **options)  # load (and fail) before the progress bar
    run: Run = {}
    items = topics.items
    with tqdm(total=len(items), desc=name, unit="q", disable=not progress) as bar:
        for lo in range(0, len(items), batch):
            chunk = items[lo : lo + batch]
            results = index.retriever(name).search([t.query for t in chunk], depth)
            for t, hits in zip(chunk, results):
                run[t.qid] = [(index.store.get(h.row).id, h.score) for h in hits]
            bar.update(len(chunk))
    return run


def evaluate_run(index, topics: Topics, run: Run, cutoffs, answers: bool) -> dict[str, float]:
    """The measures of one run: ranking ones when ``topics`` are judged, answer recall when
    ``answers``."""
    from .evaluation import answer_recall, ranking_metrics, titles_run

    store = index.store
    cache: dict[str, int] = {}

    def row(docid: str) -> int:
        if docid not in cache:
            cache[docid] = store.find_id(docid)
        return cache[docid]

    out: dict[str, float] = {}
    if topics.qrels:
        judged = (
            titles_run(run, lambda d: store.get(row(d)).title) if topics.level == "title" else run
        )
        out.update(ranking_metrics(topics.qrels, judged, cutoffs))
    if answers:
        texts = {q: [store.get(row(d)).text for d, _ in docs] for q, docs in run.items()}
        out.update(answer_recall(topics.items, texts, cutoffs))
    return out


def format_table(results: list[dict]) -> str:
    """One row per retriever, one column per measure, 4 decimals."""
    names = list(dict.fromkeys(m for r in results for m in r["metrics"]))
    head = ["retriever", "queries", "judged", *names]
    rows = [
        [
            r["retriever"],
            str(r["queries"]),
            str(r["judged"]),
            *(f"{r['metrics'].get(m, float('nan')):.4f}" for m in names),
        ]
        for r in results
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([line(head), *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    from .cli import configure_process, fail, start_logging

    configure_process()
    args = build_parser().parse_args(argv)
    start_logging(logging.DEBUG if args.verbose else logging.WARNING)
    names = [n.strip() for n in args.retriever.split(",") if n.strip()]
    cutoffs = args.cutoffs or tuple(k for k in CUTOFFS if k <= args.depth) or (args.depth,)
    if args.qrels and not args.queries:
        return fail("--qrels needs --queries FILE (topics 'qid<TAB>query' or a QA file)")
    if args.qa and args.queries:
        return fail("--queries goes with --qrels; a --qa file holds its own questions")
    if args.depth < 1 or args.batch_size < 1:
        return fail(f"--depth and --batch-size must be >= 1, got {args.depth}, {args.batch_size}")
    if min(cutoffs) < 1 or max(cutoffs) > args.depth:
        return fail(f"--cutoffs {cutoffs} must lie in 1..--depth ({args.depth}); raise --depth")
    if (args.run or args.save_run) and len(names) != 1:
        return fail(f"--run and --save-run take one retriever, got {names}")
    try:
        from .evaluation import check_answers, read_qrels, read_run, read_topics, write_run
        from .index import Index

        index = Index.open(args.index)
        store = index.store

        def known(docid: str) -> bool:
            return store.find_id(docid) is not None

        if args.qa:
            topics = read_topics(args.qa, store=store, missing_gold=args.missing_gold)
            check_answers(topics)
        else:
            topics = read_topics(args.queries)
            topics.qrels = read_qrels(args.qrels, topics, known_doc=known)
        progress = not args.no_progress and sys.stderr.isatty()
        results = []
        for name in names:
            if args.run:
                run = read_run(args.run, (t.qid for t in topics.items), known_doc=known)
            else:
                options = {}
                if split_name(name)[1]:
                    options["reranker"] = args.rerank
                    if args.rerank_depth is not None:
                        options["rerank_depth"] = args.rerank_depth
                run = _search(index, name, topics, args.depth, args.batch_size, progress, **options)
            if args.save_run:
                write_run(args.save_run, run, name)
            metrics = evaluate_run(index, topics, run, cutoffs, answers=bool(args.qa))
            results.append(
                {
                    "retriever": name,
                    "run": args.run,
                    "queries": len(topics.items),
                    "judged": len(topics.qrels),
                    "level": topics.level,
                    "depth": args.depth,
                    "metrics": metrics,
                }
            )
    except (RetrieverError, ValueError) as exc:
        return fail(str(exc))
    except BrokenPipeError:
        return 0
    table = format_table(results)
    if args.json:
        print(table, file=sys.stderr)
        for r in results:
            sys.stdout.buffer.write(orjson.dumps(r) + b"\n")
        sys.stdout.flush()
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
