"""BM25 retrieval over a memory-mapped bm25s index (``INDEX_ROOT/bm25``), batch-first.

The folder is a plain bm25s save (``data/indices/indptr.csc.index.npy``, ``params.index.json``,
``vocab.index.json``: ``bm25s.BM25.load(folder, mmap=True)`` opens it as is) plus a hashed,
memory-mapped vocabulary (``vocab.hash.npy``, ``vocab.ids.npy``) so that opening an index never
parses the whole vocabulary, and a manifest holding the analyzer used for documents and queries.

Scoring is bm25s's (same precomputed score matrix, same float32 sums in query-term order); the
top-k selection is ours, ties broken by lower row, so results are deterministic and batched
equals one-by-one exactly. Two kernels (``KERNELS``): indexes built with row-range maxima
(``rowmax``; manifest ``postings.row_ranges``) are searched with exact block-max pruning over row
ranges (``bmp``), the default; ``pruning=False``, or an index built before them, scores every
posting (``exhaustive``), the reference ``bmp`` is tested against. A part whose manifest says
``backend: "pyserini"`` is opened by ``retriever.bm25.lucene`` instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson

from ..cores import default_threads
from ..errors import ClosedError, CorruptStoreError, IndexFormatError
from ..manifest import read_manifest, write_json_atomic
from ..protocol import check_search_args
from ..store.docstore import DocStore
from ..store.titles import key_hash
from ..types import Hit
from . import compact, integrity, rowmax, termmax
from .analyzer import Analyzer

log = logging.getLogger(__name__)

# Query terms beyond this many distinct ones are ignored (Lucene's default clause limit too).
MAX_QUERY_TERMS = 1024
BM25S_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy")
_PARALLEL_LOCK = threading.Lock()  # numba's parallel pools must not be entered concurrently


def term_hash(term: str) -> int:
    """The 63-bit hash under which a term is stored in ``vocab.hash.npy``."""
    return key_hash(term)


def save_vocab(folder: str | os.PathLike, vocab: list[str], bm25s_json: bool = True) -> None:
    """Write bm25s's ``vocab.index.json`` (``bm25s_json``: only a part bm25s can open needs it)
    and our hashed vocabulary (``vocab[i]`` is column i).

    Raises when two terms share a 63-bit hash.
    """
    folder = Path(folder)
    if bm25s_json:
        (folder / "vocab.index.json").write_bytes(orjson.dumps({t: i for i, t in enumerate(vocab)}))
    hashes = np.fromiter((term_hash(t) for t in vocab), dtype=np.int64, count=len(vocab))
    order = np.argsort(hashes, kind="stable")
    hashes = hashes[order]
    if len(hashes) > 1 and (dup := np.flatnonzero(hashes[1:] == hashes[:-1])).size:
        a, b = vocab[order[dup[0]]], vocab[order[dup[0] + 1]]
        raise IndexFormatError(f"terms {a!r} and {b!r} share a vocabulary hash; report this bug")
    np.save(folder / "vocab.hash.npy", hashes)
    np.save(folder / "vocab.ids.npy", order.astype(np.int32))


def save_params(folder: str | os.PathLike, params: dict, num_docs: int) -> None:
    """Write bm25s's ``params.index.json`` (so ``bm25s.BM25.load`` opens the folder)."""
    import bm25s

    write_json_atomic(
        Path(folder) / "params.index.json",
        {
            "k1": params["k1"],
            "b": params["b"],
            "delta": 0.5,
            "method": params["method"],
            "idf_method": params["method"],
            "dtype": "float32",
            "int_dtype": "int32",
            "num_docs": int(num_docs),
            "version": bm25s.__version__,
            "backend": "numba",
        },
    )


