"""The passage store: one format, its reader (``DocStore``) and writer side by side, key tables,
title/url normalisation, and page windows for ``/access``."""

from .docstore import CORPUS_DIR, DocStore

__all__ = ["CORPUS_DIR", "DocStore"]
