"""A minimal OpenAI-compatible client (httpx; no openai package) for policies and judges.

vLLM and SGLang cut a matched stop string from the returned text and name it (``stop_reason``
in vLLM, ``matched_stop`` in SGLang); llama.cpp's server and others cut it without naming it.
``restore_stop`` puts it back either way so the env sees the closing tag the policy wrote.
Retries go through ``retriever.retry`` (the one retry policy); a refused request (4xx, or a
500 whose body is a validation error) is reported at once. A 200 that is not a completion (no
choices, a message that is not an object, content or ``tool_calls`` of the wrong type, not
JSON) is a ``PolicyError`` too, so it ends only its own episode; a bad character in a reply
(invalid UTF-8, a lone surrogate) becomes U+FFFD instead, because a lone surrogate cannot be
encoded and would fail every later request of the episode.

>>> restore_stop("<search>paris", {"finish_reason": "stop", "stop_reason": "</search>"}, ["</search>"])
'<search>paris</search>'
>>> restore_stop("<think>x</think><search>paris", {"finish_reason": "stop"}, ["</search>", "</answer>"])
'<think>x</think><search>paris</search>'
>>> restore_stop("<search>paris", {"finish_reason": "length"}, ["</search>"])
'<search>paris'
>>> parse_judgement('```json\\n{"rationale": "same", "judgement": "Correct"}\\n```')
True
>>> parse_judgement("I think it is right") is None
True
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field

from retriever.retry import Retry, RetryPolicy, arun, retryable_status

from .errors import PolicyError

log = logging.getLogger(__name__)


def restore_stop(text: str, choice: dict, stops: list[str]) -> str:
    """Re-append the stop string a server matched and cut: the one it names (vLLM, SGLang), or,
    when it names none, the closing tag of the tag the text leaves open (llama.cpp)."""
    named = "stop_reason" in choice or "matched_stop" in choice
    matched = choice.get("stop_reason", choice.get("matched_stop"))
    if isinstance(matched, str):
        return text + matched if matched in stops and not text.endswith(matched) else text
    if named or choice.get("finish_reason") != "stop":
        return text  # an EOS token (named as None or an id) or the length limit: nothing was cut
    best = None
    for stop in stops:
        if stop.startswith("</") and stop.endswith(">"):
            opened = text.rfind("<" + stop[2:])
            if opened > text.rfind(stop) and (best is None or opened > best[0]):
                best = (opened, stop)
    return text if best is None else text + best[1]


def is_validation_error(body: str) -> bool:
    """Whether an error body says the request itself was wrong (sending it again cannot help).

    >>> is_validation_error('{"error": {"type": "invalid_request_error", "message": "x"}}')
    True
    >>> is_validation_error('{"detail": [{"loc": ["body"], "msg": "field required"}]}')
    True
    >>> is_validation_error('{"error": {"type": "server_error", "message": "CUDA OOM"}}')
    False
    """
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("detail"), list):  # FastAPI / pydantic request validation
        return True
    err = obj.get("error", obj)
    if not isinstance(err, dict):
        return "validat" in str(err).lower()
    kind = str(err.get("type", "")).lower()
    message = str(err.get("message", "")).lower()
    return kind in ("invalid_request_error", "badrequesterror", "validationerror") or (
        "validat" in message or "invalid" in kind
    )


def tool_calls_to_text(message: dict) -> str:
    """A chat message with native ``tool_calls`` (server-side tool parser) as Hermes text."""
    parts = [message.get("content") or ""]
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {})
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        body = json.dumps({"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
        parts.append(f"<tool_call>\n{body}\n</tool_call>")
    return "\n".join(p for p in parts if p)


_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(value: object) -> object:
    """``value`` (decoded JSON) with every lone surrogate replaced by U+FFFD: JSON may escape
    one (``"\\ud800"``) but UTF-8 cannot carry it, so sending it back would fail.

    >>> scrub({"content": ["a" + chr(0xD800)]}) == {"content": ["a\ufffd"]}
    True
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


