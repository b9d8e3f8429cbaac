"""The BM25 formula, in one place: idf per term and the precomputed score of one posting.

Both are bm25s's arithmetic (float64 intermediates, float32 results), so an index we build is
the index ``bm25s`` would build from the same tokens, and ``bm25s.BM25.load`` opens it.

>>> round(float(idf(np.array([1.0]), 10, "lucene")[0]), 4)
1.9924
>>> float(posting_scores(np.array([2]), np.array([10]), np.float32([1.0]), 10.0, 0.9, 0.4)[0])
0.6896551847457886
"""

from __future__ import annotations

import numpy as np

METHODS = ("lucene", "robertson", "atire")


def idf(df: np.ndarray, n_docs: int, method: str = "lucene") -> np.ndarray:
    """float32 idf of each term from its document frequency; 0 for terms in no document."""
    df = np.asarray(df, dtype=np.float64)
    with np.errstate(divide="ignore"):
        if method == "lucene":
            out = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        elif method == "robertson":
            out = np.log(np.maximum((n_docs - df + 0.5) / (df + 0.5), 1.0))
        elif method == "atire":
            out = np.log(n_docs / np.maximum(df, 1))
        else:
            raise ValueError(f"unknown BM25 method {method!r}: use one of {', '.join(METHODS)}")
    return np.where(df > 0, out, 0).astype(np.float32)


def posting_scores(
    tf: np.ndarray,
    doc_len: np.ndarray,
    term_idf: np.ndarray,
    avgdl: float,
    k1: float,
    b: float,
    method: str = "lucene",
    step: int = 1 << 22,
) -> np.ndarray:
    """float32 score of each posting: ``term_idf`` (float32, per posting) times the saturated
    term frequency; float64 temporaries in bounded steps."""
    out = np.empty(len(tf), dtype=np.float32)
    for lo in range(0, len(tf), step):
        sl = slice(lo, lo + step)
        tf64 = np.asarray(tf[sl], dtype=np.float64)
        norm = k1 * ((1 - b) + b * np.asarray(doc_len[sl], dtype=np.float64) / avgdl)
        if method == "atire":
            tfc = (tf64 * (k1 + 1)) / (tf64 + norm)
        else:
            tfc = tf64 / (norm + tf64)
        out[sl] = (np.asarray(term_idf[sl], dtype=np.float64) * tfc).astype(np.float32)
    return out


def score_matrix(
    lengths, docs, terms, tf, vocab_size: int, k1: float, b: float, method: str = "lucene"
):
    """The bm25s score matrix (CSC: one column per term, rows ascending) from (doc, term, tf)
    triples sorted by doc, all in memory: the small-corpus reference of the spilling builder.
    Returns data, indices, indptr, average document length."""
    n_docs = len(lengths)
    avgdl = lengths.mean() if n_docs else np.float64(0.0)
    df = np.bincount(terms, minlength=vocab_size)
    term_idf = idf(df, n_docs, method)
    scores = posting_scores(tf, lengths[docs], term_idf[terms], avgdl, k1, b, method)
    order = np.argsort(terms, kind="stable")
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    return scores[order], docs[order].astype(np.int32, copy=False), indptr, avgdl
