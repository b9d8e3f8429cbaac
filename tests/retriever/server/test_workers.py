"""``--workers N`` (``retriever/server/workers.py``): N processes on one port, one address file,
SIGTERM drains them all, a failed worker takes the server down with its exit code."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import orjson
import psutil
import pytest
from conftest import REPO
from retriever_fakes import build_root, hotpot_questions

from retriever.server.workers import run_workers


def test_run_workers_forwards_sigterm_and_announces_once():
    """Both workers report ready, the parent announces once, a SIGTERM to the parent reaches
    both, and both exit 0."""
    announced = []

    def child(number: int, ready) -> int:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        ready()
        stop.wait(20)
        return 0 if stop.is_set() else 7

    def all_ready() -> None:
        announced.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)  # as a supervisor's stop would

    assert run_workers(2, child, all_ready) == 0
    assert len(announced) == 1


def test_a_failed_worker_stops_the_others_with_its_code():
    def child(number: int, ready) -> int:
        if number == 1:
            return 3  # e.g. the index failed to load
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait(20)
        return 0 if stop.is_set() else 7

    t = time.monotonic()
    assert run_workers(2, child, lambda: pytest.fail("announced without every worker")) == 3
    assert time.monotonic() - t < 10


def _post(port: int, body: dict) -> socket.socket:
    data = orjson.dumps(body)
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(
        b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(data)).encode() + b"\r\nConnection: close\r\n\r\n" + data
    )
    return s


def _answer(s: socket.socket) -> tuple[int, bytes]:
    chunks = []
    while chunk := s.recv(1 << 20):
        chunks.append(chunk)
    s.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return (int(head.split(b" ", 2)[1]) if head else 0), body


@pytest.mark.slow
def test_two_workers_answer_share_one_address_file_and_drain_on_sigterm(tmp_path):
    import httpx

    root = build_root(tmp_path, bm25=True)
    folder = tmp_path / "addresses"
    folder.mkdir()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "retriever.server", "--index", str(root), "--port", "0",
           "--workers", "2", "--save-address-to", str(folder), "--no-ui", "--cache-size", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("RETRIEVER_THREADS", "OMP_NUM_THREADS"):
        env.pop(name, None)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not list(folder.iterdir()):
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "no address file"
            time.sleep(0.1)
        [address] = list(folder.iterdir())  # one file for the server, not one per worker
        port = int(address.stem.rsplit("_IP", 1)[1])
        workers = {p.pid for p in psutil.Process(proc.pid).children()}
        assert len(workers) == 2
        seen, threads = set(), set()
        for _ in range(200):  # a fresh connection each time: the kernel picks the worker
            info = httpx.get(f"http://127.0.0.1:{port}/info", timeout=10).json()
            seen.add(info["pid"])
            threads.add(info["threads"])
            if seen == workers:
                break
        assert seen == workers
        # each worker's kernels may use every core by default (retriever.cores)
        assert threads == {len(os.sched_getaffinity(0))}
        # the same answer from either worker
        body = {"queries": hotpot_questions(5), "topk": 3, "return_scores": True}
        answers = {httpx.post(f"http://127.0.0.1:{port}/retrieve", json=body).content
                   for _ in range(10)}  # fmt: skip
        assert len(answers) == 1
        # requests in flight on both workers when SIGTERM comes are all answered
        big = {"queries": hotpot_questions(500) * 4, "topk": 10, "return_scores": True}
        sockets = [_post(port, big) for _ in range(6)]
        time.sleep(0.3)  # accepted and searching
        # a selector, not select.select: a full test run holds over 1,024 descriptors
        with selectors.DefaultSelector() as ready:
            for sock in sockets:
                ready.register(sock, selectors.EVENT_READ)
            answered = ready.select(timeout=0)
        proc.send_signal(signal.SIGTERM)
        assert len(answered) < len(sockets)  # some were still in flight at the SIGTERM
        results = [_answer(s) for s in sockets]
        assert [status for status, _ in results] == [200] * 6
        assert all(len(orjson.loads(b)["result"]) == 2000 for _, b in results)
        assert proc.wait(60) == 0
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in workers)  # fmt: skip
        assert not address.exists()
        text = (tmp_path / "server.log").read_text()
        assert text.count("Finished server process") == 2, text
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_workers_flag_is_checked(tmp_path, capsys):
    from retriever.server.app import main

    root = build_root(tmp_path, bm25=False)
    assert main(["--index", str(root), "--port", "0", "--workers", "0"]) == 2
    assert "--workers 0 is out of range" in capsys.readouterr().err
