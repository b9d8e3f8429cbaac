"""BM25: the bm25s-format retriever, its numba kernels (``bmp`` pruned, ``exhaustive`` the
reference), the analyzer, the scoring formula and the Lucene (pyserini) search side.
Submodules import numpy / numba / pyserini as they need them."""
