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


class CorruptStoreError(IndexFormatError):
    """A stored row or file does not read back as written (a damaged disk, a file changed by
    hand); ``python -m index_build verify`` names every damaged file and row."""


class BuildError(RetrieverError):
    """A build stage could not finish (a worker died, a shard kept failing); rerun to resume."""


class CorpusInputError(RetrieverError):
    """An input file cannot be read; the message names the file and the position."""

    def __init__(self, path: str, position: str, reason: str):
        self.path = path
        self.position = position
        self.reason = reason
        super().__init__(f"{path}: {position}: {reason}")


class QueueFullError(RetrieverError):
    """The retriever's queue is full; retry after ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailableError(RetrieverError):
    """Not ready yet, shutting down, or the worker died (HTTP 503)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class BatchError(RetrieverError):
    """The batch this request was part of failed; the message names the retriever and cause."""


class AuthError(RetrieverError):
    """The request lacks the server's bearer token or carries a wrong one (HTTP 401)."""


class PageNotFoundError(BadRequestError):
    """A page this corpus does not have (HTTP 404; a tool error in the env)."""


class ClosedError(RetrieverError):
    """A store, retriever or index was used after ``close()``: its files are released; open it
    again (``Index.open(root)``, ``DocStore.open(folder)``) to read from it."""

    def __init__(self, what: object):
        super().__init__(f"{what} is closed: open it again to read from it")
