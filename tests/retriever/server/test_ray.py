"""Scale-out on a local Ray cluster started here (2 CPUs, one session for the module): the Serve
deployment answers exactly as the plain server, survives a replica killed mid-load, and the Ray
encode writes the same shard files as the single-process encode."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray  # noqa: E402  (installed by make setup: a broken import fails, not skips)
from retriever_fakes import (
    LiveServer,
    build_root,
    free_port,
    hotpot_questions,
)

from retriever.client import HTTPClient
from retriever.index import Index
from retriever.server.service import RetrievalService, ServiceConfig

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the whole module; this checkout's packages shipped to its workers."""
    from retriever.server.ray_serve import code_runtime_env

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env=code_runtime_env("retriever", "index_build"),
    )
    try:
        yield ray
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def bm25_root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("ray-serve"), bm25=True)


@pytest.fixture(scope="module")
def served(ray_session, bm25_root):
    """Two Serve replicas of the BM25 root, deployed through the CLI's ``main``."""
    from ray import serve

    from retriever.server.ray_serve import main

    port = free_port()
    argv = ["--index", str(bm25_root), "--replicas", "2", "--num-cpus-per-replica", "0.5"]
    argv += ["--port", str(port), "--max-wait-ms", "2", "--detach", "--log-level", "warning"]
    argv += ["--health-check-period-s", "1"]
    assert main(argv) == 0
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete("retriever")


def replica_names() -> list[str]:
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in named if a["name"].startswith("SERVE_REPLICA::retriever"))


def exchange(url: str, calls: list[tuple[str, str, dict | None]]) -> list[tuple[int, object]]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, body in calls:
            r = client.request(method, path, json=body)
            out.append((r.status_code, r.json()))
    return out


def test_serve_answers_exactly_as_the_plain_server(served, bm25_root):
    questions = hotpot_questions(40)
    first = Index.open(bm25_root).search(questions[:1], k=1)[0][0][0]
    calls = [("POST", "/retrieve", {"queries": [q], "topk": 5}) for q in questions[:20]]
    calls += [
        ("POST", "/retrieve", {"queries": questions, "topk": 3, "return_scores": True}),
        ("POST", "/retrieve", {"query": questions[0], "top_k": 2}),  # rLLM's single form
        ("POST", "/retrieve", {"queries": questions[:2], "retriever": "sparse", "k": 4}),
        ("POST", "/access", {"urls": [first.url, "https://x/wiki/Nope"], "max_chars": 80}),
        ("POST", "/access", {"titles": [first.title], "offset": 10, "max_chars": 20}),
        ("POST", "/access", {"ids": [first.id]}),
        ("POST", "/retrieve", {"queries": [], "topk": 3}),  # 422, same message
        ("POST", "/retrieve", {"queries": ["a"], "topk": 0}),
        ("POST", "/retrieve", {"queries": ["a"], "retriever": "dense-x"}),
    ]
    plain = RetrievalService(ServiceConfig(index=bm25_root, max_wait_ms=2))
    with LiveServer(plain) as server:
        want = exchange(server.url, calls)
    got = exchange(served, calls)
    assert [code for code, _ in got] == [code for code, _ in want]
    assert got == want
    assert want[-1][0] == 422 and want[0][0] == 200
    health = httpx.get(served + "/health").json()
    assert health["ready"] and health["retrievers"]["bm25"]["alive"]
    assert len(replica_names()) == 2


