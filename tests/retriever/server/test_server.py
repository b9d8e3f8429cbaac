"""The FastAPI app in-process (TestClient): the HTTP contract, status codes, token, CLI errors."""

from __future__ import annotations

import threading
import time
import warnings

import orjson
import pytest
from fastapi.testclient import TestClient
from retriever_fakes import FakeRetriever, build_root

from retriever.index import Index
from retriever.server.app import create_app, main
from retriever.server.service import RetrievalService, ServiceConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("srv"), bm25=False)


@pytest.fixture
def fake(root):
    return FakeRetriever(len(Index.open(root).store), "bm25")


def serve(root, fake, **config):
    config.setdefault("max_wait_ms", 1)
    service = RetrievalService(ServiceConfig(index=root, **config), {"bm25": fake})
    return service, TestClient(create_app(service))


def wait_ready(client, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/health")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.02)
    raise AssertionError(f"not ready: {r.json()}")


@pytest.fixture
def app_client(root, fake):
    service, client = serve(root, fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no per-request deprecation noise
        with client:
            wait_ready(client)
            yield service, client


def test_retrieve_both_response_shapes(app_client, fake):
    service, client = app_client
    store = service.index.store
    queries = ["who wrote it", "a river in india"]
    want = [fake.search_one(q, 3) for q in queries]
    plain = client.post("/retrieve", json={"queries": queries, "topk": 3}).json()["result"]
    scored = client.post(
        "/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}
    ).json()["result"]
    for hits, docs, items in zip(want, plain, scored):
        assert docs == [store.get(h.row).to_dict() for h in hits]
        assert items == [{"document": store.get(h.row).to_dict(), "score": h.score} for h in hits]


@pytest.mark.parametrize(
    "body", [{"query": "x", "k": 2}, {"queries": ["x"], "top_k": 2}, {"queries": ["x"], "topk": 2}]
)
def test_aliases(app_client, body):
    _, client = app_client
    r = client.post("/retrieve", json=body)
    assert r.status_code == 200 and len(r.json()["result"][0]) == 2


def test_single_query_also_answers_rllm_shape(app_client):
    """rLLM's tools read ``results[i]``'s ``id``, ``content`` and ``score`` (its first
    ``LocalRetrievalTool``, its deepresearch tool) or ``document.id``, ``document.contents`` and
    ``score`` (the later ``LocalRetrievalTool``); SkyRL reads the nested ``result``. Issue 26:
    each item also repeated every document field and a whole second document, so a passage's
    text went out about seven times (5.8x rLLM's own answer); now four (``result``'s ``text``
    and ``contents``, ``content``, ``document.contents``)."""
    _, client = app_client
    body = {"query": "x", "top_k": 2, "retriever_type": "sparse"}
    response = client.post("/retrieve", json=body)
    out = response.json()
    assert out["num_results"] == 2 and out["query"] == "x"
    docs = out["result"][0]
    assert [set(r) for r in out["results"]] == [{"id", "content", "score", "document"}] * 2
    for item, doc in zip(out["results"], docs):
        assert item["id"] == doc["id"] and item["content"] == doc["contents"]
        assert item["document"] == {"id": doc["id"], "contents": doc["contents"]}
        assert isinstance(item["score"], float)
    for doc in docs:
        assert response.content.count(orjson.dumps(doc["text"])[1:-1]) == 4, doc["text"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "missing 'queries'"),
        ({"queries": "abc"}, "queries: Input should be a valid list"),
        ({"queries": [None]}, "queries.0: Input should be a valid string (got None)"),
        ({"queries": ["a"], "topk": -1}, "greater than or equal to 0 (got -1)"),
        ({"queries": ["a"], "topk": 10**6}, "between 1 and"),
        ({"queries": ["a"], "topk": 2.5}, "topk: Input should be a valid integer"),
        ({"queries": ["a"], "topk": True}, "topk: Input should be a valid integer"),
        ({"queries": ["a"], "topk": 2, "k": 3}, "conflicting"),
        ({"queries": ["a"], "query": "b"}, "not both"),
        ({"queries": ["a"], "retriever": "dense-x"}, "unknown retriever 'dense-x'"),
        ({"queries": ["a"], "retriever": 5}, "retriever: Input should be a valid string"),
        ({"queries": ["a"], "return_scores": "maybe"}, "return_scores"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_requests_are_422_with_a_message(app_client, body, message):
    _, client = app_client
    r = client.post("/retrieve", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_request"
    assert message in r.json()["detail"]


def test_search_r1_defaults_empty_batch_and_topk_zero(app_client):
    """What Search-R1's and GEM's own servers answer: no queries -> no results (a turn where no
    sample searched); topk 0 or null -> the server's default."""
    _, client = app_client
    assert client.post("/retrieve", json={"queries": []}).json() == {"result": []}
    empty = client.post("/retrieve", json={"queries": [], "topk": 3, "return_scores": True})
    assert empty.status_code == 200 and empty.json() == {"result": []}
    for body in ({"topk": 0}, {"topk": None}, {"top_k": 0}, {"k": None}, {}):
        r = client.post("/retrieve", json={"queries": ["a"], **body})
        assert r.status_code == 200 and len(r.json()["result"][0]) == 3  # default_topk


def test_unknown_keys_are_ignored(app_client):
    _, client = app_client  # rLLM's later tool sends these beside the query
    body = {"query": "x", "top_k": 2, "description": "", "args": [], "kwargs": {}}
    assert client.post("/retrieve", json=body).json()["num_results"] == 2


def test_bad_bodies(root, fake):
    _, client = serve(root, fake, max_body_bytes=200, max_queries_per_request=5)
    with client:
        wait_ready(client)
        assert client.post("/retrieve", content=b"{not json").status_code == 422
        assert client.post("/retrieve", content=b"").status_code == 422
        big = client.post("/retrieve", json={"queries": ["x" * 300]})
        assert big.status_code == 422 and "over the limit of 200 bytes" in big.json()["detail"]
        many = client.post("/retrieve", json={"queries": ["q"] * 6})
        assert many.status_code == 422 and "limit is 5" in many.json()["detail"]
        assert client.post("/access", json={"urls": "x" * 300}).status_code == 422
        assert client.get("/nowhere").status_code == 404


def test_access(app_client):
    service, client = app_client
    passage = service.index.store.get(3)
    body = {"urls": [passage.url, "https://en.wikipedia.org/wiki/No_such_page_zz"]}
    result = client.post("/access", json=body).json()["result"]
    assert result[0]["title"] == passage.title and result[1] is None
    total = result[0]["total_chars"]
    page = client.post(
        "/access", json={"titles": [passage.title], "offset": 2, "max_chars": 10}
    ).json()["result"][0]
    assert page["contents"] == result[0]["contents"][2:12] and page["total_chars"] == total
    assert client.post("/access", json={"ids": [passage.id]}).json()["result"][0] == result[0]
    odd = client.post("/access", json={"urls": ["http://[", passage.url], "titles": ["//[::1"]})
    assert odd.status_code == 200 and odd.json()["result"][0] is None
    assert odd.json()["result"][1] == result[0]
    for bad in ({}, {"urls": [1]}, {"urls": ["x"], "offset": -3}, {"urls": ["x"], "max_chars": 0}):
        assert client.post("/access", json=bad).status_code == 422


def test_health_info_metrics(app_client):
    _, client = app_client
    client.post("/retrieve", json={"queries": ["m"]})
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["retrievers"]["bm25"]["alive"]
    info = client.get("/info").json()
    assert info["default_retriever"] == "bm25" and info["corpus"]["num_docs"] > 0
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'retriever_requests_total{code="200",endpoint="/retrieve"} 1' in metrics.text
    assert "# TYPE retriever_batch_size histogram" in metrics.text


def test_503_while_loading_then_ready(root, fake):
    fake.gate = threading.Event()  # the warm-up search blocks: the service stays loading
    service, client = serve(root, fake)
    with client:
        r = client.post("/retrieve", json={"queries": ["a"]})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert r.headers["retry-after"] == "2"
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        fake.gate.set()
        wait_ready(client)
        assert client.post("/retrieve", json={"queries": ["a"]}).status_code == 200


def test_503_when_the_worker_died(root, fake):
    service, client = serve(root, fake)
    with client:
        wait_ready(client)
        fake.fail_on = "die"
        original = fake.search

        def dying(queries, k):
            if "die" in queries:
                raise SystemExit("worker killed")
            return original(queries, k)

        service._batchers["bm25"]._ops[None] = dying  # the default operation: search
        assert client.post("/retrieve", json={"queries": ["die"]}).status_code == 503
        r = client.post("/retrieve", json={"queries": ["fine"]})
        assert r.status_code == 503 and "worker died" in r.json()["detail"]
        assert client.get("/health").status_code == 503


def test_batch_error_is_500_json_and_next_request_works(app_client, fake):
    _, client = app_client
    fake.fail_on = "boom"
    r = client.post("/retrieve", json={"queries": ["boom"]})
    assert r.status_code == 500 and "injected failure" in r.json()["detail"]
    fake.fail_on = None
    assert client.post("/retrieve", json={"queries": ["boom"]}).status_code == 200


def test_bearer_token(root, fake):
    _, client = serve(root, fake, token="s3cret")
    with client:
        wait_ready(client)  # /health needs no token
        r = client.post("/retrieve", json={"queries": ["a"]})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        bad = {"authorization": "Bearer nope"}
        assert client.post("/retrieve", json={"queries": ["a"]}, headers=bad).status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert client.post("/retrieve", json={"queries": ["a"]}, headers=good).status_code == 200
        assert client.get("/info", headers=good).json()["config"]["token"] == "set"


def test_cli_refuses_bad_roots(tmp_path, root, capsys):
    assert main(["--index", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--index", str(root)]) == 2  # a corpus without any retriever part
    assert "no bm25/ or dense-NAME/ part" in capsys.readouterr().err


def test_ray_serve_cli_refuses_the_same_roots(tmp_path, root, capsys):
    """Ray Serve's CLI makes the server's check (``checked_config``) before it touches Ray."""
    from retriever.server.ray_serve import main as ray_main

    assert ray_main(["--index", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ray_main(["--index", str(root)]) == 2
    assert "no bm25/ or dense-NAME/ part" in capsys.readouterr().err


def test_openapi_request_bodies_are_the_wire_models(app_client):
    from retriever.wire import AccessRequest, RetrieveRequest

    _, client = app_client
    paths = client.get("/openapi.json").json()["paths"]
    for path, model in (("/retrieve", RetrieveRequest), ("/access", AccessRequest)):
        content = paths[path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "application/msgpack"}
        got, want = content["application/json"]["schema"], model.model_json_schema()
        assert got.get("required") == want.get("required")  # as the model, not hand-written
        assert {k: v.get("description") for k, v in got["properties"].items()} == {
            k: v.get("description") for k, v in want["properties"].items()
        }
        assert {"200", "401", "422", "429", "503"} <= set(paths[path]["post"]["responses"])
    topk = paths["/retrieve"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "top_k, k" in topk["properties"]["topk"]["description"]


def test_metrics_middleware_counts_every_status_of_known_routes(root, fake):
    service, client = serve(root, fake, token="t")
    good = {"authorization": "Bearer t"}
    with client:
        wait_ready(client)
        client.post("/retrieve", json={"queries": ["a"]})  # 401
        client.post("/retrieve", json={"queries": ["a"], "topk": -2}, headers=good)  # 422
        client.post("/retrieve", json={"queries": ["a"]}, headers=good)  # 200
        client.get("/no/such/route")  # not a label value: scans must not grow the series
        value = service.metrics.value
        for code in ("401", "422", "200"):
            assert value("retriever_requests_total", endpoint="/retrieve", code=code) == 1
        assert value("retriever_request_seconds_count", endpoint="/retrieve") == 3
        text = client.get("/metrics", headers=good).text
        assert "/no/such/route" not in text
        assert 'retriever_queue_depth{retriever="bm25"} 0.0' in text
        assert "retriever_ready 1.0" in text
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_two_services_keep_their_own_counts(root, fake):
    one, two = (
        RetrievalService(ServiceConfig(index=root)),
        RetrievalService(ServiceConfig(index=root)),
    )
    one.metrics.requests.labels(endpoint="/retrieve", code="200").inc()
    assert two.metrics.value("retriever_requests_total", endpoint="/retrieve", code="200") == 0


def test_every_documented_flag_still_parses():
    """Flags are generated from ServiceConfig / DeploymentOptions now; the names users type
    (README, scripts) must keep working, with the dataclass defaults when not given."""
    from retriever.cli import config_from_args as from_flags
    from retriever.server.app import build_parser, config_from_args
    from retriever.server.ray_serve import DeploymentOptions
    from retriever.server.ray_serve import build_parser as ray_parser

    argv = (
        "--index X --host 0.0.0.0 --port 9 --device cuda:0,1 --dense-mode replicated "
        "--dense-backend torch --search-threads 2 --retrievers bm25,dense-e5 "
        "--default-retriever bm25 --max-batch 8 --max-wait-ms 1.5 --queue-size 5 --cache-size 0 "
        "--default-topk 4 --max-topk 40 --max-queries-per-request 9 --max-body-bytes 100 "
        "--hybrid-k-rrf 30 --hybrid-depth 20 --token t --no-warmup --log-level warning "
        "--save-address-to /tmp/addr"
    ).split()
    args = build_parser().parse_args(argv)
    assert config_from_args(args) == ServiceConfig(
        index="X", retrievers=("bm25", "dense-e5"), default_retriever="bm25",
        device="cuda:0,1", dense_mode="replicated", dense_backend="torch", search_threads=2,
        max_batch=8, max_wait_ms=1.5, queue_size=5, cache_size=0, default_topk=4, max_topk=40,
        max_queries_per_request=9, max_body_bytes=100, hybrid_k_rrf=30.0, hybrid_depth=20,
        token="t", warmup=False,
    )  # fmt: skip
    assert (args.host, args.port, args.save_address_to) == ("0.0.0.0", 9, "/tmp/addr")
    assert config_from_args(build_parser().parse_args(["--index", "X"])) == ServiceConfig(index="X")
    ray = ray_parser().parse_args(
        argv[:2]
        + "--replicas 3 --num-cpus-per-replica 2 --num-gpus-per-replica 0.5 "
        "--max-ongoing-requests 10 --health-check-period-s 3 --name w --route-prefix /w "
        "--address auto --no-ship-code --detach".split()
    )
    assert from_flags(DeploymentOptions, ray) == DeploymentOptions(
        replicas=3, num_cpus=2.0, num_gpus=0.5, max_ongoing_requests=10,
        health_check_period_s=3.0, name="w", route_prefix="/w",
    )  # fmt: skip
    assert (ray.address, ray.no_ship_code, ray.detach) == ("auto", True, True)


@pytest.mark.parametrize("name", ["\u00b9", "\u0663", "\u00b2\u00b3", "12\u00b9"])
def test_non_ascii_digits_are_names_not_row_numbers(app_client, name):
    """``"¹".isdigit()`` is True but ``int("¹")`` raises: such ids, titles and urls are unknown
    names (null), never a 500 (found by the schema fuzzer)."""
    _, client = app_client
    for field in ("ids", "titles", "urls"):
        response = client.post("/access", json={field: [name]})
        assert response.status_code == 200, response.text
        assert response.json() == {"result": [None]}
