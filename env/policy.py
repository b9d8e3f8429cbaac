"""A minimal OpenAI-compatible client (httpx; no openai package) for policies and judges.

vLLM and SGLang cut a matched stop string from the returned text and name it (``stop_reason``
in vLLM, ``matched_stop`` in SGLang); ``restore_stop`` puts it back so the env sees the closing
tag the policy wrote.

>>> restore_stop("<search>paris", {"finish_reason": "stop", "stop_reason": "</search>"}, ["</search>"])
'<search>paris</search>'
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
from dataclasses import dataclass

from .errors import PolicyError

log = logging.getLogger(__name__)


def restore_stop(text: str, choice: dict, stops: list[str]) -> str:
    """Re-append the stop string the server matched and cut (vLLM / SGLang behaviour)."""
    matched = choice.get("stop_reason", choice.get("matched_stop"))
    if isinstance(matched, str) and matched in stops and not text.endswith(matched):
        return text + matched
    return text


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
    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0


class OpenAIClient:
    """``/v1/chat/completions`` and ``/v1/completions`` with retries on 5xx and lost connections."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        retries: int = 3,
        max_connections: int = 256,
    ):
        import httpx

        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.model = model
        self.retries = retries
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers=headers,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def _post(self, path: str, body: dict) -> dict:
        import httpx

        last: object = None
        for attempt in range(self.retries + 1):
            try:
                response = await self._client.post(self.base_url + path, json=body)
            except httpx.TransportError as exc:
                last = exc
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise PolicyError(
                            f"{self.base_url}{path} answered non-JSON: {response.text[:200]}"
                        ) from exc
                last = f"{response.status_code}: {response.text[:300]}"
                if response.status_code < 500 and response.status_code != 429:
                    raise PolicyError(f"{self.base_url}{path} refused the request ({last})")
            if attempt < self.retries:
                await asyncio.sleep(min(0.5 * 2**attempt, 8.0))
        raise PolicyError(f"{self.base_url}{path} failed after {self.retries + 1} attempts: {last}")

    @staticmethod
    def _choice(reply: dict) -> dict:
        choices = reply.get("choices")
        if not choices or not isinstance(choices, list):
            raise PolicyError(f"the reply has no choices: {str(reply)[:200]}")
        return choices[0]

    async def chat(
        self, messages: list[dict], stops: list[str], sampling: SamplingConfig, **extra
    ) -> tuple[str, dict]:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            **extra,
        }
        if stops:
            body["stop"] = stops
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
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            **extra,
        }
        if stops:
            body["stop"] = stops
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