def test_killing_a_serve_replica_mid_load_loses_no_request(served, bm25_root):
    from ray import serve

    questions = hotpot_questions(60)
    # big requests (many queries each) so that some are in flight on the replica we kill
    bodies = [[f"{q} {j}" for q in questions] for j in range(36)]
    want = {
        j: [[p.id for p, _ in hits] for hits in Index.open(bm25_root).search(b, k=3)]
        for j, b in enumerate(bodies)
    }
    client = HTTPClient(served, retries=10, backoff=0.05)
    got: dict[int, list] = {}
    errors: list = []

    def worker(offset: int) -> None:
        for j in range(offset, len(bodies), 4):
            try:
                got[j] = [[d["id"] for d in r] for r in client.retrieve(bodies[j], topk=3)]
            except Exception as exc:  # must not happen
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(o,)) for o in range(4)]
    for t in threads:
        t.start()
    while len(got) < 4 and not errors:
        time.sleep(0.01)
    victim = replica_names()[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for t in threads:
        t.join(120)
    assert not errors
    assert got == want
    # Serve replaces the dead replica
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(replica_names()) < 2:
        time.sleep(0.5)
    assert victim not in replica_names() and len(replica_names()) == 2
    while time.monotonic() < deadline:
        status = serve.status().applications["retriever"].deployments["retriever"]
        if status.replica_states.get("RUNNING") == 2:
            break
        time.sleep(0.5)
    assert status.replica_states == {"RUNNING": 2}
    assert client.retrieve(questions[:2], topk=3) == client.retrieve(questions[:2], topk=3)


# ---- encoding on Ray ----------------------------------------------------------------------
ENCODE = ["--name", "m", "--shard-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def encode_roots(tmp_path_factory):
    """Two copies of a ~100-passage corpus; the first encoded by the single-process path."""
    from retriever_fakes import paragraphs_jsonl

    from index_build.__main__ import main as build
    from retriever.dense.encoders import packaged_model_path

    src = tmp_path_factory.mktemp("encode-ray")
    corpus = paragraphs_jsonl(src / "small.jsonl", 6, distinct=True)
    model = str(packaged_model_path())
    roots = []
    for name in ("single", "ray"):
        root = src / name
        assert build(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
        roots.append(root)
    assert build(["encode", "--index", str(roots[0]), "--model", model, *ENCODE]) == 0
    return roots[0], roots[1], model


def shard_bytes(root: Path) -> dict[str, bytes]:
    folder = root / "dense-m"
    return {
        p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".npy", ".json")
    }


def kill_one_encoder() -> int | None:
    """SIGKILL one Ray worker process running a ``ShardEncoder`` actor; its pid."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any("ShardEncoder" in part for part in proc.info["cmdline"] or []):
            proc.kill()
            return proc.info["pid"]
    return None


@pytest.fixture(scope="module")
def ray_encoded(ray_session, encode_roots):
    """The second root encoded on Ray while one of its workers is killed; a fixture, not a
    test's side effect, so each test that reads the Ray-encoded part runs alone or in any order."""
    from index_build.encode_ray import RayEncodeOptions, encode_on_ray
    from retriever.dense.encoders import resolve_config

    single, ray_root, model = encode_roots
    folder = ray_root / "dense-m"
    result: dict = {}
    options = RayEncodeOptions(workers=2, cpus_per_worker=0.5, max_retries=3)
    config = resolve_config(model)
    worker = threading.Thread(
        target=lambda: result.update(encode_on_ray(ray_root, "m", config, 8, options=options))
    )
    worker.start()
    deadline = time.monotonic() + 120
    while not list(folder.glob("emb-*.npy")) and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = kill_one_encoder()  # a worker dies mid-run (Ray restarts it, or the others finish)
    worker.join(180)
    assert not worker.is_alive(), "the Ray encode did not finish in 180 s"
    return single, ray_root, model, result, killed


def test_ray_encode_writes_the_same_shards_and_survives_a_killed_worker(ray_encoded):
    single, ray_root, _, result, killed = ray_encoded
    assert killed is not None
    want, got = shard_bytes(single), shard_bytes(ray_root)
    assert sorted(got) == sorted(want) and len(want) > 6  # every shard, encode.json, manifest
    assert got == want  # byte for byte, manifest (with its sha256 per shard) included
    assert result["encoded"] == len(Index.open(single).store)


def test_ray_encode_resumes_only_missing_shards(ray_encoded, tmp_path):
    from index_build.__main__ import main as build

    single, encoded, model, _, _ = ray_encoded
    ray_root = tmp_path / "ray"  # a copy: the shared Ray-encoded root stays whole for the others
    shutil.copytree(encoded, ray_root)
    folder = ray_root / "dense-m"
    for name in ("emb-00002.npy", "emb-00005.npy", "manifest.json"):
        (folder / name).unlink()
    args = ["encode-ray", "--index", str(ray_root), "--model", model, *ENCODE]
    args += ["--workers", "2", "--cpus-per-worker", "0.5"]
    assert build(args) == 0
    assert shard_bytes(ray_root) == shard_bytes(single)
    assert Index.open(ray_root).names() == ["dense-m"]


def test_serve_dense_replicated_over_two_devices_under_a_route_prefix(ray_encoded):
    """The Ray-encoded part served by Serve (torch, queries split over two CPU devices, under
    /dense) answers as the plain server over the single-process part on one device."""
    from ray import serve

    from retriever.server.ray_serve import DeploymentOptions, deploy

    single, ray_root, *_ = ray_encoded
    config = ServiceConfig(
        index=str(ray_root), device="cpu:0,cpu:1", dense_mode="replicated", dense_backend="torch"
    )
    options = DeploymentOptions(replicas=1, num_cpus=0.5, name="dense", route_prefix="/dense")
    # when Serve already runs (the BM25 app) the new app joins its proxy, whatever port is asked
    (url,) = deploy(config, options, port=free_port())
    assert url.endswith("/dense")
    try:
        calls = [
            ("POST", "/retrieve", {"queries": [q], "topk": 4, "return_scores": True})
            for q in ["Which magazine was started first?", "an American actor", "rivers"]
        ]
        calls.append(("POST", "/retrieve", {"queries": ["x", "y", "z"], "retriever": "dense-m"}))
        config = ServiceConfig(index=single, device="cpu", dense_backend="torch")
        with LiveServer(RetrievalService(config)) as server:
            want = exchange(server.url, calls)
        got = exchange(url, calls)
        assert [c for c, _ in got] == [200] * len(calls)
        ids = [[[d["document"]["id"] for d in r] for r in body["result"]] for _, body in got[:3]]
        assert ids == [[[d["document"]["id"] for d in r] for r in b["result"]] for _, b in want[:3]]
        for (_, g), (_, w) in zip(got[:3], want[:3]):
            gs = [d["score"] for r in g["result"] for d in r]
            ws = [d["score"] for r in w["result"] for d in r]
            np.testing.assert_allclose(gs, ws, rtol=1e-5)
        assert got[3] == want[3]
        info = httpx.get(url + "/info").json()
        assert info["config"]["dense_mode"] == "replicated"
    finally:
        serve.delete("dense")


def test_replica_checks_host_against_the_proxy_bind_address(bm25_root):
    """A replica knows the proxy's address (build_app passes it), so it refuses a rebinding
    Host without --allowed-hosts, as the plain server does; no Ray needed to build one."""
    from fastapi.testclient import TestClient

    from retriever.server.ray_serve import ServiceReplica

    replica = ServiceReplica(ServiceConfig(index=bm25_root, warmup=False), "127.0.0.1")
    try:
        with TestClient(replica.__serve_build_asgi_app__()) as client:
            assert client.get("/health", headers={"host": "evil.example"}).status_code == 421
            assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    finally:
        replica.service.stop()
