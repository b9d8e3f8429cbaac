"""``python -m index_build ranges --index ROOT``: add row-range maxima to a built BM25 part.

BM25 parts built before row-range maxima are searched exhaustively (and say so when loaded);
this writes the two files the pruned search needs (``retriever.bm25.rowmax``) in seconds and
records them in the part's manifest and file table. Parts built by ``python -m index_build
bm25`` already have them.

A server may have the part memory-mapped while this runs, so no file of it is ever written in
place: the new part is put together in ``PART.partial`` (the unchanged files hard-linked, the
new ones written) and swapped in with ``publish_dir``. An open retriever keeps answering from
the files it mapped; the next load sees the new part. A failure (a full disk) removes the
partial folder and leaves the part as it was.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

from retriever.bm25 import compact, rowmax, termmax
from retriever.errors import IndexFormatError
from retriever.files import file_table, publish_dir, start_partial_dir
from retriever.manifest import MANIFEST, read_manifest, write_manifest

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="ROOT", help="index root")
    p.add_argument("--part", default="bm25", help="the bm25s part's folder (default bm25)")
    p.add_argument(
        "--shift",
        type=int,
        default=rowmax.SHIFT,
        help=f"rows per range: 2**shift (default {rowmax.SHIFT})",
    )
    p.add_argument(
        "--min-df",
        type=int,
        default=0,
        help="terms with more postings get precomputed maxima (default: a sixteenth of the ranges)",
    )


def add_ranges(folder: str | Path, shift: int = rowmax.SHIFT, min_df: int = 0) -> dict:
    """Write the range maxima of the bm25s part ``folder``; returns its updated manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder, kind="bm25")
    if manifest.get("backend", "bm25s") != "bm25s":
        raise IndexFormatError(f"{folder} is a {manifest['backend']} part: ranges are for bm25s")
    if manifest.get("postings", {}).get("layout") in compact.LAYOUTS:
        raise IndexFormatError(
            f"{folder} is a compact part, whose range maxima its build writes: rebuild it with "
            f"`python -m index_build bm25 --index {folder.parent} --format compact`"
        )
    if manifest.get("postings", {}).get("layout") not in termmax.LAYOUTS:
        raise IndexFormatError(f"{folder} has no term maxima: rebuild it with index_build bm25")
    if not 0 <= shift <= 16:
        raise ValueError(f"--shift must be between 0 and 16, not {shift}")
    start = time.perf_counter()
    partial = start_partial_dir(folder)
    try:
        _link_files(folder, partial, skip=(MANIFEST, *rowmax.FILES))
        entry = rowmax.write(partial, manifest["num_docs"], shift, min_df)
        manifest["postings"]["row_ranges"] = entry
        if "files" in manifest:  # keep verify's table whole
            for name in rowmax.FILES:
                manifest["files"].pop(name, None)
            manifest["files"].update(file_table(partial, only=rowmax.FILES))
        write_manifest(partial, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish_dir(partial, folder)
    log.info(
        "%s: row-range maxima of %d frequent terms in %.1f s",
        folder,
        entry["dense_terms"],
        time.perf_counter() - start,
    )
    return manifest


def _link_files(src: Path, dst: Path, skip: tuple[str, ...]) -> None:
    """Hard-link every file of ``src`` (but ``skip``) into ``dst``: the same bytes at no cost,
    and safe because no build writes a published file in place. Copies where the file system
    has no hard links."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif rel.as_posix() not in skip:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def run(args: argparse.Namespace) -> int:
    manifest = add_ranges(Path(args.index) / args.part, args.shift, args.min_df)
    entry = manifest["postings"]["row_ranges"]
    print(
        f"{Path(args.index) / args.part}: ranges of {2 ** entry['shift']} rows, "
        f"{entry['dense_terms']} frequent terms precomputed"
    )
    return 0
