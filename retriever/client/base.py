"""``ClientBase``: the ``with``/``async with`` lifecycle every client shares."""

from __future__ import annotations

from typing import Self


class ClientBase:
    """``with`` and ``async with`` over ``close``/``aclose``, defined once for the HTTP and the
    in-process client; ``aclose`` defaults to ``close`` for a client with nothing async to
    shut."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
