"""Memory-mapped local-corpus retrieval: passage store, BM25 and dense search, server, client.

Heavy dependencies (torch, faiss, bm25s, transformers) are imported only by the modules that
need them, so ``import retriever`` stays cheap.
"""

__version__ = "0.1.0"

import logging as _logging

# faiss's loader logs at INFO each optimised build it could not load; that is not news to users
_logging.getLogger("faiss.loader").setLevel(_logging.WARNING)
