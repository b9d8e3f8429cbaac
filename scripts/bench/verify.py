"""``index_build verify`` on a real store, against the floors of what it does, in one run.

Builds (once) the store of the 30k-article WikiExtractor corpus (../shared/data, 666k passages
with pages), then times, medians of ``--repeat`` runs:

- checksums: ``verify_store(rows=False)`` against plain ``hashlib.sha256`` over the same files
  (the floor: reading and hashing every byte once);
- rows: ``verify_store(checksums=False)`` (every passage and page read the way a query reads
  it, by row, through the offsets) against one sequential pass of ``orjson.loads`` over the same
  JSONL lines (the floor: parsing every row once, no lookups).

    python scripts/bench/verify.py [--repeat 3] [--work DIR]
    python scripts/bench/verify.py --smoke  # the bundled 40-article slice, one run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import common as c
import orjson

from index_build.corpus import build_corpus
from index_build.verify import verify_store
from retriever.store.docstore import DocStore

CORPUS = c.SHARED_DATA / "wikiextractor-enwiki-30k.txt.gz"
SMOKE_CORPUS = c.TEST_DATA / "wikiextractor-slice.txt.gz"


def plain_sha256(paths: list[Path]) -> None:
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        h.hexdigest()


def plain_parse(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                orjson.loads(line)
                n += 1
    return n


def timed(fn, repeat: int) -> float:
    return c.median(c.seconds_of(fn) for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=None, help="keep the built store here (default: temp)")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    corpus = SMOKE_CORPUS if args.smoke else CORPUS
    args.repeat = 1 if args.smoke else args.repeat
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-verify-"))
    if not (work / "corpus" / "manifest.json").is_file():
        build_corpus([corpus], work)
    store = DocStore.open(work)
    folder = store.folder
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"]
    data = [folder / "passages.jsonl", folder / "pages.jsonl"]
    mb = sum(p.stat().st_size for p in files) / 1e6
    rows = len(store) + store.num_pages
    out: dict = {}
    assert not verify_store(store, out), "the store should verify clean"
    t_hash = timed(lambda: plain_sha256(files), args.repeat)
    t_sums = timed(lambda: verify_store(store, {}, checksums=True, rows=False), args.repeat)
    assert plain_parse(data) == rows
    t_parse = timed(lambda: plain_parse(data), args.repeat)
    t_rows = timed(lambda: verify_store(store, {}, checksums=False, rows=True), args.repeat)
    table = [
        ["checksums: verify", f"{mb:.0f} MB", f"{t_sums:.2f}", f"{mb / t_sums:.0f} MB/s", ""],
        [
            "checksums: plain sha256 (floor)",
            f"{mb:.0f} MB",
            f"{t_hash:.2f}",
            f"{mb / t_hash:.0f} MB/s",
            f"verify {t_sums / t_hash:.2f}x",
        ],
        [
            "rows: verify (by row, as queries read)",
            f"{rows} rows",
            f"{t_rows:.2f}",
            f"{rows / t_rows:,.0f} rows/s",
            "",
        ],  # fmt: skip
        [
            "rows: one orjson pass (floor)",
            f"{rows} rows",
            f"{t_parse:.2f}",
            f"{rows / t_parse:,.0f} rows/s",
            f"verify {t_rows / t_parse:.2f}x",
        ],
    ]
    header = ["check", "size", "s (median)", "rate", "ratio"]
    for row in table:
        print(" | ".join(str(c) for c in row))
    result = {"mb": mb, "rows": rows, "checksum_s": t_sums, "sha256_s": t_hash,
              "rows_s": t_rows, "parse_s": t_parse}  # fmt: skip
    print(json.dumps(result))
    if args.no_record:
        return 0
    c.record(
        args,
        argv,
        f"index_build verify on the {len(store)}-passage store",
        table,
        header,
        f"Store of {corpus.name} ({len(store)} passages, "
        f"{store.num_pages} pages, {mb:.0f} MB of files). Medians of {args.repeat} runs, warm "
        "page cache; the machine is shared (2 cores, other jobs running).",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