class BM25Retriever:
    """A loaded bm25s index: ``search(queries, k)`` -> one ``list[Hit]`` per query.

    ``threads``: batches of at least ``2 * threads`` queries are split over that many numba
    threads (default: all cores); smaller batches and single queries run on the calling thread,
    which releases the GIL. Loading compiles (or loads the cached) kernels and runs them once,
    so the first query is as fast as the others. ``pruning``: True (default) prunes with
    ``bmp`` when the index has row-range maxima, else searches every posting; a name of
    ``KERNELS`` asks for that kernel (an error if the index lacks its arrays); False is
    ``"exhaustive"``. Both give the same hits and scores (BENCHMARKS.md "BM25 at scale":
    speed). ``first``: ranges ``bmp`` scores before its sweep.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        manifest: dict | None = None,
        name: str | None = None,
        threads: int | None = None,
        max_query_terms: int = MAX_QUERY_TERMS,
        warmup: bool = True,
        pruning: bool | str = True,
        first: int = 16,
    ):
        start = time.perf_counter()
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else read_manifest(folder, kind="bm25")
        self.name = name or self.folder.name
        if self.manifest.get("backend", "bm25s") != "bm25s":
            raise IndexFormatError(f"{folder} is a {self.manifest['backend']} index, not bm25s")
        postings = self.manifest.get("postings", {})
        self.compact = postings.get("layout") in compact.LAYOUTS
        files = compact.FILES if self.compact else BM25S_FILES
        missing = [f for f in files + ("vocab.hash.npy",) if not (self.folder / f).is_file()]
        if missing:
            raise IndexFormatError(f"{folder} lacks {', '.join(missing)}: rebuild the bm25 index")
        self.analyzer = Analyzer.from_dict(self.manifest["analyzer"])
        if self.compact:
            self._open_compact(postings)
        else:
            self._open_float(postings)
        self.first = max(1, int(first))
        self.method = self._method(pruning)
        self._kernel: Kernel | None = None  # bound on first use: numba loads it then
        self._vocab_hash = np.load(self.folder / "vocab.hash.npy", mmap_mode="r")
        self._vocab_ids = np.load(self.folder / "vocab.ids.npy", mmap_mode="r")
        integrity.check_arrays(
            self.folder,
            self.manifest,
            self._data,
            self._indices,
            self._indptr,
            self._vocab_hash,
            self._vocab_ids,
            self._tmax,
            self._ranges,
            self._shift,
        )
        self.threads = max(1, int(threads or default_threads()))
        self.max_query_terms = int(max_query_terms)
        self._local = threading.local()
        self._pscratch: tuple[np.ndarray, np.ndarray] | None = None
        if warmup:
            self.warmup()
        self.load_seconds = time.perf_counter() - start
        log.info(
            "loaded %s (%d passages, %s search) in %.2f s",
            self.folder,
            self.num_docs,
            self.method,
            self.load_seconds,
        )

    def _open_float(self, postings: dict) -> None:
        """Map the bm25s files (the float layout) and the maxima beside them."""
        folder = self.folder
        mapped = BM25S_FILES + ("vocab.hash.npy", "vocab.ids.npy")
        if postings.get("layout") in termmax.LAYOUTS and (self.folder / termmax.FILE).is_file():
            mapped += (termmax.FILE,)
        if postings.get("row_ranges"):
            mapped += tuple(f for f in rowmax.FILES if (self.folder / f).is_file())
        integrity.check_sizes(self.folder, self.manifest, mapped)  # before anything is mapped
        import bm25s

        # bm25s's own loader, memory-mapped; the vocabulary is read through the hash table.
        try:
            self.bm25s = bm25s.BM25.load(self.folder, mmap=True, load_vocab=False)
        except ValueError as exc:  # params.index.json that does not parse
            raise CorruptStoreError(
                f"{self.folder / 'params.index.json'} does not load ({exc}): rebuild the "
                f"{self.folder.name} part"
            ) from exc
        scores = self.bm25s.scores
        self._data, self._indices, self._indptr = (
            scores["data"],
            scores["indices"],
            scores["indptr"],
        )
        self.num_docs = int(scores["num_docs"])
        if self.num_docs != self.manifest["num_docs"]:
            raise IndexFormatError(
                f"{folder}: params say {self.num_docs} documents, manifest {self.manifest['num_docs']}"
            )
        self._tmax = (
            termmax.load(self.folder) if postings.get("layout") in termmax.LAYOUTS else None
        )
        if postings.get("layout") in termmax.LAYOUTS and self._tmax is None:
            raise IndexFormatError(
                f"{folder} lacks {termmax.FILE}, its term maxima: rebuild the bm25 index"
            )
        ranges = postings.get("row_ranges")
        self._ranges = rowmax.load(self.folder) if ranges else None
        if ranges and (self._ranges is None or self._tmax is None):
            raise IndexFormatError(f"{folder} lacks its row-range maxima: rebuild the bm25 index")
        self._shift = int(ranges["shift"]) if ranges else 0

    def _open_compact(self, postings: dict) -> None:
        """Map the compact layout (``compact``): blocks, lengths, idf, and the maxima."""
        mapped = compact.FILES + ("vocab.hash.npy", "vocab.ids.npy", termmax.FILE, *rowmax.FILES)
        mapped += compact.sparse_files(postings.get("layout"))
        missing = [f for f in mapped if not (self.folder / f).is_file()]
        if missing:
            raise IndexFormatError(
                f"{self.folder} lacks {', '.join(missing)}: rebuild it with `python -m index_build "
                f"bm25 --index {self.folder.parent} --name {self.folder.name} --format compact`"
            )
        integrity.check_sizes(self.folder, self.manifest, mapped)  # before anything is mapped
        self._compact = compact.load(self.folder, self.manifest)
        self._sparse = compact.load_sparse(self.folder, self.manifest)
        self._data, self._indices, self._indptr = None, None, self._compact.indptr
        self.num_docs = int(self.manifest["num_docs"])
        self._tmax = termmax.load(self.folder)
        self._ranges = rowmax.load(self.folder)
        if self._tmax is None or self._ranges is None or not postings.get("row_ranges"):
            raise IndexFormatError(
                f"{self.folder} lacks its term or row-range maxima: rebuild the bm25 index"
            )
        self._shift = int(postings["row_ranges"]["shift"])
        integrity.check_compact(self.folder, self.manifest, self._compact, self._sparse)

    def _method(self, pruning: bool | str) -> str:
        """The name in ``KERNELS`` that ``pruning`` asks for on this index: on a compact part,
        ``bmp`` and ``exhaustive`` name their ``-compact`` kernels."""
        if isinstance(pruning, str) and pruning.endswith(COMPACT) and pruning in KERNELS:
            if not self.compact:
                raise IndexFormatError(
                    f"{self.folder} is not in the compact format that {pruning!r} reads: rebuild "
                    f"it with `python -m index_build bm25 --index {self.folder.parent} --format "
                    f"compact`, or use {pruning.removesuffix(COMPACT)!r}"
                )
            pruning = pruning.removesuffix(COMPACT)
        name = self._float_method(pruning)
        return name + COMPACT if self.compact else name

    def _float_method(self, pruning: bool | str) -> str:
        if pruning is False or pruning == "exhaustive":
            return "exhaustive"
        if pruning is True:
            if self._ranges is not None:
                return "bmp"
            log.warning(
                "%s was built without row-range maxima: searching every posting (slower on "
                "large corpora); add them with `python -m index_build ranges --index ROOT` "
                "(seconds) or rebuild the bm25 part",
                self.folder,
            )
            return "exhaustive"
        if pruning not in KERNELS or pruning.endswith(COMPACT):
            raise ValueError(
                f"pruning={pruning!r} is not a kernel: pass True, False or one of "
                f"{', '.join(map(repr, KERNELS))}"
            )
        if self._ranges is None:
            raise IndexFormatError(
                f"{self.folder} has no row-range maxima for {pruning!r}: add them with "
                f"`python -m index_build ranges --index {self.folder.parent}`"
            )
        return pruning

    @property
    def pruning(self) -> bool:
        """True when searches skip postings (``method`` says how)."""
        return not self.method.startswith("exhaustive")

    @property
    def vocab_size(self) -> int:
        return len(self._vocab_hash)

    def warmup(self) -> None:
        """Compile the kernels for this index's array types and touch them once."""
        qptr = np.array([0, min(1, self.vocab_size)], dtype=np.int64)
        tids = np.zeros(qptr[-1], dtype=np.int32)
        tw = np.ones(qptr[-1], dtype=np.float32)
        self._run(qptr, tids, tw, 1, parallel=False)
        if self.threads > 1:
            self._run(qptr, tids, tw, 1, parallel=True)

    # ---- lifecycle ------------------------------------------------------------------------
    MAPPED = ("_data", "_indices", "_indptr", "_tmax", "_ranges", "_compact", "_sparse")

    def close(self) -> None:
        """Drop every mapped array and what holds them (bm25s's object, the bound kernel): each
        ``np.load(mmap_mode="r")`` keeps a file descriptor until its array goes, so they close
        now rather than when the garbage collector runs. Safe twice; searching afterwards
        raises ``ClosedError``. A search already running keeps its arrays until it returns."""
        self._kernel = self._pscratch = None
        self._local = threading.local()
        if hasattr(self, "bm25s"):
            self.bm25s = None
        for name in self.MAPPED + ("_vocab_hash", "_vocab_ids"):
            setattr(self, name, None)

    def _check_open(self) -> None:
        if self._vocab_hash is None:
            raise ClosedError(f"BM25 retriever {self.name!r} ({self.folder})")

    def __enter__(self) -> BM25Retriever:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- queries -> term ids --------------------------------------------------------------
    def query_terms(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pointers, term ids, weights) of the analyzed queries: known terms only, each once
        (weighted by its count), in first-occurrence order, at most ``max_query_terms``."""
        self._check_open()
        qptr = np.zeros(len(queries) + 1, dtype=np.int64)
        all_terms: list[str] = []
        all_weights: list[int] = []
        for i, q in enumerate(queries):
            counts: dict[str, int] = {}
            for t in self.analyzer.terms(q):
                if t in counts:
                    counts[t] += 1
                elif len(counts) < self.max_query_terms:
                    counts[t] = 1
            all_terms.extend(counts)
            all_weights.extend(counts.values())
            qptr[i + 1] = len(all_terms)
        if not all_terms or self.vocab_size == 0:
            return (
                np.zeros(len(queries) + 1, np.int64),
                np.zeros(0, np.int32),
                np.zeros(0, np.float32),
            )
        hashes = np.fromiter(
            (term_hash(t) for t in all_terms), dtype=np.int64, count=len(all_terms)
        )
        pos = np.minimum(np.searchsorted(self._vocab_hash, hashes), self.vocab_size - 1)
        known = self._vocab_hash[pos] == hashes
        ids = np.asarray(self._vocab_ids[pos], dtype=np.int32)
        cum = np.zeros(len(known) + 1, dtype=np.int64)
        np.cumsum(known, out=cum[1:])
        new_ptr = cum[qptr]
        return new_ptr, ids[known], np.asarray(all_weights, dtype=np.float32)[known]

    # ---- search ---------------------------------------------------------------------------
    def search_arrays(
        self, queries: Sequence[str], k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows[q, k], scores[q, k], counts[q]): the raw form of ``search``; row -1 pads."""
        queries, k = check_search_args(queries, k, self.num_docs)
        qptr, tids, tw = self.query_terms(queries)
        return self._run(qptr, tids, tw, k)

    def _scratch(self, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed per-document scratch: one row per thread; kernels leave it zeroed."""
        if threads == 0:  # serial: one per calling thread, so concurrent callers never share
            local = self._local
            if not hasattr(local, "acc"):
                local.acc = np.zeros(self.num_docs, dtype=np.float32)
                local.seen = np.zeros(self.num_docs, dtype=np.bool_)
            return local.acc, local.seen
        if self._pscratch is None:  # parallel: guarded by _PARALLEL_LOCK
            self._pscratch = (
                np.zeros((threads, self.num_docs), dtype=np.float32),
                np.zeros((threads, self.num_docs), dtype=np.bool_),
            )
        return self._pscratch

    def _run(self, qptr, tids, tw, k, parallel: bool | None = None):
        self._check_open()
        nq = len(qptr) - 1
        if k == 0 or nq == 0:
            return (
                np.zeros((nq, 0), np.int32),
                np.zeros((nq, 0), np.float32),
                np.zeros(nq, np.int32),
            )
        if parallel is None:
            parallel = self.threads > 1 and nq >= 2 * self.threads
        if self._kernel is None:
            self._kernel = KERNELS[self.method](self)
        kern = self._kernel
        args = (qptr, tids, tw, *kern.arrays, k, *kern.options)
        if parallel:
            with _PARALLEL_LOCK:
                out = kern.parallel(*args, *self._scratch(self.threads))
        else:
            out = kern.serial(*args, *self._scratch(0))
        if (out[2] < 0).any():  # a hit count of DAMAGED
            raise CorruptStoreError(
                f"{self.folder / 'indices.csc.index.npy'} holds row ids outside [0, "
                f"{self.num_docs}) in the postings of these queries' terms: the file is damaged; "
                f"run `python -m index_build verify --index {self.folder.parent}` and rebuild "
                f"the {self.folder.name} part"
            )
        return out

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        rows, scores, counts = self.search_arrays(queries, k)
        rows_l, scores_l = rows.tolist(), scores.tolist()
        return [
            [Hit(r, s) for r, s in zip(rows_l[i][:n], scores_l[i][:n])]
            for i, n in enumerate(counts.tolist())
        ]


class Kernel(NamedTuple):
    """A kernel bound to a retriever's arrays. Its drivers take ``(qptr, tids, tw, *arrays, k,
    *options, *scratch)`` and return (rows[q, k], scores[q, k], counts[q]); ``parallel`` splits
    the queries over the rows of 2-d scratch."""

    serial: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
    parallel: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
    arrays: tuple
    options: tuple


def _exhaustive(r: BM25Retriever) -> Kernel:
    """Every posting of the query terms (``exhaustive``): the reference."""
    from . import exhaustive  # numba compiles or loads the kernel on first import

    arrays = (r._data, r._indices, r._indptr)
    return Kernel(exhaustive.search_serial, exhaustive.search_parallel, arrays, ())


def _bmp(r: BM25Retriever) -> Kernel:
    """Exact block-max pruning over row ranges (``bmp``): needs the term and range maxima."""
    from . import bmp

    arrays = (r._data, r._indices, r._indptr, r._tmax, *r._ranges, r._shift)
    return Kernel(bmp.search_serial, bmp.search_parallel, arrays, (r.first, bmp.FALLBACK))


def _exhaustive_compact(r: BM25Retriever) -> Kernel:
    """``exhaustive`` over the compact layout's decoded blocks."""
    from . import compact_kernels as ck

    return Kernel(ck.exhaustive_serial, ck.exhaustive_parallel, tuple(r._compact), ())