def encode_body(body: dict) -> bytes:
    """A request body as UTF-8 JSON; a lone surrogate anywhere in it becomes U+FFFD instead of
    failing the request (and every later one of the episode)."""
    text = json.dumps(body, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def decode_reply(content: bytes, url: str) -> dict:
    """The JSON object of a 200 reply; invalid UTF-8 bytes and lone surrogates become U+FFFD.

    >>> decode_reply(b'{"choices": [{"text": "a\\\\ud800\\xff"}]}', "u")["choices"][0]["text"]
    'a\ufffd\ufffd'
    """
    text = content.decode("utf-8-sig", errors="replace")
    try:
        reply = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise PolicyError(f"{url} answered non-JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(reply, dict):
        kind = type(reply).__name__
        raise PolicyError(f"{url} answered {kind}, not a JSON object: {text[:200]!r}")
    return scrub(reply)


def first_choice(reply: dict) -> dict:
    """``choices[0]`` of a completion reply; PolicyError when there is none or it is not an
    object."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        raise PolicyError(f"the reply has no choices: {str(reply)[:200]}")
    if not isinstance(choices[0], dict):
        raise PolicyError(f"the reply's choice is not an object: {str(choices[0])[:200]}")
    return choices[0]


def content_text(content: object) -> str:
    """A message's ``content`` as text: a string, or OpenAI's list of content parts of type
    ``text`` (some servers answer so), joined.

    >>> content_text([{"type": "text", "text": "<search>a"}, {"type": "text", "text": "</search>"}])
    '<search>a</search>'
    """
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        kind = type(content).__name__
        raise PolicyError(f"the reply's content is a {kind}, not text: {str(content)[:200]}")
    texts = []
    for part in content:
        if not (
            isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ):
            what = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise PolicyError(
                f"the reply's content has a part of type {what!r}; only text parts can be "
                f"read: {str(part)[:200]}"
            )
        texts.append(part["text"])
    return "".join(texts)


def check_tool_calls(calls: object) -> list[dict]:
    """A message's ``tool_calls`` (None or a list of ``{"function": {"name", "arguments"}}``)
    as a list; PolicyError for any other shape."""
    if calls is None:
        return []
    if not isinstance(calls, list):
        kind = type(calls).__name__
        raise PolicyError(f"the reply's tool_calls is a {kind}, not a list: {str(calls)[:200]}")
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(fn, dict)
            and isinstance(fn.get("name"), str)
            and isinstance(fn.get("arguments", {}), (str, dict))
        ):
            raise PolicyError(
                "the reply has a tool call without a function name and arguments: "
                f"{str(call)[:200]}"
            )
    return calls


def message_text(message: object) -> str:
    """The text of a chat reply's message: its content, with native ``tool_calls`` as Hermes
    text. A message with neither is a PolicyError, unless it holds reasoning (vLLM's
    ``reasoning_content`` / ``reasoning``: the model thought until its token budget ran out),
    which is an empty turn."""
    if not isinstance(message, dict):
        kind = "no message" if message is None else f"a message of type {type(message).__name__}"
        raise PolicyError(f"the reply's choice has {kind}, not an object: {str(message)[:200]}")
    text = content_text(message.get("content"))
    if check_tool_calls(message.get("tool_calls")):
        return tool_calls_to_text(message | {"content": text})
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if message.get("content") is None and not isinstance(reasoning, str):
        refusal = message.get("refusal")
        why = f" (refusal: {str(refusal)[:200]})" if refusal else ""
        raise PolicyError(f"the reply's message has no content and no tool calls{why}")
    return text


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings of the policy's requests."""

    max_tokens: int = field(default=1024, metadata={"help": "generated tokens per turn"})
    temperature: float = field(
        default=0.0, metadata={"help": "sampling temperature (1.0 with --samples > 1)"}
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "nucleus sampling: probability mass kept (0 to 1)", "max": 1.0},
    )


class OpenAIClient:
    """``/v1/chat/completions`` and ``/v1/completions``; lost connections, 429 and 5xx are sent
    again (``retriever.retry``: backoff with jitter, ``Retry-After`` honoured), a refused
    request is a ``PolicyError`` at once. ``timeout`` bounds each request as a whole (connect,
    send, wait, read), so a reply that trickles in is cut off too, and sent again."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        retries: int = 3,
        max_connections: int = 256,
        retry_policy: RetryPolicy | None = None,
        http_client=None,
    ):
        """``http_client``: an ``httpx.AsyncClient`` to send through (a trainer's shared pool,
        as AReaL hands its agents); it stays open on ``aclose``, its owner closes it."""
        import httpx

        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.model = model
        self.timeout = timeout
        self.policy = retry_policy or RetryPolicy(retries=retries, backoff=0.5, max_backoff=8.0)
        # sent with each request, not set on the client: a shared client is not ours to change
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def _outcome(self, url: str, response, attempts: int) -> dict:
        """The JSON of a 200; else ``Retry`` for what is worth sending again, PolicyError for
        the rest."""
        code = response.status_code
        if code == 200:
            return decode_reply(response.content, url)
        text = response.text
        what = f"{code}: {text[:300]}"
        if not retryable_status(code, proxy=code >= 500 and not is_validation_error(text)):
            raise PolicyError(f"{url} refused the request ({what})")
        failure = PolicyError(f"{url} failed after {attempts} attempts: {what}")
        raise Retry(failure, response.headers.get("retry-after"))

    async def _post(self, path: str, body: dict) -> dict:
        import httpx

        url = self.base_url + path
        content = encode_body(body)
        headers = {"content-type": "application/json", **self._auth}

        async def attempt(n: int) -> dict:
            try:
                async with asyncio.timeout(self.timeout):  # per request, not per read
                    response = await self._client.post(url, content=content, headers=headers)
            except TimeoutError:
                failure = f"no complete reply within {self.timeout:g} s (the request timeout)"
                raise Retry(
                    PolicyError(f"{url} failed after {n + 1} attempts: {failure}")
                ) from None
            except httpx.TransportError as exc:
                raise Retry(PolicyError(f"{url} failed after {n + 1} attempts: {exc!r}")) from None
            except httpx.HTTPError as exc:  # a body that cannot be decoded (gzip), redirects
                raise PolicyError(f"{url} answered a reply that cannot be read: {exc!r}") from None
            return self._outcome(url, response, n + 1)

        return await arun(self.policy, attempt)

    def _body(
        self, key: str, value: object, stops: list[str], sampling: SamplingConfig, extra: dict
    ) -> dict:
        """The request body both endpoints share; ``key`` is ``messages`` or ``prompt``."""
        body = {
            "model": self.model,
            key: value,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            **extra,
        }
        if stops:
            body["stop"] = stops
        return body

    async def chat(
        self, messages: list[dict], stops: list[str], sampling: SamplingConfig, **extra
    ) -> tuple[str, dict]:
        text, choice, _ = await self.chat_usage(messages, stops, sampling, **extra)
        return text, choice

    async def chat_usage(
        self, messages: list[dict], stops: list[str], sampling: SamplingConfig, **extra
    ) -> tuple[str, dict, dict]:
        """``chat`` plus the reply's ``usage`` (token counts; ``{}`` when the server sends
        none), for callers that account for what each request cost (``env.visit``)."""
        body = self._body("messages", messages, stops, sampling, extra)
        reply = await self._post("/chat/completions", body)
        choice = first_choice(reply)
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        return restore_stop(message_text(choice.get("message")), choice, stops), choice, usage

    async def complete(
        self, prompt: str, stops: list[str], sampling: SamplingConfig, **extra
    ) -> tuple[str, dict]:
        body = self._body("prompt", prompt, stops, sampling, extra)
        choice = first_choice(await self._post("/completions", body))
        text = choice.get("text")
        if not isinstance(text, str):
            raise PolicyError(f"the reply's choice has no text: {str(choice)[:200]}")
        return restore_stop(text, choice, stops), choice

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


JUDGE_PROMPT = """You are an evaluation assistant. Judge whether the predicted answer to the question is correct, given the gold answers (any one of them is enough). Minor wording differences, abbreviations and extra detail that does not contradict the gold answer are fine.

