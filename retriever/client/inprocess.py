"""``InProcessClient``: the ``HTTPClient`` interface over a ``RetrievalService`` in this process."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import QueueFullError
from ..retry import Retry, RetryPolicy, arun
from ..server.service import RetrievalService, ServiceConfig
from .base import ClientBase


class InProcessClient(ClientBase):
    """The same interface as ``HTTPClient``, over a ``RetrievalService`` in this process.

    ``InProcessClient(root)`` (or ``InProcessClient.from_index(root)``) loads the index root
    and owns the service; ``InProcessClient(service)`` borrows a running one.
    """

    def __init__(
        self, service: RetrievalService | str | os.PathLike, *, retries: int = 50, **options
    ):
        if isinstance(service, RetrievalService):
            if options:
                raise TypeError("options only apply when the client builds the service")
            self.service = service
            self._owns = False
            if service.state == "created":
                service.start()
        else:
            built = RetrievalService(ServiceConfig(index=service, **options))
            try:
                built.start()
            except BaseException:
                built.stop()  # what loaded before the failure holds files too
                raise
            self.service = built
            self._owns = True
        # a full queue drains in milliseconds here: short waits, many tries
        self.retry = RetryPolicy(retries=retries, backoff=0.001, max_backoff=0.5)

    @classmethod
    def from_index(cls, root: str | os.PathLike, **options) -> InProcessClient:
        return cls(root, **options)

    def retrieve(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]:
        return self.service.retrieve(queries, topk, retriever)

    async def aretrieve(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]:

        async def attempt(_: int) -> list[list[dict]]:
            try:
                return await self.service.aretrieve(queries, topk, retriever)
            except QueueFullError as exc:  # the sync form blocks for room instead
                raise Retry(exc) from None

        return await arun(self.retry, attempt)

    def access(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        return self.service.access(urls, titles, ids, offset, max_chars)

    async def aaccess(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        return self.access(urls, titles, ids, offset, max_chars)

    def browse(self, requests: Sequence[dict]) -> list[dict]:
        """Browser views over the service's store, as ``HTTPClient.browse`` returns them."""
        return self.service.browse(requests)

    async def abrowse(self, requests: Sequence[dict]) -> list[dict]:
        return self.browse(requests)

    def health(self) -> dict:
        return self.service.health()

    def info(self) -> dict:
        return self.service.info()

    def close(self) -> None:
        if self._owns:
            self.service.stop()
