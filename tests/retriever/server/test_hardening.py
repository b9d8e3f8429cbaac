"""Issue 13, the server: no single request, connection or signal can stall, crash or bloat it.

Every test is bounded in time and count and talks only to 127.0.0.1: oversized /access and
queries get a 422 naming the limit, page reads run off the event loop, the result cache is
bounded in bytes, idle and half-sent connections are closed, past the connection cap a client
gets 503 JSON, SIGTERM answers every request with JSON, and a failed load exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import REPO
from fastapi.testclient import TestClient
from retriever_fakes import FakeRetriever, LiveServer, build_root, free_port

from retriever.index import Index
from retriever.server.app import create_app
from retriever.server.cache import LRUCache
from retriever.server.lifecycle import ConnectionLimits, Server, guarded_protocol, server_config
from retriever.server.service import RetrievalService, ServiceConfig
from retriever.store.access import access_pages


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("hard"), bm25=False)


@pytest.fixture(scope="module")
def bm25_root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("hard-bm25"), bm25=True)


def client_for(root, **config):
    n = len(Index.open(root).store)
    service = RetrievalService(
        ServiceConfig(index=root, max_wait_ms=1, **config), {"bm25": FakeRetriever(n, "bm25")}
    )
    return service, TestClient(create_app(service, background=False))


def some_titles(root, n: int) -> list[str]:
    store = Index.open(root).store
    return [store.get(r).title for r in range(n)]


# ---- 1. /access: a bound on characters, reads off the event loop --------------------------
def test_access_over_the_character_limit_is_422_naming_it(root):
    titles = some_titles(root, 40)
    service, client = client_for(root, max_access_chars=2000)
    with client:
        small = client.post("/access", json={"titles": titles[:3], "max_chars": 100})
        big = client.post("/access", json={"titles": titles * 250, "max_chars": 100})
    assert small.status_code == 200
    # the same pages as the library reads them (reference)
    assert small.json()["result"] == access_pages(
        Index.open(root).store, (), titles[:3], (), 0, 100
    )
    assert big.status_code == 422, big.text
    detail = big.json()["detail"]
    assert "2000 characters" in detail and "--max-access-chars" in detail


def test_access_reads_pages_off_the_event_loop(root):
    service, client = client_for(root)
    seen = []
    plain = service.access

    def access(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("worker thread")
        return plain(*args, **kwargs)

    service.access = access
    with client:
        r = client.post("/access", json={"titles": some_titles(root, 2)})
    assert r.status_code == 200 and seen == ["worker thread"]


def test_large_bodies_are_decoded_off_the_event_loop(root, monkeypatch):
    from retriever import wire

    seen = []
    plain = wire.decode_body

    def decode_body(body, ctype):
        try:
            asyncio.get_running_loop()
            seen.append((len(body) > 2**18, "event loop"))
        except RuntimeError:
            seen.append((len(body) > 2**18, "worker thread"))
        return plain(body, ctype)

    monkeypatch.setattr(wire, "decode_body", decode_body)
    _, client = client_for(root)
    with client:
        big = client.post("/retrieve", json={"queries": ["a long enough query"] * 20_000})
        small = client.post("/retrieve", json={"queries": ["hamlet"]})
    assert big.status_code == 422 and "20000 queries" in big.json()["detail"]
    assert small.status_code == 200
    assert seen == [(True, "worker thread"), (False, "event loop")]


# ---- 2. queries: a length limit, a cut before tokenizing, a cache bounded in bytes -------
def test_query_over_the_length_limit_is_422_naming_it(root):
    _, client = client_for(root, max_query_chars=50)
    with client:
        ok = client.post("/retrieve", json={"queries": ["x" * 50]})
        long = client.post("/retrieve", json={"queries": ["fine", "x" * 51]})
    assert ok.status_code == 200
    assert long.status_code == 422
    detail = long.json()["detail"]
    assert "query 1 has 51 characters" in detail and "limit is 50" in detail


def test_cache_is_bounded_in_bytes_and_keeps_answers(root):
    n = len(Index.open(root).store)
    cached = RetrievalService(
        ServiceConfig(index=root, cache_bytes=300_000), {"bm25": FakeRetriever(n, "bm25")}
    ).start()
    plain = RetrievalService(
        ServiceConfig(index=root, cache_size=0), {"bm25": FakeRetriever(n, "bm25")}
    ).start()
    try:
        queries = [f"{i} " + "long query " * 900 for i in range(120)]  # ~10 KB each
        for q in queries:
            assert cached.search([q], 3) == plain.search([q], 3)
        assert cached.cache.nbytes <= 300_000
        assert 0 < len(cached.cache) < 40  # 120 entries of 10 KB do not fit
        assert cached.search(queries[-1:], 3) == plain.search(queries[-1:], 3)
        assert cached.cache.hits == 1
    finally:
        cached.stop()
        plain.stop()


def test_lru_cache_evicts_oldest_by_bytes():
    c = LRUCache(100, max_bytes=1000)
    for i in range(10):
        c.put(("r", f"{i:03d}" + "x" * 200, 3), ())
    assert 0 < len(c) < 10 and c.nbytes <= 1000
    assert c.get(("r", "009" + "x" * 200, 3)) == ()  # the newest stays
    assert c.get(("r", "000" + "x" * 200, 3)) is None  # the oldest went
    c.put(("r", "y" * 5000, 3), ())  # bigger than the whole cache: not kept, nothing evicted
    assert c.get(("r", "y" * 5000, 3)) is None and len(c) > 0
    c.clear()
    assert c.nbytes == 0 and c.stats()["bytes"] == 0


def test_encoder_cuts_a_huge_query_before_tokenizing():
    from retriever.dense import encoders

    enc = encoders.load_encoder(encoders.resolve_config(str(encoders.packaged_model_path())))
    lengths = []
    tokenizer = enc.tokenizer

    def spy(texts, **kwargs):
        lengths.extend(len(t) for t in texts)
        return tokenizer(texts, **kwargs)

    enc.tokenizer = spy
    huge = "the history of wikipedia " * 400_000  # 10 MB
    ids = enc.tokenize([huge, "who wrote hamlet"])
    limit = enc.config.max_length * encoders.MAX_CHARS_PER_TOKEN
    assert max(lengths) <= limit
    # the same tokens as tokenizing the whole string (reference), cut to max_length
    whole = tokenizer([huge[: limit * 4]], truncation=True, max_length=enc.config.max_length)
    assert ids[0] == whole["input_ids"][0] and len(ids[0]) == enc.config.max_length
    assert ids[1] == tokenizer(["who wrote hamlet"])["input_ids"][0]


# ---- 3. connections: idle and half requests closed, a cap answered 503 JSON ---------------
class Subprocess:
    """``python -m retriever.server`` on a free port, its log in a file."""

    def __init__(self, root, tmp_path, *flags: str, preexec_fn=None, port=None):
        self.port = free_port() if port is None else port
        self.log_path = tmp_path / "server.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "retriever.server", "--index", str(root),
               "--port", str(self.port), "--no-ui", *flags]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self.log, stderr=self.log, preexec_fn=preexec_fn
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready: {self.text()}")

    def text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        t = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code, time.monotonic() - t


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.slow
def test_idle_and_half_requests_are_closed_and_the_cap_answers_503_json(bm25_root, tmp_path):
    server = Subprocess(bm25_root, tmp_path, "--request-timeout", "2", "--max-connections", "6")
    try:
        server.wait_ready()
        idle = socket.create_connection(("127.0.0.1", server.port))
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{")
        head_only = socket.create_connection(("127.0.0.1", server.port))
        head_only.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for s in (idle, half, head_only):
            assert closed_within(s, 6), "a connection stayed open past the request timeout"
            s.close()

        # the cap: six open connections, the seventh is answered 503 JSON and closed
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
        r = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "6 open connections" in r.json()["detail"]
        for s in held:
            s.close()
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5).status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
        closed = {
            line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("retriever_connections_closed{")
        }
        assert closed["request_timeout"] >= 3 and closed["refused_503"] == 1, closed
        # a keep-alive client that keeps sending is never cut
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
            for _ in range(4):
                assert c.post("/retrieve", json={"queries": ["hamlet"]}).status_code == 200
                time.sleep(0.4)
        code, seconds = server.stop()
        assert code == 0 and seconds < 20
        log = server.text()
        assert "connection limit 6 reached" in log
        assert "Traceback" not in log
    finally:
        if server.proc.poll() is None:
            server.stop()


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_the_guard_works_on_both_http_parsers(root, protocol, caplog):
    """uvicorn uses httptools when installed, else h11: the guard must hold on either."""
    module = pytest.importorskip(f"uvicorn.protocols.http.{protocol}_impl")
    base = module.H11Protocol if protocol == "h11" else module.HttpToolsProtocol
    service, _ = client_for(root)
    caplog.set_level(logging.INFO)
    try:
        with LiveServer(service, log_config=None, http=guarded_protocol(1.0, 4, base)) as live:
            url, port = live.url, live.port
            half = socket.create_connection(("127.0.0.1", port))
            half.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
            idle = socket.create_connection(("127.0.0.1", port))
            for s in (half, idle):
                assert closed_within(s, 5)
                s.close()
            held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
            r = httpx.get(f"{url}/health", timeout=5)
            assert r.status_code == 503 and r.json()["error"] == "unavailable"
            for s in held:
                s.close()
            time.sleep(0.3)
            r = httpx.post(f"{url}/retrieve", json={"queries": ["hamlet"]}, timeout=5)
            assert r.status_code == 200
            assert "connection limit 4 reached" in caplog.text
            assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text
    finally:
        service.stop()


@pytest.mark.slow
def test_a_low_file_limit_lowers_the_cap_so_new_clients_get_503_not_a_hang(bm25_root, tmp_path):
    """The issue's lock-out: with 1,024 files, 1,100 idle sockets kept new clients out."""
    resource = pytest.importorskip("resource")

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    server = Subprocess(bm25_root, tmp_path, "--request-timeout", "4", preexec_fn=low_limit)
    held: list[socket.socket] = []
    try:
        server.wait_ready()
        assert "open-file limit 200: serving at most 104 connections (not 1000)" in server.text()
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(250)]
        time.sleep(1)  # the flood past the cap is closed (at most 32 wait for a 503 at once)
        r = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
        assert r.status_code == 503 and "104 open connections" in r.json()["detail"]
        ended = 0  # closed at once, or answered 503 and closed
        for s in held:
            s.settimeout(0.01)
            try:
                data = s.recv(64)
                ended += data == b"" or data.startswith(b"HTTP/1.1 503")
            except TimeoutError:
                pass
            except ConnectionResetError:
                ended += 1
        assert ended == 250 - 104
        time.sleep(5)  # the idle ones time out
        r = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
        assert r.status_code == 200
        code, _ = server.stop()
        assert code == 0 and "Traceback" not in server.text()
    finally:
        for s in held:
            s.close()
        if server.proc.poll() is None:
            server.stop()


