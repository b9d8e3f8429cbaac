"""``python -m retriever.inspect ROOT``: look inside a corpus store; prints JSON, one object a line.

Without options it prints ``--stats``. ``--id``, ``--title`` and ``--url`` may repeat.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from .errors import RetrieverError
from .store.docstore import DocStore
from .types import Passage


def _print(obj) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def _passage(p: Passage) -> dict:
    return {"row": p.row, **p.to_dict()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m retriever.inspect", description=__doc__)
    p.add_argument("root", help="index root (or its corpus/ folder)")
    p.add_argument(
        "--stats", action="store_true", help="counts, checksum, sources, skipped records"
    )
    p.add_argument("--id", action="append", default=[], help="passage id (or page id) to show")
    p.add_argument("--title", action="append", default=[], help="page title, any form")
    p.add_argument("--url", action="append", default=[], help="page URL, any form")
    p.add_argument("--row", action="append", type=int, default=[], help="passage row to show")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="N random passages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-chars", type=int, default=None, help="cut page text to this many chars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        store = DocStore.open(args.root)
    except RetrieverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asked = args.id or args.title or args.url or args.row or args.sample
    if args.stats or not asked:
        _print({"stats": store.stats()})
    status = 0
    for pid in args.id:
        row = store.find_id(pid)
        if row is not None:
            _print({"id": pid, "passage": _passage(store.get(row))})
            continue
        page = store.page_by_id(pid)
        if page is None:
            status = 1
        _print({"id": pid, "page": None if page is None else _page(page, args.max_chars)})
    for kind, names in (("title", args.title), ("url", args.url)):
        for name in names:
            page = store.page(name)
            rows = store.find_title(name)
            if page is None:
                status = 1
            _print(
                {
                    kind: name,
                    "page": None if page is None else _page(page, args.max_chars),
                    "passage_rows": rows,
                }
            )
    for row in args.row:
        try:
            _print({"row": row, "passage": _passage(store.get(row))})
        except IndexError as exc:
            _print({"row": row, "error": str(exc)})
            status = 1
    for p in store.sample(args.sample, seed=args.seed):
        _print({"sample": _passage(p)})
    return status


def _page(page, max_chars: int | None) -> dict:
    text = page.text if max_chars is None else page.text[:max_chars]
    return {
        "id": page.id,
        "title": page.title,
        "url": page.url,
        "total_chars": len(page.text),
        "text": text,
    }


if __name__ == "__main__":
    sys.exit(main())
