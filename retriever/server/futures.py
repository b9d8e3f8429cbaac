"""Small helpers over ``concurrent.futures.Future``: answer once, and fan several in.

A request's future can be answered by its batch or, at shutdown, by ``abort_waiting``; whichever
comes second must not raise. A hybrid search waits on one future per part and fuses them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ["fan_in", "settle"]


def settle(future: Future, result: Any = None, exc: BaseException | None = None) -> bool:
    """Answer ``future`` unless something answered it already; True when this call did."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:
        return False
    return True


def fan_in(futures: Sequence[Future], combine: Callable[[list], Any]) -> Future:
    """A future of ``combine([f.result() for f in futures])``, answered when the last one is
    done (no thread waits for them); the first failure, or ``combine``'s, becomes its error.

    >>> a, b = Future(), Future()
    >>> total = fan_in([a, b], sum)
    >>> a.set_result(1); b.set_result(2); total.result()
    3
    """
    out: Future = Future()
    if not futures:
        settle(out, *_combined(combine, []))
        return out
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        settle(out, *_combined(combine, futures))

    for f in futures:
        f.add_done_callback(one_done)
    return out


def _combined(combine: Callable[[list], Any], futures: Sequence[Future]) -> tuple:
    try:
        return combine([f.result() for f in futures]), None
    except BaseException as exc:
        return None, exc