# ---- 4. SIGTERM while requests outlast the drain time ------------------------------------
@pytest.mark.slow
def test_shutdown_answers_every_request_with_json_in_bounded_time(root, caplog):
    n = len(Index.open(root).store)
    slow = FakeRetriever(n, "bm25", delay=0.5)
    service = RetrievalService(
        ServiceConfig(index=root, max_batch=1, max_wait_ms=0), {"bm25": slow}
    )
    service.start()
    port = free_port()
    limits = ConnectionLimits(drain_seconds=1.0)
    config = server_config(
        create_app(service), "127.0.0.1", port, limits, log_config=None, access_log=False
    )
    server = Server(config, service, limits.drain_seconds)
    thread = threading.Thread(target=server.run, daemon=True)
    caplog.set_level(logging.INFO)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)

    def ask(i: int):
        try:
            r = httpx.post(
                f"http://127.0.0.1:{port}/retrieve", json={"queries": [f"q{i}"]}, timeout=30
            )
        except httpx.HTTPError as exc:
            return "io", repr(exc), None
        return r.status_code, r.json(), r.headers.get("retry-after")

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(ask, i) for i in range(12)]  # 6 s of work, 1 s of drain
        deadline = time.monotonic() + 20  # all twelve in: one searching, the rest queued
        while service.health()["retrievers"]["bm25"]["queue_depth"] < 10:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn does on SIGTERM
        thread.join(20)
        stopped = time.monotonic() - t
        answers = [f.result() for f in futures]
    assert not thread.is_alive() and stopped < limits.drain_seconds + 6
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {200, 503}, answers
    assert 200 in statuses and 503 in statuses
    for status, body, retry in answers:
        if status == 503:
            assert body["error"] == "unavailable" and retry is not None
        else:
            assert len(body["result"]) == 1
    logs = caplog.text
    assert "Traceback" not in logs and "Exception in ASGI" not in logs
    assert "Cancel" not in logs  # uvicorn never had to cancel a request
    service.stop()