Question: {question}
Gold answers: {answers}
Predicted answer: {prediction}

Reply with a JSON object only: {{"rationale": "<one or two sentences>", "judgement": "Correct" or "Incorrect"}}"""


def json_object_in(text: str | None) -> dict | None:
    """The JSON object of a model's reply (in a code fence or after some words); None when
    there is none.

    The object is the text from the first ``{`` to the last ``}``, found with ``str.find`` and
    ``rfind``: the greedy regex ``{.*}`` did the same but rescanned the rest of the reply from
    every unclosed ``{`` (200k of them: 36 s).

    >>> json_object_in('Sure: ```json\\n{"a": 1}\\n```'), json_object_in("[1]"), json_object_in("{")
    ({'a': 1}, None, None)
    """
    text = text or ""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):  # deep nesting overflows the decoder's recursion
        return None
    return obj if isinstance(obj, dict) else None


def parse_judgement(text: str) -> bool | None:
    """True / False from a judge reply's JSON ``judgement``; None when it cannot be parsed."""
    obj = json_object_in(text)
    verdict = obj.get("judgement", obj.get("judgment")) if obj is not None else None
    if not isinstance(verdict, str):
        return None
    verdict = verdict.strip().lower()
    if verdict in ("correct", "true", "yes"):
        return True
    if verdict in ("incorrect", "false", "no", "wrong"):
        return False
    return None


async def judge(
    client: OpenAIClient,
    question: str,
    answers: list[str],
    prediction: str,
    prompt_template: str = JUDGE_PROMPT,
) -> tuple[bool | None, str]:
    """Ask the judge model; (verdict or None when unparseable or failed, raw reply)."""
    prompt = prompt_template.format(
        question=question, answers=json.dumps(answers, ensure_ascii=False), prediction=prediction
    )
    try:
        text, _ = await client.chat(
            [{"role": "user", "content": prompt}], [], SamplingConfig(max_tokens=512)
        )
    except PolicyError as exc:
        log.warning("judge failed: %s", exc)
        return None, f"error: {exc}"
    return parse_judgement(text), text
