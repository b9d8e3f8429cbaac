"""verl: a reward function with verl's signature, and search/access tools for its agent loop.

Reward (``custom_reward_function`` of the verl config)::

    reward:
      custom_reward_function:
        path: pkg://env.integrations.verl   # or the file's path
        name: compute_score
        reward_kwargs: {reward: em}          # or f1, cover_em, format, asearcher

Tools (``actor_rollout_ref.rollout.multi_turn.tool_config_path``): ``tool_config()`` writes the
YAML; each tool calls ``python -m retriever.server`` over HTTP (Search-R1's ``/retrieve`` and
ASearcher's ``/access``) and formats the result as the env does (``tool-call`` style). A
``noise`` entry in a tool's config adds ``env.noise`` to its results; the curriculum step comes
from ``train_step_of`` (the row's ``create_kwargs``, else the step verl stamps on generations).

Imports here are absolute: verl loads a reward file by path (``path: /…/verl.py``) as a module
outside its package; ``path: pkg://env.integrations.verl`` imports it by name.

verl is optional: when it imports, the tools subclass its ``BaseTool`` and answer
``ToolResponse`` objects; without it they are plain classes with the same methods, and
``compute_score`` needs nothing of verl.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from env.errors import TaskFormatError
from env.integrations.scoring import answers_of, num_tool_calls, score_text_all
from env.prompts import tool_specs
from retriever.queries import decode_answers, gold_evidence_of

log = logging.getLogger(__name__)

try:  # verl's base class when verl is there; the agent loop duck-types tools otherwise
    from verl.tools.base_tool import BaseTool as _BaseTool
except Exception:  # verl missing or its own imports broken: plain classes
    _BaseTool = object


def _row_name(data_source: str, extra_info: dict | None) -> str:
    extra = extra_info if isinstance(extra_info, dict) else {}
    index = extra.get("index", extra.get("id"))
    question = extra.get("question")
    parts = [str(data_source or "row")]
    if index is not None:
        parts.append(f"index {index}")
    if question:
        parts.append(repr(str(question)[:60]))
    return " ".join(parts)


def compute_score_all(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None
) -> dict[str, float]:
    """Every reward of a response (``em``, ``cover_em``, ``f1``, ``format``, ``asearcher``) and
    its number of tool calls (``searches``)."""
    where = _row_name(data_source, extra_info)
    if not isinstance(solution_str, str):
        raise TaskFormatError(
            f"{where}: solution_str must be text, got {type(solution_str).__name__}"
        )
    if not decode_answers(ground_truth):  # None, "" or an empty array: verl's copy in extra_info
        extra = extra_info if isinstance(extra_info, dict) else {}
        for key in ("answer", "golden_answers"):
            if decode_answers(extra.get(key)):
                ground_truth = extra[key]
                break
    answers = answers_of(ground_truth, f"{where}: ground_truth")
    titles, _ = gold_evidence_of({"extra_info": extra_info if isinstance(extra_info, dict) else {}})
    scores = score_text_all(solution_str, answers, titles)
    scores["searches"] = float(num_tool_calls(solution_str))
    return scores


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    reward: str | dict = "em",
    return_dict: bool = False,
    **kwargs,
) -> float | dict[str, float]:
    """verl's reward-function signature. ``ground_truth``: a string, a list or numpy array (as
    verl passes parquet columns), or Search-R1's ``{"target": [...]}``; ``reward`` is a reward
    spec (``env.reward_spec``: a name of ``env.rewards.REWARDS``, ``"f1:1,evidence_recall:0.5"``
    or a dict; evidence rewards read ``extra_info.supporting_titles`` / ``supporting_facts``);
    ``return_dict`` answers ``{"score": ..., <every reward>...}`` (verl logs the extra keys).
    A row without a gold answer raises, naming the row."""
    from env.integrations.scoring import check_reward_name

    spec = check_reward_name(reward)
    scores = compute_score_all(data_source, solution_str, ground_truth, extra_info)
    score = spec.score(scores)
    if return_dict:
        return {"score": score, **scores}
    return score


# ---- tools of verl's multi-turn agent loop ---------------------------------------------------

# the env's own tool-call specs: the model sees the same tools in verl as in the env's prompt
SEARCH_SCHEMA, ACCESS_SCHEMA = tool_specs(("search", "access"))


def _schema_object(schema: dict):
    if _BaseTool is object:
        return schema
    from verl.tools.schemas import OpenAIFunctionToolSchema

    return OpenAIFunctionToolSchema.model_validate(schema)


def _response(text: str):
    if _BaseTool is object:
        return {"text": text}
    from verl.tools.schemas import ToolResponse

    return ToolResponse(text=text)


# the key of verl's ``agent_data.extra_fields`` that holds a trajectory's {url: last page read}
PAGES_READ_FIELD = "access_pages_read"


def train_step_of(create_kwargs: dict, agent_data: Any) -> int:
    """The noise curriculum's step of one tool call. verl's tools never see the trainer's
    ``global_steps``; in order: the row's ``create_kwargs["train_step"]`` (set by the data
    pipeline), else the step verl stamps on each generation (its vLLM server answers with the
    ``global_steps`` of the weights it holds, which the agent loop keeps in
    ``agent_data.extra_fields["max_global_steps"]``), else 0."""
    step = create_kwargs.get("train_step")
    if step is None:
        extra = getattr(agent_data, "extra_fields", None)
        extra = extra if isinstance(extra, dict) else {}
        step = extra.get("max_global_steps", extra.get("global_steps"))
    try:
        return max(int(step), 0) if step is not None else 0
    except (TypeError, ValueError):
        raise TaskFormatError(f"train_step must be an integer >= 0, got {step!r}") from None


class _ServerTool(_BaseTool):
    """Shared part: config, one HTTP client per tool object, a health check at start-up (a dead
    server fails the worker at once, naming the URL, instead of feeding errors to the model)."""

    default_schema: dict = {}
    tool_name = ""

    def __init__(self, config: dict, tool_schema=None):
        from retriever.client import HTTPClient

        self.config = dict(config or {})
        self.tool_schema = (
            tool_schema if tool_schema is not None else _schema_object(self.default_schema)
        )
        self.name = self.tool_name
        url = self.config.get("retrieval_service_url") or self.config.get("url")
        if not url:
            raise TaskFormatError(
                f"{type(self).__name__}: config needs retrieval_service_url (the search server)"
            )
        self.url = url.removesuffix("/retrieve").removesuffix("/access")
        self.client = HTTPClient(self.url, timeout=float(self.config.get("timeout", 60)))
        if self.config.get("check_server", True):
            self.client.health()  # raises ServiceUnavailableError naming the URL
        settings = {
            "style": "tool-call",
            "topk": int(self.config.get("topk", 3)),
            "obs_max_chars": self.config.get("max_chars", 6000),
            "page_chars": int(self.config.get("page_chars", 4000)),
            "max_turns": 1 << 30,
        }
        if self.config.get("retriever"):
            settings["retriever"] = self.config["retriever"]
        if self.config.get("noise") is not None:  # env.noise.noise_config reads every form
            settings["noise"] = self.config["noise"]
        self._settings = settings
        from env.config import make_config
        from env.noise import check_pool_source

        check_pool_source(make_config(**settings).noise, self.client)  # random needs a pool file
        self._instances: dict[str, dict] = {}  # instance id -> its create_kwargs
        self._pool = None  # random-noise passages, read once per tool, shared by its episodes

    def get_openai_tool_schema(self):
        return self.tool_schema

    def _new_env(self, create_kwargs: dict | None = None, agent_data: Any = None):
        from env.search_env import SearchEnv

        env = SearchEnv(self.client, **self._settings)
        if self._pool is None:
            self._pool = env.episode.pool
        env.episode.pool = self._pool
        options: dict[str, Any] = {"question": "(verl tool call)", "answers": []}
        create_kwargs = create_kwargs or {}
        for key in ("supporting_titles", "supporting_ids"):  # gold evidence, for drop-gold noise
            if create_kwargs.get(key) is not None:
                options[key] = list(create_kwargs[key])
        if env.config.noise is not None:
            options["train_step"] = train_step_of(create_kwargs, agent_data)
        env.reset(options=options)
        return env

    async def create(self, instance_id: str | None = None, **kwargs) -> tuple[str, Any]:
        """A tool instance; ``create_kwargs`` (the row's ``tools_kwargs.<tool>.create_kwargs``)
        may carry ``train_step`` and the gold ``supporting_titles`` / ``supporting_ids``."""
        instance_id = instance_id or str(uuid.uuid4())
        create_kwargs = kwargs.get("create_kwargs")
        self._instances[instance_id] = dict(create_kwargs or {})
        return instance_id, _response("")

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs):
        """(response, step reward 0, metrics). Server failures are logged with the URL and
        raised (the agent loop reports them); bad arguments come back as text.

        verl's agent loop creates and releases an instance around every single call, so what
        must last a trajectory (the pages read, for an access without ``page``) is kept in the
        ``agent_data.extra_fields`` it passes: verl's place for a trajectory's tool state."""
        env = self._new_env(self._instances.get(instance_id), kwargs.get("agent_data"))
        extra = getattr(kwargs.get("agent_data"), "extra_fields", None)
        if isinstance(extra, dict):
            pages = extra.get(PAGES_READ_FIELD)
            if not isinstance(pages, dict):
                pages = extra[PAGES_READ_FIELD] = {}
            env.episode.pages_read = pages  # the episode records each page it reads here
        arguments = self._arguments(parameters)
        if isinstance(arguments, str):
            return _response(arguments), 0.0, {"tool_error": 1}
        text = (
            "<tool_call>"
            + json.dumps({"name": self.tool_name, "arguments": arguments})
            + "</tool_call>"
        )
        try:
            obs, _, _, _, info = await env.astep(text)
        except Exception as exc:
            log.error("%s: search server %s failed: %s", self.tool_name, self.url, exc)
            raise
        return _response(obs), 0.0, {"tool_error": int(bool(info.get("error")))}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs) -> None:
        self._instances.pop(instance_id, None)

    def _arguments(self, parameters: dict) -> dict | str:
        raise NotImplementedError


class SearchTool(_ServerTool):
    """``search(query)`` over ``POST /retrieve``; config: ``retrieval_service_url``, ``topk``,
    ``retriever``, ``max_chars``, ``timeout``. Also takes Search-R1's ``query_list``."""

    default_schema = SEARCH_SCHEMA
    tool_name = "search"

    def _arguments(self, parameters: dict) -> dict | str:
        query = parameters.get("query")
        if query is None and isinstance(parameters.get("query_list"), list):
            query = " ".join(str(q) for q in parameters["query_list"])
        if not isinstance(query, str) or not query.strip():
            return "Error: search needs a non-empty 'query' string."
        return {"query": query}


class AccessTool(_ServerTool):
    """``access(url, page)`` over ``POST /access``: one ``page_chars`` chunk of a page; without
    ``page``, the chunk after the last one this trajectory read of that url."""

    default_schema = ACCESS_SCHEMA
    tool_name = "access"

    def _arguments(self, parameters: dict) -> dict | str:
        url = parameters.get("url")
        if not isinstance(url, str) or not url.strip():
            return "Error: access needs a 'url' (a URL from the search results, or a title)."
        arguments: dict[str, Any] = {"url": url}
        if parameters.get("page") not in (None, ""):
            arguments["page"] = parameters["page"]
        return arguments


def tool_config(
    url: str,
    *,
    topk: int = 3,
    access: bool = True,
    max_chars: int = 6000,
    page_chars: int = 4000,
    noise: str | dict | None = None,
) -> str:
    """The YAML of verl's ``tool_config_path`` for our tools against the server at ``url``;
    ``noise``: ``env.noise`` settings of the search results (text or dict)."""
    tools = [("SearchTool", SEARCH_SCHEMA)] + ([("AccessTool", ACCESS_SCHEMA)] if access else [])
    lines = ["tools:"]
    for cls, schema in tools:
        lines += [
            f"  - class_name: env.integrations.verl.{cls}",
            "    config:",
            "      type: native",
            f"      retrieval_service_url: {url}",
            f"      topk: {topk}",
            f"      max_chars: {max_chars}",
            f"      page_chars: {page_chars}",
            *([f"      noise: {json.dumps(noise)}"] if noise is not None else []),
            f"    tool_schema: {json.dumps(schema)}",
        ]
    return "\n".join(lines) + "\n"
