"""The HTTP wire: request and response models of ``/retrieve`` and ``/access``, and the one
place a result becomes a response item.

The request models carry every alias the trainers send (``topk`` / ``top_k`` / ``k``,
``queries`` / ``query``, ``retriever`` / ``retriever_type``), so the server's parser and its
OpenAPI schema are the same object. Bodies are parsed from JSON or msgpack (GEM sends msgpack
without a Content-Type) and answered in the same encoding. One ``query`` string in a msgpack
body is GEM's request and gets GEM's flat answer; everything else gets Search-R1's nested one.

>>> r = RetrieveRequest.model_validate({"query": "who", "top_k": 0, "return_scores": "true"})
>>> r.queries, r.topk, r.return_scores, r.single
(['who'], None, True, True)
>>> RetrieveRequest.model_validate({"queries": []}).queries
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from .errors import BadRequestError
from .types import ScoredPassage

__all__ = [
    "AccessRequest",
    "AccessResponse",
    "Document",
    "ErrorResponse",
    "MSGPACK",
    "Page",
    "RerankRequest",
    "RetrieveRequest",
    "RetrieveResponse",
    "decode_body",
    "describe",
    "document_text",
    "encode_body",
    "retrieve_response",
]

MSGPACK = "application/msgpack"
_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")
# topk_rerank and rerank_topk: Search-R1's rerank servers (/retrieve and /rerank)
_TOPK_NAMES = ("topk", "top_k", "k", "topk_rerank", "rerank_topk")


class _Request(BaseModel):
    # unknown keys are ignored (rLLM sends "description", "args", "kwargs"); aliases and the
    # field names are both accepted
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class RetrieveRequest(_Request):
    """``POST /retrieve`` (Search-R1, verl, SkyRL, ASearcher, GEM, rLLM bodies)."""

    queries: list[StrictStr] = Field(
        description="one result list per query; an empty list gets an empty result",
        validation_alias=AliasChoices("queries", "query"),
    )
    topk: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None,
        description="results per query (aliases top_k, k); 0 or null: the server's default",
        validation_alias=AliasChoices(*_TOPK_NAMES),
    )
    return_scores: bool = Field(
        False, description='items {"document": doc, "score": s} instead of docs'
    )
    retriever: StrictStr | None = Field(
        None,
        description="bm25, dense-NAME or hybrid, each also NAME+rerank when the server has "
        "--rerank (alias retriever_type; rLLM's sparse and dense)",
        validation_alias=AliasChoices("retriever", "retriever_type"),
    )
    rerank_depth: StrictInt | None = Field(
        None,
        description="NAME+rerank: candidates reranked per query (alias topk_retrieval, as "
        "Search-R1's rerank server names it; default --rerank-depth)",
        validation_alias=AliasChoices("rerank_depth", "topk_retrieval"),
    )
    # set when the body sent one 'query' string: the answer also carries rLLM's 'results'
    single: SkipJsonSchema[bool] = Field(False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _one_of_each(cls, body: Any) -> Any:
        """Refuse conflicting aliases; one ``query`` string is a batch of one."""
        if not isinstance(body, dict):
            return body
        if "queries" in body and "query" in body:
            raise ValueError("send either 'queries' (a list) or 'query' (a string), not both")
        if "queries" not in body and "query" not in body:
            raise ValueError("missing 'queries' (a list of strings) or 'query' (a string)")
        if (  # the common body (Search-R1, verl, SkyRL, ASearcher, GEM): nothing to rewrite
            "query" not in body
            and "top_k" not in body
            and "k" not in body
            and "topk_rerank" not in body
            and "rerank_topk" not in body
            and "single" not in body
            and body.get("topk", 1) != 0
        ):
            return body
        given = {n: body[n] for n in _TOPK_NAMES if body.get(n) is not None}
        if len(set(map(repr, given.values()))) > 1:
            raise ValueError(f"conflicting result counts {given}: send one of topk, top_k, k")
        body = dict(body)
        query = body.get("query")
        if isinstance(query, str):
            body["query"] = [query]
            body["single"] = True
        else:
            body.pop("single", None)
        for name in _TOPK_NAMES:  # 0 means the default, as in Search-R1's and GEM's servers
            if body.get(name) == 0 and not isinstance(body.get(name), bool):
                body[name] = None
        if given:
            body["topk"] = body.get(next(iter(given)))
            for name in _TOPK_NAMES[1:]:
                body.pop(name, None)
        return body


class RerankRequest(_Request):
    """``POST /rerank`` (Search-R1's ``rerank_server.py`` body): each query's own documents,
    reranked; documents are doc dicts (``contents``, or ``title`` and ``text``), scored items
    ``{"document": doc, "score": s}`` as ``/retrieve`` returns them, or plain strings."""

    queries: list[StrictStr] = Field(description="one document list per query")
    documents: list[list[StrictStr | dict[str, Any]]] = Field(
        description="documents[i]: the candidates of queries[i] (never scored against another)"
    )
    topk: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None,
        description="documents kept per query (aliases rerank_topk, top_k, k); 0 or null: "
        "the server's default",
        validation_alias=AliasChoices(*_TOPK_NAMES),
    )
    return_scores: bool = Field(False, description='items {"document": doc, "score": s}')

    @model_validator(mode="before")
    @classmethod
    def _aligned(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        given = {n: body[n] for n in _TOPK_NAMES if body.get(n) is not None}
        if len(set(map(repr, given.values()))) > 1:
            raise ValueError(f"conflicting result counts {given}: send one of topk, rerank_topk")
        body = {k: v for k, v in body.items() if k not in _TOPK_NAMES}
        if given:
            value = next(iter(given.values()))
            body["topk"] = None if value == 0 and not isinstance(value, bool) else value
        queries, documents = body.get("queries"), body.get("documents")
        if isinstance(queries, list) and isinstance(documents, list):
            if len(queries) != len(documents):
                raise ValueError(
                    f"{len(queries)} queries but {len(documents)} document lists: send one "
                    "list of documents per query"
                )
        return body


def document_text(doc: str | dict) -> str:
    r"""The text a reranker reads of a sent document: a string as it is, a doc's ``contents``
    (``"Title"\ntext``), else its title and text; a scored item's document.

    >>> document_text({"document": {"title": "A", "text": "b"}, "score": 1.0})
    '"A"\nb'
    """
    if isinstance(doc, str):
        return doc
    if isinstance(doc.get("document"), dict):
        doc = doc["document"]
    if isinstance(doc.get("contents"), str):
        return doc["contents"]
    title, text = doc.get("title"), doc.get("text")
    if isinstance(text, str):
        return f'"{title}"\n{text}' if isinstance(title, str) and title else text
    raise BadRequestError(
        f"document {str(doc)[:80]!r} has no text: send a string, or a dict with 'contents' "
        "(or 'title' and 'text')"
    )


def unwrap_document(doc: str | dict) -> str | dict:
    """A sent document as ``/rerank`` returns it: a scored item's document, else as sent."""
    if isinstance(doc, dict) and isinstance(doc.get("document"), dict):
        return doc["document"]
    return doc


class AccessRequest(_Request):
    """``POST /access`` (ASearcher): pages by url, title or id, optionally one window of each."""

    urls: list[StrictStr] = Field(default_factory=list, description="page URLs, any form")
    titles: list[StrictStr] = Field(default_factory=list, description="page titles")
    ids: list[StrictStr] = Field(default_factory=list, description="page ids")
    offset: Annotated[int, Field(ge=0)] = Field(0, description="first character of the window")
    max_chars: Annotated[int, Field(ge=1)] | None = Field(
        None, description="window length (default: the whole page)"
    )

    @model_validator(mode="before")
    @classmethod
    def _names_as_lists(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        body = {k: v for k, v in body.items() if v is not None}
        for key in ("urls", "titles", "ids"):
            if isinstance(body.get(key), str):
                body[key] = [body[key]]
        return body


class Document(BaseModel):
    """One passage on the wire; ``contents`` is ``"Title"\\ntext`` (Search-R1 / FlashRAG)."""

    id: str
    contents: str
    title: str
    text: str
    url: str


class ScoredDocument(BaseModel):
    document: Document
    score: float


class GemItem(BaseModel):
    """GEM's ``result`` item: its server writes ``"score": None`` without ``return_scores``."""

    document: Document
    score: float | None


class RllmDocument(BaseModel):
    """The ``document`` of rLLM's ``results`` item: what its server sends (a wiki-18 row)."""

    id: str
    contents: str


class RllmResult(BaseModel):
    """rLLM's ``results`` item, only the fields its tools read: ``id``, ``content`` and
    ``score`` (the first ``LocalRetrievalTool``, the deepresearch tool), ``document.id``,
    ``document.contents`` and ``score`` (the later ``LocalRetrievalTool``)."""

    id: str
    content: str
    score: float
    document: RllmDocument


class RetrieveResponse(BaseModel):
    """``{"result": [[doc, ...], ...]}``, or scored items with ``return_scores``; a single
    ``query`` string also gets rLLM's ``query``, ``results`` and ``num_results``, except in a
    msgpack body (GEM), which gets only ``{"result": [{"document", "score"}, ...]}``."""

    result: list[list[Document]] | list[list[ScoredDocument]] | list[GemItem]
    query: str | None = None
    results: list[RllmResult] | None = None
    num_results: int | None = None


class Page(BaseModel):
    id: str
    url: str
    title: str
    contents: str
    offset: int
    total_chars: int


class AccessResponse(BaseModel):
    result: list[Page | None]


class ErrorResponse(BaseModel):
    error: str = Field(description="bad_request, unauthorized, overloaded, unavailable, ...")
    detail: str = Field(description="what was wrong and what to do")


# ---- bodies ---------------------------------------------------------------------------------
def is_msgpack(content_type: str | None, body: bytes) -> bool:
    """msgpack when the Content-Type says so, or when no JSON type is declared and the body
    starts like a msgpack map (GEM posts raw msgpack bytes with no Content-Type)."""
    if content_type:
        ctype = content_type.split(";", 1)[0].strip().lower()
        if ctype in _MSGPACK_TYPES:
            return True
        if ctype.endswith("json"):
            return False
    return bool(body) and (0x80 <= body[0] <= 0x8F or body[0] in (0xDE, 0xDF))


def decode_body(body: bytes, content_type: str | None = None) -> tuple[dict, bool]:
    """(the body as a dict, whether it was msgpack); ``BadRequestError`` naming the problem."""
    if not body:
        raise BadRequestError("empty body: send a JSON object")
    packed = is_msgpack(content_type, body)
    try:
        if packed:
            import msgpack

            obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
        else:
            obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    except Exception as exc:  # msgpack's errors share no base class
        raise BadRequestError(f"body is not valid msgpack: {exc}") from None
    if not isinstance(obj, dict):
        kind = "msgpack map" if packed else "JSON object"
        raise BadRequestError(f"body must be a {kind}, got {type(obj).__name__}")
    return obj, packed


def encode_body(obj: Any, packed: bool) -> bytes:
    if packed:
        import msgpack

        return msgpack.packb(obj, use_bin_type=True)
    return orjson.dumps(obj)


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line a person can act on.

    >>> try:
    ...     RetrieveRequest.model_validate({"queries": ["a", None], "topk": -1})
    ... except ValidationError as e:
    ...     print(describe(e))
    queries.1: Input should be a valid string (got None); topk: Input should be greater than or equal to 0 (got -1)
    """
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("value_error", "missing") or err["type"].startswith("model_"):
            parts.append(f"{where}: {message}" if where else message)
        else:
            parts.append(f"{where}: {message} (got {err.get('input')!r})")
    return "; ".join(parts)


def parse(model: type[_Request], body: dict) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequestError(describe(exc)) from None


# ---- responses ------------------------------------------------------------------------------
def retrieve_response(
    results: Iterable[Sequence[ScoredPassage]],
    request: RetrieveRequest,
    *,
    msgpack_body: bool = False,
) -> dict[str, Any]:
    """Search-R1's shapes: docs, or ``{"document": doc, "score": s}`` items; plus rLLM's
    ``results`` (``RllmResult``: only what rLLM's tools read, so a passage's text is sent
    four times, not seven) when one ``query`` string was sent. ``results`` may be lazy (one query's hits at a time):
    a response of thousands of queries then never holds every passage object at once.

    One ``query`` string in a msgpack body is what GEM's ``SearchTool`` sends, and its own
    server (msgpack only) answers one flat list of ``{"document", "score"}``, the score None
    without ``return_scores``; GEM reads ``["result"][i]["document"]``, so it gets that. In
    JSON the same body is SkyRL's ``call_search_api``, which reads the nested list."""
    if request.single and msgpack_body:
        hits = next(iter(results), ())
        scored = request.return_scores
        items = [{"document": p.to_dict(), "score": float(s) if scored else None} for p, s in hits]
        return {"result": items}
    result: list = []
    first: Sequence[ScoredPassage] = ()
    for hits in results:  # one pass: this runs for every hit of every request
        if not result:
            first = hits
        if request.return_scores:
            result.append([{"document": p.to_dict(), "score": float(s)} for p, s in hits])
        else:
            result.append([p.to_dict() for p, _ in hits])
    out: dict[str, Any] = {"result": result}
    if request.single:
        docs = [item["document"] for item in result[0]] if request.return_scores else result[0]
        out["query"] = request.queries[0]
        out["results"] = [
            {
                "id": d["id"],
                "content": d["contents"],
                "score": float(s),
                "document": {"id": d["id"], "contents": d["contents"]},
            }
            for d, (_, s) in zip(docs, first)
        ]
        out["num_results"] = len(docs)
    return out
