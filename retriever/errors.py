"""One small exception hierarchy for the retriever package.

Messages say what was wrong and what to do about it. ``BadRequestError`` subclasses
``ValueError`` so library callers can catch bad input the usual way; the server maps it to 422.
"""

from __future__ import annotations


class RetrieverError(Exception):
    """Base class of every error this package raises on purpose."""


class BadRequestError(RetrieverError, ValueError):
    """The caller's input is invalid (empty query list, k out of range, unknown retriever)."""


class IndexFormatError(RetrieverError):
    """An index folder is missing, incomplete, of the wrong kind or of an unknown version."""


class ManifestMismatchError(IndexFormatError):
    """Two parts of an index disagree (other corpus, other model); the message names both."""


class CorpusInputError(RetrieverError):
    """An input file cannot be read; the message names the file and the position."""

    def __init__(self, path: str, position: str, reason: str):
        self.path = path
        self.position = position
        self.reason = reason
        super().__init__(f"{path}: {position}: {reason}")
