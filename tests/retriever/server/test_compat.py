"""Wire compatibility: the bodies Search-R1, verl, ASearcher and rLLM send, parsed as they parse.

The request bodies and parsing below follow those projects' documented client code:
Search-R1's ``LLMGenerationManager._batch_search`` / ``_passages2string``, verl's
``search_r1_like_utils.call_search_api`` / ``_passages2string``, ASearcher's async search client
(``query_async`` / ``access_async``) and rLLM's ``LocalRetrievalTool.forward``.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from retriever_fakes import build_root, hotpot_questions

from retriever.index import Index
from retriever.server.app import create_app
from retriever.server.service import RetrievalService, ServiceConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("compat"), bm25=True)


@pytest.fixture(scope="module")
def client(root):
    service = RetrievalService(ServiceConfig(index=root))
    with TestClient(create_app(service, background=False)) as c:
        yield c


@pytest.fixture(scope="module")
def library(root):
    return Index.open(root)


def search_r1_passages2string(retrieval_result):
    format_reference = ""
    for idx, doc_item in enumerate(retrieval_result):
        content = doc_item["document"]["contents"]
        title = content.split("\n")[0]
        text = "\n".join(content.split("\n")[1:])
        format_reference += f"Doc {idx + 1}(Title: {title}) {text}\n"
    return format_reference


def test_search_r1_trainer(client, library):
    queries = hotpot_questions(8)
    payload = {"queries": queries, "topk": 3, "return_scores": True}
    results = client.post("/retrieve", json=payload).json()["result"]
    rendered = [search_r1_passages2string(r) for r in results]
    want = library.search(queries, k=3)
    for text, hits in zip(rendered, want):
        first = hits[0][0]
        assert text.startswith(f'Doc 1(Title: "{first.title}") {first.text}\n')
        assert text.count("Doc ") >= 3


def test_search_r1_trainer_batch_of_2560(client):
    queries = [f"{q} {i}" for i, q in enumerate(hotpot_questions(64) * 40)]
    payload = {"queries": queries, "topk": 3, "return_scores": True}
    results = client.post("/retrieve", json=payload).json()["result"]
    assert len(results) == 2560 and all(len(r) == 3 for r in results)


def test_search_r1_example_request_without_scores(client):
    payload = {"queries": ["What is the capital of France?"], "topk": 2, "return_scores": False}
    response = client.post("/retrieve", json=payload)
    response.raise_for_status()
    docs = response.json()["result"][0]
    assert len(docs) == 2 and {"id", "contents"} <= set(docs[0])


def test_verl_search_tool(client):
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    query_list = hotpot_questions(3)
    payload = {"queries": query_list, "topk": 3, "return_scores": True}
    response = client.post("/retrieve", headers=headers, json=payload)
    assert response.status_code == 200
    api_response = response.json()
    raw_results = api_response.get("result", [])
    pretty_results = []
    for retrieval in raw_results:
        format_reference = ""
        for idx, doc_item in enumerate(retrieval):
            content = doc_item["document"]["contents"]
            title = content.split("\n")[0]
            text = "\n".join(content.split("\n")[1:])
            format_reference += f"Doc {idx + 1} (Title: {title})\n{text}\n\n"
        pretty_results.append(format_reference.strip())
    final_result = "\n---\n".join(pretty_results)
    result_text = json.dumps({"result": final_result}, ensure_ascii=False)
    assert result_text.count("Doc 1 (Title:") == 3


def test_asearcher_search_and_access(client, library):
    query = hotpot_questions(1)[0]
    req_meta = {"queries": [query], "topk": 5, "return_scores": False}
    res = client.post("/retrieve", json=req_meta).json()
    parsed = [
        dict(
            documents=[r["contents"] for r in result],
            urls=[r["url"] for r in result],
            server_type="async-search-browser",
        )
        for result in res["result"]
    ]
    want = library.search([query], k=5)[0]
    assert parsed[0]["urls"] == [p.url for p, _ in want]
    assert parsed[0]["documents"] == [p.contents for p, _ in want]

    url = parsed[0]["urls"][0]
    response = client.post("/access", json={"urls": [url]}).json()
    page = None if response["result"][0] is None else response["result"][0]["contents"]
    assert page and want[0][0].text in page
    missing = client.post("/access", json={"urls": ["https://en.wikipedia.org/wiki/Zzz_q"]})
    assert missing.json()["result"][0] is None


def test_rllm_local_retrieval_tool(client, library):
    query = hotpot_questions(2)[1]
    payload = {"query": query, "top_k": min(10, 50), "retriever_type": "sparse"}
    response = client.post("/retrieve", json=payload)
    assert response.is_success
    results = response.json().get("results", [])
    formatted = []
    for i, result in enumerate(results[:10], 1):
        doc_id = result.get("id", f"doc_{i}")
        content = result.get("content", "")
        score = result.get("score", 0.0)
        formatted.append(f"[Document {i}] (ID: {doc_id}, Score: {score:.3f})\n{content[:300]}\n")
    want = library.search([query], k=10)[0]
    assert len(formatted) == 10
    assert formatted[0].startswith(f"[Document 1] (ID: {want[0][0].id}, Score: {want[0][1]:.3f})")


def test_rllm_hybrid_without_dense_is_a_clear_422(client):
    r = client.post("/retrieve", json={"query": "x", "top_k": 3, "retriever_type": "hybrid"})
    assert r.status_code == 422 and "unknown retriever 'hybrid'" in r.json()["detail"]
