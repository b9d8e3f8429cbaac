"""A Search-R1-style passage file opened in place against the same file copied into a store.

Writes the 666k passages of the 30k-article WikiExtractor corpus (../shared/data) as a
Search-R1 ``wiki-18.jsonl`` (``id``, ``contents`` = ``"Title"\\ntext``), then builds the store
both ways (``--in-place yes``: offsets and key tables only; ``--in-place no``: a copy), checks
that every passage reads back identically (the one-row-parser contract at full size) and
reports build time, bytes written and random-read speed, medians of ``--repeat`` builds.

    python scripts/bench/inplace.py [--repeat 3] [--work DIR]
    python scripts/bench/inplace.py --smoke  # the bundled 40-article slice, one build each way
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common as c
import orjson

from index_build.corpus import CorpusConfig, build_corpus
from retriever.store.docstore import DocStore

CORPUS = c.SHARED_DATA / "wikiextractor-enwiki-30k.txt.gz"
SMOKE_CORPUS = c.TEST_DATA / "wikiextractor-slice.txt.gz"


def write_search_r1(store: DocStore, path: Path) -> None:
    with open(path, "wb") as f:
        for p in store.iter_passages():
            f.write(orjson.dumps({"id": str(p.row), "contents": f'"{p.title}"\n{p.text}'}) + b"\n")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def read_speed(store: DocStore, n: int = 20000) -> float:
    rng = random.Random(0)
    rows = [rng.randrange(len(store)) for _ in range(n)]
    t = time.perf_counter()
    for r in rows:
        store.get(r)
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=None)
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    corpus = SMOKE_CORPUS if args.smoke else CORPUS
    args.repeat = 1 if args.smoke else args.repeat
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-inplace-"))
    src = work / "wiki-18.jsonl"
    if not src.is_file():
        if not (work / "wx" / "corpus" / "manifest.json").is_file():
            build_corpus([corpus], work / "wx", CorpusConfig(keep_pages=False))
        write_search_r1(DocStore.open(work / "wx"), src)
    mb = src.stat().st_size / 1e6

    def build(mode: str) -> float:
        out = work / f"in-place-{mode}"
        shutil.rmtree(out, ignore_errors=True)
        return c.seconds_of(lambda: build_corpus([src], out, CorpusConfig(in_place=mode)))

    rows = []
    times = c.alternate(
        {mode: lambda mode=mode: build(mode) for mode in ("yes", "no")}, args.repeat
    )
    a, b = DocStore.open(work / "in-place-yes"), DocStore.open(work / "in-place-no")
    assert len(a) == len(b)
    same = sum(
        (p.id, p.title, p.text, p.url) == (q.id, q.title, q.text, q.url)
        for p, q in zip(a.iter_passages(), b.iter_passages())
    )
    assert same == len(a), f"{len(a) - same} passages differ"
    for mode, store in (("yes", a), ("no", b)):
        t = c.median(times[mode])
        written = folder_bytes(store.folder) / 1e6
        rows.append(
            [
                f"--in-place {mode}",
                f"{len(store)}",
                f"{t:.1f}",
                f"{mb / t:.0f} MB/s",
                f"{written:.0f} MB",
                f"{read_speed(store):,.0f}",
            ]
        )
    ratio = c.median(times["no"]) / c.median(times["yes"])
    header = ["build", "passages", "s (median)", "input rate", "written", "random reads/s"]
    for row in rows:
        print(" | ".join(row))
    print(json.dumps({"mb": mb, "in_place_s": c.median(times["yes"]),
                      "copy_s": c.median(times["no"]), "identical": same}))  # fmt: skip
    if args.no_record:
        return 0
    c.record(
        args,
        argv,
        "Search-R1 passage file: in place vs copied",
        rows,
        header,
        f"Input: the passages of {corpus.name} as a Search-R1 wiki-18.jsonl "
        f"({mb:.0f} MB). All {same} passages read back identical both ways (one row parser). "
        f"In place is {ratio:.1f}x faster to build and writes only offsets and key tables. "
        f"Medians of {args.repeat} builds; shared 2-core machine.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
