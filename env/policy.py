"""A minimal OpenAI-compatible client (httpx; no openai package) for policies and judges.

vLLM and SGLang cut a matched stop string from the returned text and name it (``stop_reason``
in vLLM, ``matched_stop`` in SGLang); llama.cpp's server and others cut it without naming it.
``restore_stop`` puts it back either way so the env sees the closing tag the policy wrote.
Retries go through ``retriever.retry`` (the one retry policy); a refused request (4xx, or a
500 whose body is a validation error) is reported at once.

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


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings of the policy's requests."""

    max_tokens: int = field(default=1024, metadata={"help": "generated tokens per turn"})
    temperature: float = field(
        default=0.0, metadata={"help": "sampling temperature (1.0 with --samples > 1)"}
    )
    top_p: float = 1.0


class OpenAIClient:
    """``/v1/chat/completions`` and ``/v1/completions``; lost connections, 429 and 5xx are sent
    again (``retriever.retry``: backoff with jitter, ``Retry-After`` honoured), a refused
    request is a ``PolicyError`` at once."""

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
    ):
        import httpx

        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.model = model
        self.policy = retry_policy or RetryPolicy(retries=retries, backoff=0.5, max_backoff=8.0)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers=headers,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def _outcome(self, url: str, response, attempts: int) -> dict:
        """The JSON of a 200; else ``Retry`` for what is worth sending again, PolicyError for
        the rest."""
        code = response.status_code
        if code == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise PolicyError(f"{url} answered non-JSON: {response.text[:200]}") from exc
        text = response.text
        what = f"{code}: {text[:300]}"
        if not retryable_status(code, proxy=code >= 500 and not is_validation_error(text)):
            raise PolicyError(f"{url} refused the request ({what})")
        failure = PolicyError(f"{url} failed after {attempts} attempts: {what}")
        raise Retry(failure, response.headers.get("retry-after"))

    async def _post(self, path: str, body: dict) -> dict:
        import httpx

        url = self.base_url + path

        async def attempt(n: int) -> dict:
            try:
                response = await self._client.post(url, json=body)
            except httpx.TransportError as exc:
                raise Retry(PolicyError(f"{url} failed after {n + 1} attempts: {exc!r}")) from None
            return self._outcome(url, response, n + 1)

        return await arun(self.policy, attempt)

    @staticmethod
    def _choice(reply: dict) -> dict:
        choices = reply.get("choices")
        if not choices or not isinstance(choices, list):
            raise PolicyError(f"the reply has no choices: {str(reply)[:200]}")
        return choices[0]

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
        body = self._body("messages", messages, stops, sampling, extra)
        choice = self._choice(await self._post("/chat/completions", body))
        message = choice.get("message") or {}
        text = (
            tool_calls_to_text(message)
            if message.get("tool_calls")
            else (message.get("content") or "")
        )
        return restore_stop(text, choice, stops), choice

    async def complete(
        self, prompt: str, stops: list[str], sampling: SamplingConfig, **extra
    ) -> tuple[str, dict]:
        body = self._body("prompt", prompt, stops, sampling, extra)
        choice = self._choice(await self._post("/completions", body))
        return restore_stop(choice.get("text") or "", choice, stops), choice

    async def aclose(self) -> None:
        await self._client.aclose()


JUDGE_PROMPT = """You are an evaluation assistant. Judge whether the predicted answer to the question is correct, given the gold answers (any one of them is enough). Minor wording differences, abbreviations and extra detail that does not contradict the gold answer are fine.

Question: {question}
Gold answers: {answers}
Predicted answer: {prediction}

Reply with a JSON object only: {{"rationale": "<one or two sentences>", "judgement": "Correct" or "Incorrect"}}"""

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_judgement(text: str) -> bool | None:
    """True / False from a judge reply's JSON ``judgement``; None when it cannot be parsed."""
    match = _JSON_OBJECT.search(text or "")
    if not match:
        return None
    try:
        obj = json.loads(match.group(0))
    except ValueError:
        return None
    verdict = obj.get("judgement", obj.get("judgment")) if isinstance(obj, dict) else None
    if not isinstance(verdict, str):
        return None
    verdict = verdict.strip().lower()
    if verdict in ("correct", "true", "yes"):
        return True
    if verdict in ("incorrect", "false", "no", "wrong"):
        return False
    return None


async def judge(
    client: OpenAIClient, question: str, answers: list[str], prediction: str
) -> tuple[bool | None, str]:
    """Ask the judge model; (verdict or None when unparseable or failed, raw reply)."""
    prompt = JUDGE_PROMPT.format(
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
