"""``python -m index_build ranges --index ROOT``: add row-range maxima to a built BM25 part.

BM25 parts built before row-range maxima are searched exhaustively (and say so when loaded);
this writes the two files the pruned search needs (``retriever.bm25.rowmax``) beside the bm25s
files in seconds, records them in the part's manifest and file table, and leaves everything
else untouched. Parts built by ``python -m index_build bm25`` already have them.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from retriever.bm25 import blockmax, rowmax
from retriever.errors import IndexFormatError
from retriever.files import file_table
from retriever.manifest import read_manifest, write_manifest

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
    if manifest.get("postings", {}).get("layout") != blockmax.LAYOUT:
        raise IndexFormatError(f"{folder} has no block maxima: rebuild it with index_build bm25")
    if not 0 <= shift <= 16:
        raise ValueError(f"--shift must be between 0 and 16, not {shift}")
    start = time.perf_counter()
    entry = rowmax.write(folder, manifest["num_docs"], shift, min_df)
    manifest["postings"]["row_ranges"] = entry
    if "files" in manifest:  # keep verify's table whole
        manifest["files"].update(file_table(folder, only=rowmax.FILES))
    write_manifest(folder, manifest)
    log.info(
        "%s: row-range maxima of %d frequent terms in %.1f s",
        folder,
        entry["dense_terms"],
        time.perf_counter() - start,
    )
    return manifest


def run(args: argparse.Namespace) -> int:
    manifest = add_ranges(Path(args.index) / args.part, args.shift, args.min_df)
    entry = manifest["postings"]["row_ranges"]
    print(
        f"{Path(args.index) / args.part}: ranges of {2 ** entry['shift']} rows, "
        f"{entry['dense_terms']} frequent terms precomputed"
    )
    return 0
