"""Load-time checks of a bm25s part: a damaged file is refused naming it, never mapped to crash.

The kernels index memory-mapped arrays without bounds checks (numba), so a flipped byte in a
term's column pointers, the vocabulary's ids or the range slots would send them outside the
arrays. Before anything is mapped, every file's size is checked against the manifest's file
table and every ``.npy`` header against the counts the part must have; once mapped, the arrays
the kernels index *by* are checked whole, which costs O(vocabulary), not O(postings)
(BENCHMARKS.md "BM25 load checks": milliseconds at 666k passages). Row ids in the postings
are O(postings): the kernels check each one as they read it and fail the query instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CorruptStoreError
from . import compact, rowmax

_KINDS = {  # the array kinds the kernels are compiled for (numpy dtype.kind)
    **compact.KINDS,
    "data.csc.index.npy": "f",
    "indices.csc.index.npy": "iu",
    "indptr.csc.index.npy": "iu",
    "vocab.hash.npy": "i",
    "vocab.ids.npy": "iu",
    "terms.max.npy": "f",
    "rows.slot.npy": "i",
    "rows.max.npy": "u",
}


def _damaged(path: Path, what: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"{path} {what}: the file is damaged or was changed; run `python -m index_build verify "
        f"--index {path.parent.parent}` and rebuild the {path.parent.name} part"
    )


def check_sizes(folder: Path, manifest: dict, names: tuple[str, ...]) -> None:
    """Every file of the manifest's table that exists has its recorded size, every ``.npy`` in
    ``names`` holds the array its header announces: checked by ``stat``, before any mmap."""
    for name, entry in sorted(manifest.get("files", {}).items()):
        path = folder / name
        if not path.is_file():  # the loader says what a missing file means
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise _damaged(path, f"is {size} bytes, the manifest records {entry['bytes']}")
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(f)
                offset = f.tell()
        except (OSError, ValueError) as exc:
            raise _damaged(path, f"has no readable .npy header ({exc})") from exc
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if os.path.getsize(path) < need:
            raise _damaged(
                path, f"is {os.path.getsize(path)} bytes, its header ({dtype} {shape}) needs {need}"
            )
        if dtype.kind not in _KINDS.get(name, dtype.kind):
            raise _damaged(path, f"holds {dtype}, not the kind of array this part has")


def _shape(path: Path, arr: np.ndarray, want: tuple) -> None:
    if tuple(arr.shape) != tuple(want):
        raise _damaged(path, f"has shape {tuple(arr.shape)}, the part needs {tuple(want)}")


def check_arrays(
    folder: Path,
    manifest: dict,
    data: np.ndarray | None,
    indices: np.ndarray | None,
    indptr: np.ndarray,
    vocab_hash: np.ndarray,
    vocab_ids: np.ndarray,
    tmax: np.ndarray | None,
    ranges: tuple[np.ndarray, np.ndarray] | None,
    shift: int,
) -> None:
    """Shapes against each other and the manifest, and the values the kernels index by:
    column pointers rising within the postings, vocabulary ids a permutation of the terms,
    hashes sorted, range slots numbering the frequent terms, one term maximum a term.
    ``data``/``indices`` None: a compact part (``compact.check`` checks its blocks)."""
    v = len(indptr) - 1
    postings = len(indices) if indices is not None else int(indptr[-1]) if v >= 0 else 0
    f = {name: folder / name for name in _KINDS}
    if (want := manifest.get("vocab_size", v)) != v:
        raise _damaged(f["indptr.csc.index.npy"], f"has {v + 1} entries for {want} terms")
    if (want := manifest.get("num_postings", postings)) != postings:
        name = "indices.csc.index.npy" if indices is not None else "indptr.csc.index.npy"
        raise _damaged(f[name], f"has {postings} entries for {want} postings")
    if data is not None:
        _shape(f["data.csc.index.npy"], data, (postings,))
    _shape(f["vocab.hash.npy"], vocab_hash, (v,))
    _shape(f["vocab.ids.npy"], vocab_ids, (v,))
    ptr = np.asarray(indptr, dtype=np.int64)
    if v < 0 or ptr[0] != 0 or ptr[-1] != postings or np.any(ptr[1:] < ptr[:-1]):
        raise _damaged(f["indptr.csc.index.npy"], f"does not rise from 0 to {postings}")
    if v and (int(vocab_ids.min()) < 0 or int(vocab_ids.max()) >= v):
        raise _damaged(f["vocab.ids.npy"], f"holds term ids outside [0, {v})")
    if v and np.bincount(vocab_ids, minlength=v).max() != 1:
        raise _damaged(f["vocab.ids.npy"], "names a term twice")
    if np.any(vocab_hash[1:] <= vocab_hash[:-1]):
        raise _damaged(f["vocab.hash.npy"], "is not sorted")
    if tmax is not None:
        _shape(f["terms.max.npy"], tmax, (v,))
    if ranges is not None:
        slot, qmax = ranges
        entry = manifest.get("postings", {}).get("row_ranges", {})
        dense = int(entry.get("dense_terms", len(qmax)))
        _shape(f["rows.max.npy"], qmax, (dense, rowmax.ranges(int(manifest["num_docs"]), shift)))
        _shape(f["rows.slot.npy"], slot, (v,))
        numbered = slot[slot >= 0]
        if np.any(slot < -1) or not np.array_equal(numbered, np.arange(dense)):
            raise _damaged(f["rows.slot.npy"], f"does not number the {dense} frequent terms")


def check_compact(
    folder: Path, manifest: dict, c: compact.Compact, sparse: tuple | None = None
) -> None:
    """A compact part's block arrays against each other (O(blocks)): each term's block count,
    each block's words from its widths and length, widths of at most 32 bits, one length a
    document and one idf a term, so no decode reads outside ``postings.words.npy``; the sparse
    range bytes (compact-v2): terms ascending, pointers rising to the bytes, at most one byte a
    posting (the kernel stops at a term's last byte); their gap bytes (compact-v3): pointers
    rising to the bytes, at least one a range byte (the kernel checks each term's ranges)."""
    f = {name: folder / name for name in (*compact.FILES, *compact.SPARSE, *compact.GAPS)}
    v = len(c.indptr) - 1
    df = np.diff(np.asarray(c.indptr, dtype=np.int64))
    bptr = np.asarray(c.bptr, dtype=np.int64)
    _shape(f["postings.bptr.npy"], bptr, (v + 1,))
    if bptr[0] != 0 or np.any(np.diff(bptr) != compact.num_blocks(df)):
        raise _damaged(f["postings.bptr.npy"], "does not count each term's blocks")
    nb = int(bptr[-1])
    _shape(f["postings.first.npy"], c.first, (nb,))
    _shape(f["postings.offset.npy"], c.offset, (nb + 1,))
    _shape(f["postings.bits.npy"], c.bits, (nb, 2))
    if sparse is not None and len(sparse[0]):
        terms, sptr, sq = (np.asarray(a) for a in sparse[:3])
        if terms.min() < 0 or terms.max() >= v or np.any(np.diff(terms) <= 0):
            raise _damaged(f[compact.SPARSE[0]], f"does not list distinct terms of [0, {v})")
        _shape(f[compact.SPARSE[1]], sptr, (len(terms) + 1,))
        count = np.diff(sptr)
        if sptr[0] != 0 or sptr[-1] != len(sq) or np.any(count < 1) or np.any(count > df[terms]):
            raise _damaged(f[compact.SPARSE[1]], "does not point at one byte a range of a term")
        if len(sparse) > 3 and len(sparse[3]) > 1:  # compact-v3: the gap bytes of each term
            gptr, gaps = np.asarray(sparse[3]), sparse[4]
            _shape(f[compact.GAPS[0]], gptr, (len(terms) + 1,))
            if gptr[0] != 0 or gptr[-1] != len(gaps) or np.any(np.diff(gptr) < count):
                raise _damaged(f[compact.GAPS[0]], "does not point at a gap byte a range byte")
    _shape(f["docs.len.npy"], c.lengths, (int(manifest["num_docs"]),))
    _shape(f["terms.idf.npy"], c.idf, (v,))
    bits = np.asarray(c.bits, dtype=np.int64)
    if nb and bits.max() > 32:
        raise _damaged(f["postings.bits.npy"], "holds a width over 32 bits")
    # postings of each block: BLOCK, the term's last one the rest
    n = np.full(nb, compact.BLOCK, dtype=np.int64)
    last = bptr[1:][df > 0] - 1
    n[last] = df[df > 0] - (np.diff(bptr)[df > 0] - 1) * compact.BLOCK
    need = (n * bits[:, 0] + 31) // 32 + (n * bits[:, 1] + 31) // 32
    offset = np.asarray(c.offset, dtype=np.int64)
    if offset[0] != 0 or np.any(np.diff(offset) != need) or offset[-1] + 1 > len(c.words):
        raise _damaged(f["postings.offset.npy"], "does not match the blocks' widths and words")