def _bmp_compact(r: BM25Retriever) -> Kernel:
    """``bmp`` over the compact layout's decoded blocks."""
    from . import bmp
    from . import compact_kernels as ck

    arrays = (*r._compact, r._tmax, *r._ranges, r._shift, *r._sparse)
    return Kernel(ck.bmp_serial, ck.bmp_parallel, arrays, (r.first, bmp.FALLBACK))


# The kernels ``pruning`` chooses from, by name (``BM25Retriever.method``); same hits and scores.
# The ``-compact`` ones read the compact layout (``compact``); the others the bm25s float one.
KERNELS: dict[str, Callable[[BM25Retriever], Kernel]] = {
    "bmp": _bmp,
    "exhaustive": _exhaustive,
    "bmp-compact": _bmp_compact,
    "exhaustive-compact": _exhaustive_compact,
}
COMPACT = "-compact"


def load(folder: Path, store: DocStore | None = None, **options):
    """``retriever.index`` entry point for kind ``bm25``: dispatch on the manifest's backend."""
    manifest = read_manifest(folder, kind="bm25")
    backend = manifest.get("backend", "bm25s")
    if backend == "pyserini":
        from .lucene import LuceneRetriever

        return LuceneRetriever(folder, store, manifest=manifest, **options)
    if backend != "bm25s":
        raise IndexFormatError(f"{folder} has unknown bm25 backend {backend!r} (bm25s, pyserini)")
    return BM25Retriever(folder, manifest=manifest, **options)
