"""A response's head goes out in one write with its body (``lifecycle.HeadWithBody``): one
segment per small answer instead of two, on both of uvicorn's HTTP parsers."""

from __future__ import annotations

import asyncio
import socket

import pytest
from retriever_fakes import FakeRetriever, LiveServer, build_root

from retriever.index import Index
from retriever.server.lifecycle import HeadWithBody, guarded_protocol
from retriever.server.service import RetrievalService, ServiceConfig


class Recorder:
    """A transport stand-in that keeps what was written."""

    def __init__(self, transport=None):
        self.transport = transport
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed if self.transport is None else self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def __getattr__(self, name):
        return getattr(self.transport, name)


def test_head_joins_body_and_nothing_is_lost_or_reordered():
    loop = asyncio.new_event_loop()
    try:
        raw = Recorder()
        t = HeadWithBody(raw, loop)
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert raw.writes == [] and t.get_write_buffer_size() > 0
        t.write(b"{}")
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # goes at once: the client waits for it
        assert raw.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
        big = b"x" * (HeadWithBody.JOIN_UP_TO + 1)
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(big)  # a large body is not copied to join it
        assert raw.writes[-2:] == [b"HTTP/1.1 200 OK\r\n\r\n", big]
        t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        loop.call_soon(loop.stop)
        loop.run_forever()  # a head with no body yet goes out at the end of the loop's turn
        assert raw.writes[-1].endswith(b"chunked\r\n\r\n")
        t.write(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        t.close()  # a close sends the held head first
        assert raw.writes[-1].startswith(b"HTTP/1.1 503") and raw.closed
    finally:
        loop.close()


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_each_answer_is_one_write_on_a_real_server(tmp_path, protocol):
    module = pytest.importorskip(f"uvicorn.protocols.http.{protocol}_impl")
    base = module.H11Protocol if protocol == "h11" else module.HttpToolsProtocol
    root = build_root(tmp_path, bm25=False)
    fake = FakeRetriever(len(Index.open(root).store), "bm25")
    service = RetrievalService(ServiceConfig(index=root, max_wait_ms=1), {"bm25": fake})
    recorders: list[Recorder] = []

    class Recording(guarded_protocol(5.0, 10, base)):
        def connection_made(self, transport) -> None:
            recorders.append(Recorder(transport))
            super().connection_made(recorders[-1])

    try:
        with LiveServer(service, log_config=None, http=Recording) as live:
            port = live.port
            body = b'{"queries": ["hamlet"], "topk": 2}'
            request = (
                b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                for _ in range(3):  # keep-alive: three answers on one connection
                    s.sendall(request)
                    got = b""
                    while b"\r\n\r\n" not in got or not got.endswith(b"}"):
                        got += s.recv(65536)
                    assert got.startswith(b"HTTP/1.1 200")
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                health = s.recv(65536)
                assert health.startswith(b"HTTP/1.1 200")
            writes = [w for w in recorders[0].writes if w]  # h11 ends a message with b''
            assert len(writes) == 4, [w[:40] for w in writes]
            assert all(w.startswith(b"HTTP/1.1 200") and w.endswith(b"}") for w in writes)
    finally:
        service.stop()