@pytest.mark.slow
def test_sigterm_exits_zero_promptly_with_a_half_sent_request(bm25_root, tmp_path):
    server = Subprocess(bm25_root, tmp_path, "--drain-seconds", "1")
    try:
        server.wait_ready()
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{")
        time.sleep(0.3)
        code, seconds = server.stop()
        half.close()
        assert code == 0 and seconds < 15, server.text()
        assert "Traceback" not in server.text()
    finally:
        if server.proc.poll() is None:
            server.stop()


# ---- 5. an index that fails to load -------------------------------------------------------
def test_a_failed_load_exits_non_zero_with_the_error_line(bm25_root, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bm25_root, broken)
    for f in (broken / "bm25").glob("*.npy"):
        f.write_bytes(b"not an array")
    server = Subprocess(broken, tmp_path, "--no-warmup")
    try:
        code = server.proc.wait(90)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if server.proc.poll() is None:
            server.stop()
        server.log.close()
    text = server.log_path.read_text(errors="replace")
    assert code not in (None, 0), text
    assert "error: the index failed to load" in text
    assert "Traceback" not in text


def test_limits_refuse_bad_values(root):
    for name in ("max_query_chars", "max_access_chars"):
        with pytest.raises(ValueError, match=name):
            ServiceConfig(index=root, **{name: 0})
    with pytest.raises(ValueError, match="cache_bytes"):
        ServiceConfig(index=root, cache_bytes=-1)
    with pytest.raises(ValueError, match="request_timeout"):
        ConnectionLimits(request_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        ConnectionLimits(max_connections=0)


# ---- issue 21: answers left unread, Host names, address files, flags -----------------------
class Serving:
    """``lifecycle.Server`` (the guarded protocol) over ``service`` in a thread."""

    def __init__(self, service, limits: ConnectionLimits, host: str = "127.0.0.1"):
        self.port = free_port()
        config = server_config(
            create_app(service, bind_host=host), host, self.port, limits,
            log_config=None, access_log=False,
        )  # fmt: skip
        self.server = Server(config, service, limits.drain_seconds)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Serving:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def test_an_answer_left_unread_is_dropped_with_its_connection(root, caplog):
    """Item 8: a client that never reads its large /access answer held it for ever (+16 MB
    per client); now the connection is closed after --send-timeout and the answer freed,
    while a client that reads gets the whole answer under the same timeout."""
    import orjson

    service, _ = client_for(root)
    service.start()
    caplog.set_level(logging.INFO)
    body = orjson.dumps({"titles": some_titles(root, 40) * 250})  # 10,000 pages
    try:
        with Serving(service, ConnectionLimits(send_timeout=1.0)) as serving:
            port, state = serving.port, serving.server.server_state
            full = httpx.post(f"http://127.0.0.1:{port}/access", content=body, timeout=60)
            assert full.status_code == 200 and len(full.json()["result"]) == 10_000
            assert len(full.content) > 2_000_000  # far more than the sockets' buffers hold

            deadline = time.monotonic() + 30
            while state.connections and time.monotonic() < deadline:
                time.sleep(0.01)  # the full answer's connection gone: the next one is ours
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(
                b"POST /access HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            deadline = time.monotonic() + 30
            while not state.connections and time.monotonic() < deadline:
                time.sleep(0.01)  # accepted: else the wait below ends before it begins (a
                # loaded machine accepted late, the client then read the whole answer)
            assert state.connections, "the stalled connection was never accepted"
            while len(state.connections) and time.monotonic() < deadline:
                time.sleep(0.05)  # the answer is built, then 1 s unread
            assert not state.connections, "the connection that never read is still open"
            got = b""  # what the kernel had taken before the close: never the whole answer
            stalled.settimeout(5)
            try:
                while chunk := stalled.recv(1 << 20):
                    got += chunk
            except ConnectionResetError:
                pass
            stalled.close()
            assert len(got) < len(full.content)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert 'retriever_connections_closed{reason="send_timeout"} 1' in metrics
    finally:
        service.stop()
    assert "left an answer unread for 1s" in caplog.text
    assert "Traceback" not in caplog.text


def host_client(root, bind_host, host, **config):
    service, _ = client_for(root, **config)
    app = create_app(service, background=False, bind_host=bind_host)
    return TestClient(app, base_url=f"http://{host}")


@pytest.mark.parametrize(
    "bind, host, allowed, ok",
    [
        ("127.0.0.1", "127.0.0.1:8000", None, True),
        ("127.0.0.1", "localhost:8000", None, True),
        ("127.0.0.1", "LOCALHOST.", None, True),
        ("127.0.0.1", "[::1]:8000", None, True),
        ("127.0.0.1", "127.0.0.1:9999", None, True),  # a tunnel or a mapped port: any port
        ("127.0.0.1", "rebind.attacker.example:8000", None, False),
        ("127.0.0.1", "rebind.attacker.example", ("rebind.attacker.example",), True),
        ("127.0.0.1", "a.search.example", ("*.search.example",), True),
        ("127.0.0.1", "search.example.evil", ("*.search.example",), False),
        ("127.0.0.1", "rebind.attacker.example", ("*",), True),
        ("::1", "[::1]:8000", None, True),
        ("10.0.0.7", "10.0.0.7:8000", None, True),
        ("10.0.0.7", "node7", None, False),
        ("0.0.0.0", "node7.cluster.local", None, True),  # wildcard bind: documented, no check
        ("0.0.0.0", "node7.cluster.local", ("node7",), False),
        ("0.0.0.0", "node7", ("node7",), True),
        (None, "testserver", None, True),  # an app not bound by us (tests, embedding)
    ],
)
def test_host_header_must_name_this_server(root, bind, host, allowed, ok):
    """Item 14: a DNS-rebinding page reaches a loopback server under its own name; only the
    bound address, localhost, IP literals and --allowed-hosts are answered."""
    with host_client(root, bind, host, allowed_hosts=allowed) as client:
        info, ui = client.get("/info"), client.get("/health")
    if ok:
        assert info.status_code == 200 and ui.status_code == 200
    else:
        assert info.status_code == ui.status_code == 421
        body = info.json()
        assert body["error"] == "misdirected_request"
        assert "--allowed-hosts" in body["detail"] and host.split(":")[0] in body["detail"]


def test_address_file_is_not_written_through_a_planted_symlink(tmp_path):
    """Item 15: a link at the temporary name made the server overwrite the link's target."""
    from retriever.client.addresses import address_file, read_addresses, write_address

    folder, victim = tmp_path / "addr", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_text("keep me")
    final = address_file(folder, "127.0.0.1", 8123)
    (folder / (final.name + ".tmp")).symlink_to(victim)
    path = write_address(folder, "127.0.0.1", 8123)
    assert victim.read_text() == "keep me"
    assert path == final and not path.is_symlink() and path.read_text() == "127.0.0.1:8123"
    final.unlink()  # a link planted at the final name is replaced, not followed
    final.symlink_to(victim)
    write_address(folder, "127.0.0.1", 8123)
    assert victim.read_text() == "keep me" and not final.is_symlink()
    assert read_addresses(folder) == ["http://127.0.0.1:8123"]


def test_discover_skips_and_logs_bad_address_files(tmp_path, caplog):
    """Item 15: one bad file (not UTF-8, a stray line, a FIFO) broke discovery of every server."""
    from retriever.client import HTTPClient
    from retriever.client.addresses import read_addresses, write_address

    write_address(tmp_path, "127.0.0.1", 8001)
    write_address(tmp_path, "10.0.0.2", 8002)
    (tmp_path / "Host10.0.0.3_IP8003.txt").write_bytes(b"\xff\xfe10.0.0.3:8003")
    (tmp_path / "Host10.0.0.4_IP8004.txt").write_text("10.0.0.4:8004\nnot an address at all\n")
    (tmp_path / "Host10.0.0.5_IP8005.txt").write_text("10.0.0.5:99999")
    os.mkfifo(tmp_path / "Host10.0.0.6_IP8006.txt")  # opening it to read would block for ever
    (tmp_path / "Host10.0.0.7_IP8007.txt").mkdir()
    caplog.set_level(logging.WARNING)
    with ThreadPoolExecutor(1) as pool:
        found = pool.submit(read_addresses, tmp_path).result(timeout=10)
    assert found == ["http://10.0.0.2:8002", "http://10.0.0.4:8004", "http://127.0.0.1:8001"]
    for name in ("Host10.0.0.3_IP8003.txt", "Host10.0.0.5_IP8005.txt", "Host10.0.0.6_IP8006.txt"):
        assert name in caplog.text
    assert "'not an address at all'" in caplog.text
    with HTTPClient.discover(tmp_path) as client:
        assert client.urls == found


def test_an_unusable_address_folder_fails_at_start(bm25_root, tmp_path):
    """Item 15: the write failed in a thread (traceback) and the server served unadvertised."""
    (tmp_path / "a-file").write_text("")
    server = Subprocess(bm25_root, tmp_path, "--save-address-to", str(tmp_path / "a-file" / "d"))
    try:
        code = server.proc.wait(60)
    finally:
        if server.proc.poll() is None:
            server.stop()
        server.log.close()
    text = server.text()
    assert code == 2, text
    assert "error: --save-address-to" in text and "a-file" in text and "Traceback" not in text


@pytest.mark.slow
def test_port_0_is_advertised_as_bound_and_sighup_drains_and_removes_the_file(bm25_root, tmp_path):
    """Item 15: SIGHUP killed the server at once and left its address file; port 0 (any free
    port) advertised 0."""
    from retriever.client.addresses import read_addresses

    folder = tmp_path / "addresses"
    server = Subprocess(bm25_root, tmp_path, "--save-address-to", str(folder), port=0)
    try:
        deadline = time.monotonic() + 90
        while not (folder.is_dir() and list(folder.glob("Host*.txt"))):
            assert server.proc.poll() is None and time.monotonic() < deadline, server.text()
            time.sleep(0.1)
        (url,) = read_addresses(folder)
        assert not url.endswith(":0")
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        server.proc.send_signal(signal.SIGHUP)
        code = server.proc.wait(30)
        assert code == 0, server.text()
        assert not list(folder.glob("Host*.txt"))
        assert "Traceback" not in server.text()
    finally:
        if server.proc.poll() is None:
            server.stop()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_refused(bm25_root, tmp_path, port):
    """Item 15: --port 70000 bound another port (70000 - 65536) but advertised 70000."""
    server = Subprocess(bm25_root, tmp_path, port=port)
    try:
        code = server.proc.wait(60)
    finally:
        if server.proc.poll() is None:
            server.stop()
        server.log.close()
    text = server.text()
    assert code == 2 and f"error: --port {port}" in text and "65535" in text, text


def _numeric_flag_configs():
    from env.evaluate import EvalConfig
    from env.policy import SamplingConfig
    from env.types import EnvConfig
    from index_build.corpus import CorpusConfig
    from index_build.encode import EncodeOptions, EncoderChoice
    from index_build.encode_ray import RayEncodeOptions
    from retriever.server.ray_serve import DeploymentOptions

    return [ServiceConfig, ConnectionLimits, DeploymentOptions, EncoderChoice, EncodeOptions,
            RayEncodeOptions, CorpusConfig, EvalConfig, EnvConfig, SamplingConfig]  # fmt: skip


def test_every_numeric_flag_must_be_finite_and_in_range():
    """Item 16: --max-wait-ms nan never got past loading, --drain-seconds inf ended in a
    traceback: one check in retriever.cli covers every numeric flag of every generated CLI."""
    import argparse
    import dataclasses
    import typing

    from retriever.cli import _unwrap, add_config_arguments, config_from_args
    from retriever.errors import BadRequestError

    checked = 0
    for config in _numeric_flag_configs():
        hints = typing.get_type_hints(config)
        parser = argparse.ArgumentParser()
        add_config_arguments(parser, config)
        for f in dataclasses.fields(config):
            kind, _ = _unwrap(hints[f.name])
            if kind not in (int, float) or not f.init:
                continue
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            low = f.metadata.get("min", 0)
            bad = ["nan", "inf", "-inf"] if kind is float else []
            bad += ["-1000000000"] if low is not None else []
            for value in bad:
                args = parser.parse_args([f"{flag}={value}"])
                with pytest.raises(BadRequestError, match=f"^{flag} ") as caught:
                    config_from_args(config, args)
                assert "\n" not in str(caught.value)
                checked += 1
    assert checked >= 50


@pytest.mark.parametrize(
    "flag, value", [("--max-wait-ms", "nan"), ("--drain-seconds", "inf"), ("--keep-alive", "1e300")]
)
def test_a_bad_number_is_one_error_line_at_start(bm25_root, tmp_path, flag, value):
    server = Subprocess(bm25_root, tmp_path, flag, value)
    try:
        code = server.proc.wait(60)
    finally:
        if server.proc.poll() is None:
            server.stop()
        server.log.close()
    lines = server.text().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {flag} "), lines


def test_a_port_in_use_fails_at_once_before_loading(bm25_root, tmp_path):
    """Issue 26: a --port already in use loaded the whole index, logged "ready", then exited 3
    with uvicorn's errno line and no ``error:`` line. Now it is bound before the load."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = Subprocess(bm25_root, tmp_path, "--log-level", "info", port=port)
        try:
            code = server.proc.wait(60)
        finally:
            if server.proc.poll() is None:
                server.stop()
            server.log.close()
    finally:
        holder.close()
    lines = server.text().strip().splitlines()  # nothing loaded, nothing logged: one line
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: port {port} on 127.0.0.1 is in use ("), lines
