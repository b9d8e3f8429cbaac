"""``--workers N``: N server processes answering on the one listening socket.

One process answers at most about as many small requests a second as one core parses and
formats (``scripts/bench/server_layers.py``): the event loop, not the index, is the limit. The
parent binds the port, then forks N workers before anything loads; each opens the index itself,
memory-mapped, so the corpus and the postings sit once in the page cache for all of them, and
each has its own event loop, queue and batching worker. The kernel hands each new connection to
whichever worker accepts it first.

The parent only supervises: it writes the one address file once every worker is ready, forwards
SIGTERM, SIGINT and SIGHUP to them as SIGTERM (each drains as a single server does), and when one
worker exits with an error it stops the others and exits with that code, so a supervisor
restarts the whole server. Workers sit in their own process group (a terminal's Ctrl-C reaches
the parent alone, which forwards it once) and stop when the parent is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FORWARDED = tuple(
    s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None
)
# how often a worker checks that its parent is alive; a second is quick enough for a restart
ORPHAN_CHECK_SECONDS = 1.0

# (worker number, a function to call once serving) -> exit code; runs in the forked child
Child = Callable[[int, Callable[[], None]], int]


def watch_parent(stop: Callable[[], None], every: float = ORPHAN_CHECK_SECONDS) -> None:
    """Call ``stop`` once this process's parent has gone (a killed supervisor leaves no server
    holding the port)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        log.warning("the parent process %d is gone: stopping", parent)
        stop()

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def run_workers(
    n: int, child: Child, on_all_ready: Callable[[], None] | None = None, poll: float = 0.1
) -> int:
    """Fork ``n`` workers running ``child(i, ready)``; 0 when all exit 0, else the first error.

    ``on_all_ready`` runs in the parent once every worker has called ``ready``.
    """
    if os.name != "posix":  # pragma: no cover - fork is POSIX only
        raise OSError("--workers needs fork (Linux or macOS)")
    read_end, write_end = os.pipe()
    pids: dict[int, int] = {}  # pid -> worker number
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_end)
            _worker(i, child, write_end)
        pids[pid] = i
    os.close(write_end)
    stopping: list[int] = []

    def forward(signum, _frame) -> None:
        if not stopping:
            log.info("signal %d: stopping %d workers", signum, len(pids))
        stopping.append(signum)
        _signal_all(pids)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    code, ready, announced = 0, 0, False
    try:
        while pids:
            readable, _, _ = select.select([read_end], [], [], poll)
            if readable:
                got = os.read(read_end, 64)
                ready += len(got)
            while pids:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                number = pids.pop(pid)
                exit_code = os.waitstatus_to_exitcode(status)
                if exit_code != 0 and code == 0:
                    code = exit_code if exit_code > 0 else 1
                    if not stopping:
                        log.error(
                            "worker %d (pid %d) exited with %d: stopping the others",
                            number,
                            pid,
                            exit_code,
                        )
                        stopping.append(0)
                        _signal_all(pids)
            if not announced and ready >= n and not stopping:
                announced = True
                log.info("%d workers ready", n)
                if on_all_ready is not None:
                    on_all_ready()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(read_end)
        if pids:  # the parent itself failed: take the workers down with it
            _signal_all(pids, signal.SIGKILL)
    return code


def _signal_all(pids: dict[int, int], signum: int = signal.SIGTERM) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _worker(number: int, child: Child, ready_fd: int) -> None:
    """The forked process: never returns (its exit code is ``child``'s)."""
    code = 1
    try:
        os.setpgid(0, 0)  # Ctrl-C goes to the parent, which forwards it once
        for s in FORWARDED:
            signal.signal(s, signal.SIG_DFL)

        def ready() -> None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"r")

        code = child(number, ready)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("worker %d failed", number)
    finally:
        logging.shutdown()
        os._exit(code)
