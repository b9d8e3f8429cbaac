"""The server's connections and shutdown: no idle socket, half request or signal can stall it.

uvicorn alone keeps a connection that never sends a byte (or sends half a request) open for
ever, refuses clients once file descriptors run out, and on SIGTERM cancels requests that
outlast its grace time (plain-text 500s, tracebacks). Here:

- ``guarded_protocol``: a request's head and body must arrive within ``request_timeout`` of the
  connection opening (or of its first byte after a response), else the connection is closed;
  past ``max_connections`` open connections a new one is answered ``503`` JSON with
  ``Retry-After`` and closed, and that is logged; an answer the client leaves unread (the
  transport's write buffer over its high-water mark) for ``send_timeout`` seconds is dropped
  with its connection: uvicorn writes a whole body into that buffer at once and a plain close
  waits for it to drain, so a client that never reads would pin the answer (16 MB for a large
  ``/access``) for ever;
- ``Server``: on SIGTERM new requests get 503, queued ones are served for ``drain_seconds``,
  then every request still waiting is answered 503 with ``Retry-After`` and connections still
  sending a request are closed, so the process exits within about ``drain_seconds + 5``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import orjson
import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ..errors import RetrieverError

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0  # after the drain: time to send the 503s before uvicorn cancels tasks
# A connection past the cap waits up to REFUSE_WAIT seconds for its request, then gets its 503
# (a reply sent before the request arrives may be lost to a reset). At most PENDING_REFUSALS
# wait at once: past that (a flood) a connection is closed at once, so the sockets over the cap
# never hold more than that many file descriptors.
REFUSE_WAIT = 0.25
PENDING_REFUSALS = 32


DAY = 86_400.0  # the largest time flag: an hour-long timeout is odd already, a day a mistake


def _opt(default, help_text: str, **bounds):
    return field(default=default, metadata={"help": help_text, **bounds})


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection bounds; every field is a flag of ``python -m retriever.server``."""

    request_timeout: float = _opt(
        20.0,
        "seconds a request's head and body may take to arrive (else the connection closes)",
        max=DAY,
    )
    keep_alive: float = _opt(5.0, "seconds an idle keep-alive connection stays open", max=DAY)
    send_timeout: float = _opt(
        30.0,
        "seconds a client may take to read an answer once the server's send buffer is full "
        "(else the connection is closed and the answer dropped)",
        max=DAY,
    )
    max_connections: int = _opt(
        1000, "open connections; past it a new one gets 503 with Retry-After", min=1
    )
    drain_seconds: float = _opt(
        10.0,
        "on SIGTERM or SIGHUP: seconds queued requests may still finish before they get 503",
        max=DAY,
    )

    def __post_init__(self):
        for name in ("request_timeout", "keep_alive", "send_timeout", "drain_seconds"):
            if not 0 < getattr(self, name) <= DAY:
                raise ValueError(f"{name} must be > 0 and <= {DAY:g} s, got {getattr(self, name)}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")


