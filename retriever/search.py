"""``python -m retriever.search --index ROOT [--retriever bm25] [-k 10] [--queries FILE | QUERY...]``

Prints one JSON object per query: ``{"query", "hits": [{"id", "contents", "title", "text",
"url", "score"}]}`` (the documents of ``/retrieve``, with their scores). FILE is one query per
line or any QA file (see ``retriever.queries``); ``-`` reads stdin. Any retriever of the index
root works (``bm25``, ``dense-NAME``, ``hybrid``).
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from .errors import RetrieverError
from .protocol import DEFAULT_K

BATCH = 256


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m retriever.search", description=__doc__.split("\n")[0]
    )
    p.add_argument("--index", required=True, metavar="ROOT", help="index root")
    p.add_argument("--retriever", default="bm25", help="bm25 (default), dense-NAME, hybrid, ...")
    p.add_argument(
        "-k", "--topk", type=int, help=f"hits per query (default {DEFAULT_K}, as the server)"
    )
    p.add_argument(
        "--queries", metavar="FILE", help="query file (plain lines or a QA file; - for stdin)"
    )
    p.add_argument("--batch-size", type=int, default=BATCH, help="queries per search call")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("query", nargs="*", help="queries (when no --queries)")
    return p


def main(argv: list[str] | None = None) -> int:
    from .cli import configure_process, start_logging

    configure_process()
    args = build_parser().parse_args(argv)
    start_logging(logging.DEBUG if args.verbose else logging.WARNING)
    if bool(args.queries) == bool(args.query):
        print(
            "error: give queries as arguments or --queries FILE (one of the two)", file=sys.stderr
        )
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        from .index import Index
        from .queries import read_queries

        queries = read_queries(args.queries) if args.queries else list(args.query)
        index = Index.open(args.index)
        index.retriever(args.retriever)  # load (and fail) before printing anything
        out = sys.stdout.buffer
        for lo in range(0, len(queries), args.batch_size):
            batch = queries[lo : lo + args.batch_size]
            results = index.search(batch, k=args.topk, retriever=args.retriever)
            for q, hits in zip(batch, results):
                obj = {"query": q, "hits": [hit.to_dict() for hit in hits]}
                out.write(orjson.dumps(obj) + b"\n")
            out.flush()
    except (RetrieverError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