def fit_to_file_limit(max_connections: int, reserve: int = 64 + PENDING_REFUSALS) -> int:
    """Raise the soft open-file limit toward the hard one so ``max_connections`` sockets fit
    (a refused accept is silent to the client); if they still do not, lower the cap."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(1, soft - reserve)
        log.warning(
            "open-file limit %d: serving at most %d connections (not %d)",
            soft,
            fitted,
            max_connections,
        )
        return fitted
    return max_connections


def _busy_response(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "error": "unavailable",
            "detail": f"the server has {limit} open connections, its limit "
            "(--max-connections): retry after Retry-After seconds",
        }
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _RateLimitedLog:
    """One log line per ``every`` seconds at most, with the count since the last one."""

    def __init__(self, level: int, every: float = 10.0):
        self.level, self.every = level, every
        self.count = self.total = 0
        self.last = -float("inf")

    def note(self, message: str, *args) -> None:
        self.count += 1
        self.total += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            log.log(self.level, message + " (%d since the last report, %d in all)", *args,
                    self.count, self.total)  # fmt: skip
            self.count, self.last = 0, now


class HeadWithBody:
    """The connection's transport, sending a response's head in one write with its body.

    uvicorn writes the head on ``http.response.start`` and the body on ``http.response.body``:
    two ``send`` calls, two TCP segments, two wake-ups of the client for every small answer
    (the profile of ``scripts/bench/server_layers.py`` found those writes among the largest
    costs of a ``/retrieve``). The head is held until the next write, a close, or the end of
    the current event-loop turn, whichever comes first; a large body goes out on its own.
    """

    __slots__ = ("_transport", "_loop", "_head")
    JOIN_UP_TO = 2**16  # a body past this is written on its own rather than copied

    def __init__(self, transport, loop):
        self._transport, self._loop, self._head = transport, loop, None

    def write(self, data) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= self.JOIN_UP_TO:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif data[:9] == b"HTTP/1.1 " and data[9:12] != b"100":  # a response head
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = len(self._head) if self._head is not None else 0
        return self._transport.get_write_buffer_size() + held

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def guarded_protocol(
    request_timeout: float,
    max_connections: int,
    base: type | None = None,
    send_timeout: float = ConnectionLimits.send_timeout,
):
    """uvicorn's HTTP protocol class (``base``, default httptools when installed, else h11) with
    a request timer, a send timer and a cap on open connections."""
    base = base or AutoHTTPProtocol
    busy = _busy_response(max_connections)
    closed_log = _RateLimitedLog(logging.INFO, 60.0)
    unread_log = _RateLimitedLog(logging.WARNING)
    refused_log = _RateLimitedLog(logging.WARNING)
    flood_log = _RateLimitedLog(logging.WARNING)
    pending: set = set()  # connections past the cap waiting for their request

    class GuardedProtocol(base):
        # what the guard did, for /metrics: closed by the timeout, answered 503, closed at once
        outcomes = {
            "request_timeout": closed_log,
            "send_timeout": unread_log,
            "refused_503": refused_log,
            "flood": flood_log,
        }
        _timer: asyncio.TimerHandle | None = None
        _send_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.transport = HeadWithBody(transport, self.loop)
            if len(self.connections) > max_connections:
                self._refused = True
                if len(pending) >= PENDING_REFUSALS:
                    flood_log.note(
                        "connection limit %d reached, %d already waiting for a 503: closed at once",
                        max_connections,
                        len(pending),
                    )
                    transport.abort()
                    return
                refused_log.note(
                    "connection limit %d reached: new connections get 503", max_connections
                )
                pending.add(self)
                self._timer = self.loop.call_later(REFUSE_WAIT, self._refuse)
                return
            self._arm()

        def _refuse(self) -> None:
            pending.discard(self)
            if not self.transport.is_closing():
                self.transport.write(busy)
                self.transport.close()

        def _waiting_for_request(self) -> bool:
            """No request, or one whose head or body has not all arrived."""
            cycle = self.cycle
            return cycle is None or cycle.response_complete or cycle.more_body

        def _arm(self) -> None:
            if self._timer is None:
                self._timer = self.loop.call_later(request_timeout, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if self._waiting_for_request() and not self.transport.is_closing():
                closed_log.note(
                    "closed connections idle or sending a request for over %gs", request_timeout
                )
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._disarm()
                self._refuse()
                return
            super().data_received(data)
            if self.transport.is_closing():
                self._disarm()
            elif self._waiting_for_request():
                self._arm()
            else:  # the whole request is in: the app has it, no timer while it works
                self._disarm()

        # the transport calls these when its write buffer passes the high-water mark and when it
        # falls back under the low one: the client has that long to take what the buffer holds
        def pause_writing(self) -> None:
            super().pause_writing()
            if self._send_timer is None:
                self._send_timer = self.loop.call_later(send_timeout, self._unread)

        def resume_writing(self) -> None:
            self._stop_send_timer()
            super().resume_writing()

        def _stop_send_timer(self) -> None:
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def _unread(self) -> None:
            self._send_timer = None
            unsent = self.transport.get_write_buffer_size()
            if unsent:
                unread_log.note(
                    "closed connections that left an answer unread for %gs (%d bytes here)",
                    send_timeout,
                    unsent,
                )
                self.transport.abort()  # close() would wait for the buffer to drain

        def on_response_complete(self) -> None:
            self._disarm()  # idle again: uvicorn's keep-alive timer takes over
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._stop_send_timer()
            pending.discard(self)
            super().connection_lost(exc)

        def close_if_incomplete(self) -> bool:
            """Close the connection when it is still sending a request (shutdown)."""
            if self.cycle is not None and self.cycle.more_body and not self.cycle.response_complete:
                self.transport.close()
                return True
            return False

    return GuardedProtocol


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket, made before the index loads and handed to uvicorn
    (``Server.run(sockets=[...])``): a port in use then fails at once, not after a load of
    minutes, and nothing can take the port between a check and the bind. Port 0: any free one.
    Address family as uvicorn picks it (IPv6 when ``host`` has a ``:``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":  # a restart may rebind a port whose old connections linger
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)  # Linux lets a second SO_REUSEADDR socket bind; listen() says no
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RetrieverError(
                f"port {port} on {host} is in use ({exc.strerror}: another server, or one "
                "still shutting down): stop it, or pick another --port (0: any free port)"
            ) from None
        raise RetrieverError(
            f"cannot listen on {host} port {port} ({exc.strerror or exc}): give a --host "
            "this machine has (127.0.0.1, 0.0.0.0) and a --port you may use (>= 1024 unless root)"
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


def server_config(app, host: str, port: int, limits: ConnectionLimits, **options) -> uvicorn.Config:
    """A ``uvicorn.Config`` with the guarded protocol, the keep-alive time and the grace time."""
    cap = fit_to_file_limit(limits.max_connections)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits.request_timeout, cap, send_timeout=limits.send_timeout),
        timeout_keep_alive=max(1, round(limits.keep_alive)),
        timeout_graceful_shutdown=round(limits.drain_seconds + GRACE_SECONDS),
        **options,
    )


class Server(uvicorn.Server):
    """``uvicorn.Server`` whose shutdown drains the service, then answers what is left 503."""

    def __init__(self, config: uvicorn.Config, service, drain_seconds: float):
        super().__init__(config)
        self.service = service
        self.drain_seconds = drain_seconds
        outcomes = getattr(config.http, "outcomes", None)
        if outcomes is not None:
            service.metrics.add_gauge(
                "retriever_connections_closed",
                "Connections the server closed: idle or slow past --request-timeout "
                "(request_timeout), an answer left unread past --send-timeout (send_timeout), "
                "past --max-connections (refused_503, flood); since start",
                lambda: {(("reason", k),): float(v.total) for k, v in outcomes.items()},
            )
            service.metrics.add_gauge(
                "retriever_open_connections",
                "Open HTTP connections",
                lambda: {(): float(len(self.server_state.connections))},
            )

    def bound_port(self) -> int | None:
        """The port the server listens on (the chosen one when asked for port 0)."""
        for server in getattr(self, "servers", ()):
            for sock in server.sockets:
                return sock.getsockname()[1]
        return None

    @contextlib.contextmanager
    def capture_signals(self):
        """uvicorn's SIGINT and SIGTERM handling, and SIGHUP the same way (a closed terminal,
        a supervisor's stop): drain, then re-raise it to the handler it had before."""
        with super().capture_signals():
            hup = getattr(signal, "SIGHUP", None)
            if hup is None or threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = signal.signal(hup, self.handle_exit)
            try:
                yield
            finally:
                signal.signal(hup, previous)

    async def shutdown(self, sockets=None) -> None:
        self.service.begin_shutdown()
        loop = asyncio.get_running_loop()
        abort = loop.call_later(self.drain_seconds, self._abort)
        try:
            await super().shutdown(sockets)
        finally:
            abort.cancel()

    def _abort(self) -> None:
        answered = self.service.abort_waiting()
        closed = 0
        for connection in list(self.server_state.connections):
            close = getattr(connection, "close_if_incomplete", None)
            if close is not None and close():
                closed += 1
        log.warning(
            "drain time %gs over: %d waiting requests answered 503, %d connections still "
            "sending a request closed",
            self.drain_seconds,
            answered,
            closed,
        )
