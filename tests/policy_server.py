"""A scripted OpenAI-compatible policy (and judge) server for the evaluation tests.

It answers the way real inference servers do, one ``flavour`` each:

- ``vllm``: cuts a matched stop string and names it in ``stop_reason`` (None at EOS);
- ``sglang``: names it in ``matched_stop`` (an EOS token id when none matched);
- ``vllm-tools``: vLLM with a tool parser: tool calls come back as structured
  ``message.tool_calls`` with server-made ids, the text keeps only the reasoning;
- ``llamacpp``: cuts the stop string WITHOUT naming it, and answers 500 with a validation body
  to a ``tool`` message whose ``tool_call_id`` matches no call of the assistant before it;
- ``strict``: OpenAI's own rules: 400 for such a tool message.

Every flavour checks what the env sends: assistant turns end with the closing tag the policy
wrote (the stop the server cut was restored), tag-style observations keep their
``<information>`` wrapper, and tool messages answer the call before them.

With ``garbage=MODE`` (one of ``GARBAGE_MODES``) the policy's second turn of question ``VICTIM``
is answered 200 with a broken reply instead, as a buggy or misconfigured server (or a proxy in
front of it) sends: wrong shapes, non-JSON, a lone surrogate, a body that trickles.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter

import uvicorn
from env_support import gold_titles
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from env.evaluate import stop_strings

WRONG = 5  # the policy answers this question wrongly every time
FLAKY = 4  # ... and this one wrongly the first time it is asked
GARBLED = 3  # the judge answers this one with text that is not JSON
VICTIM = 1  # with ``garbage=MODE``, this question's second policy turn gets the broken reply


def _message(reply: dict) -> dict:
    return reply["choices"][0]["message"]


def _set(reply: dict, **fields) -> dict:
    _message(reply).update(fields)
    return reply


def _parts(reply: dict) -> dict:
    text = _message(reply)["content"]
    half = len(text) // 2
    parts = [{"type": "text", "text": text[:half]}, {"type": "text", "text": text[half:]}]
    return _set(reply, content=parts)


def _surrogate(reply: dict) -> dict:
    text = _message(reply)["content"]
    return _set(reply, content=text.replace("</think>", " \ud800</think>", 1))


def _json(obj) -> Response:
    return Response(json.dumps(obj), media_type="application/json")  # ASCII: \ud800 escaped


def _bad_utf8(reply: dict) -> Response:
    body = json.dumps(reply).encode().replace(b"</think>", b"\xff</think>", 1)
    return Response(body, media_type="application/json")


async def _trickle(body: bytes):
    for i in range(len(body)):
        yield body[i : i + 1]
        await asyncio.sleep(1.0)


_CALL = {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}
# name -> (what the server answers, given the reply it would have sent; "error" when that
# episode must end with a policy error whose message holds the given text, else "ok": the
# client reads the reply and the episode is scored as usual)
GARBAGE_MODES = {
    "no-choices": (lambda r: _json({"id": "x", "object": "chat.completion"}), "no choices"),
    "choices-empty": (lambda r: _json({**r, "choices": []}), "no choices"),
    "choices-null": (lambda r: _json({**r, "choices": None}), "no choices"),
    "choice-string": (lambda r: _json({**r, "choices": ["<answer>x</answer>"]}), "choice"),
    "message-string": (
        lambda r: _json({**r, "choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]}),
        "message",
    ),
    "message-missing": (
        lambda r: _json({**r, "choices": [{"index": 0, "finish_reason": "stop"}]}),
        "message",
    ),
    "content-text-parts": (lambda r: _json(_parts(r)), "ok"),
    "content-image-part": (
        lambda r: _json(_set(r, content=[{"type": "image_url", "image_url": {"url": "x"}}])),
        "image_url",
    ),
    "content-null": (lambda r: _json(_set(r, content=None)), "no content"),
    "content-null-reasoning": (
        lambda r: _json(_set(r, content=None, reasoning_content="thinking, out of tokens")),
        "ok",
    ),
    "content-number": (lambda r: _json(_set(r, content=42)), "content"),
    "tool-calls-string": (lambda r: _json(_set(r, tool_calls="search(x)")), "tool_calls"),
    "tool-calls-dict": (lambda r: _json(_set(r, tool_calls=_CALL)), "tool_calls"),
    "tool-calls-junk": (lambda r: _json(_set(r, tool_calls=[1, "x", None])), "tool call"),
    "tool-call-no-function": (
        lambda r: _json(_set(r, tool_calls=[{"id": "c1", "type": "function"}])),
        "tool call",
    ),
    "lone-surrogate": (lambda r: _json(_surrogate(r)), "ok"),
    "invalid-utf8": (lambda r: _bad_utf8(r), "ok"),
    "body-not-json": (lambda r: Response("all good", media_type="text/plain"), "non-JSON"),
    "body-empty": (lambda r: Response(b"", media_type="application/json"), "non-JSON"),
    "body-json-list": (lambda r: _json([r]), "not a JSON object"),
    "body-deep-nesting": (
        lambda r: Response("[" * 100_000 + "]" * 100_000, media_type="application/json"),
        "non-JSON",
    ),
    "body-bad-gzip": (
        lambda r: Response(
            json.dumps(r), media_type="application/json", headers={"content-encoding": "gzip"}
        ),
        "cannot be read",
    ),
    "trickle": (
        lambda r: StreamingResponse(
            _trickle(json.dumps(r).encode()), media_type="application/json"
        ),
        "within",
    ),
}
# completions mode: ``choices[0].text`` broken
GARBAGE_TEXT_MODES = {
    "text-null": (lambda r: _json({**r, "choices": [{"index": 0, "text": None}]}), "text"),
    "text-list": (lambda r: _json({**r, "choices": [{"index": 0, "text": ["a"]}]}), "text"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a thread, for a ``with`` block."""

    def __init__(self, app):
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        # generous: the lifespan may load an index, and the first load in a fresh clone compiles
        # the numba kernels (over 20 s on a loaded 2-core machine); a dead thread fails at once
        deadline = time.monotonic() + 180
        while not self.server.started:
            assert self.thread.is_alive(), "server thread ended before it started serving"
            assert time.monotonic() < deadline, "server did not start in 180 s"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def apply_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """Cut at the earliest stop string, as inference servers do; return (text, matched)."""
    best = None
    for s in stops or []:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return (text, None) if best is None else (text[: best[0]], best[1])


def _refuse(flavour: str, message: str) -> JSONResponse:
    if flavour == "llamacpp":  # llama.cpp reports template/validation failures as 500s
        body = {"error": {"code": 500, "message": message, "type": "invalid_request_error"}}
        return JSONResponse(body, status_code=500)
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return JSONResponse(body, status_code=400)


def check_messages(messages: list[dict], style: str) -> str | None:
    """What a strict server would refuse in a chat history, or None."""
    calls: set[str] = set()
    for m in messages:
        role = m.get("role")
        if role == "assistant":
            calls = {c["id"] for c in m.get("tool_calls") or []}
            if not isinstance(m.get("content"), str):
                return "assistant content must be a string"
            if (
                not m.get("tool_calls")
                and m["content"]  # an empty turn has no stop to restore
                and not m["content"].rstrip().endswith(tuple(stop_strings(style)))
            ):
                return f"the stop string was not restored: {m['content'][-80:]!r}"
        elif role == "tool":
            if m.get("tool_call_id") not in calls:
                return f"tool message with tool_call_id {m.get('tool_call_id')!r} answers no call"
            calls.discard(m["tool_call_id"])
    return None


def fake_openai(
    tasks, flavour: str, style: str, garbage: str | None = None
) -> tuple[FastAPI, Counter]:
    """A scripted policy (and judge) keyed by question; ``requests`` counts what it got;
    ``garbage``: a mode of ``GARBAGE_MODES`` (chat) or ``GARBAGE_TEXT_MODES`` (completions)."""
    by_question = {t.question: (i, t) for i, t in enumerate(tasks)}
    asked: Counter = Counter()
    requests: Counter = Counter()
    app = FastAPI()

    def policy_turn(question: str, n_obs: int) -> str:
        i, task = by_question[question]
        titles = gold_titles(task)
        calls = [("search", titles[0]), ("search", titles[1])]
        if style != "search-r1":
            calls.append(("access", titles[1]))
        if n_obs < len(calls):
            name, arg = calls[n_obs]
            if style in ("tool-call", "browser"):
                key = "query" if name == "search" else "url"
                if style == "browser":  # gpt-oss's names; a page is opened by its title
                    name, key = (
                        ("browser.search", key) if name == "search" else ("browser.open", "id")
                    )
                body = json.dumps({"name": name, "arguments": {key: arg}})
                return f"<think>step {n_obs}</think>\n<tool_call>\n{body}\n</tool_call>\n<tool_response>made up"
            return f"<think>step {n_obs}</think>\n<{name}> {arg} </{name}>\n\n<information>made up</information>"
        asked[question] += 1
        answer = task.answers[0]
        if i == WRONG or (i == FLAKY and asked[question] == 1):
            answer = "something else entirely"
        return f"<think>done</think>\n<answer> {answer} </answer> and then some"

    def judge_turn(prompt: str) -> str:
        question = re.search(r"Question: (.*)\n", prompt).group(1)
        gold = json.loads(re.search(r"Gold answers: (.*)\n", prompt).group(1))
        pred = re.search(r"Predicted answer: (.*)\n", prompt).group(1)
        if by_question[question][0] == GARBLED:
            return "Hmm, I would say it is probably right."
        verdict = "Correct" if pred.strip().lower() in [g.lower() for g in gold] else "Incorrect"
        return f'```json\n{{"rationale": "compared", "judgement": "{verdict}"}}\n```'

    def choice(text: str, stops, key: str) -> dict:
        text, matched = apply_stop(text, stops)
        out = {"index": 0, key: text, "finish_reason": "stop"}
        if flavour in ("vllm", "vllm-tools"):
            out["stop_reason"] = matched
        elif flavour == "sglang":
            out["matched_stop"] = matched if matched is not None else 151645  # an EOS id
        return out  # llamacpp, strict: the stop is cut and not named

    def structured(message: dict) -> dict:
        """vLLM's tool parser: ``<tool_call>`` blocks become ``tool_calls`` with made-up ids."""
        text = message["content"] + "</tool_call>"
        blocks = re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S)
        if not blocks:
            return message
        calls = []
        for block in blocks:
            call = json.loads(block)
            requests["tool_call_ids"] += 1
            calls.append(
                {
                    "id": f"chatcmpl-tool-{requests['tool_call_ids']}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
            )
        reasoning = text.split("<tool_call>")[0].strip()
        return {"role": "assistant", "content": reasoning or None, "tool_calls": calls}

    def broken(question: str, n_obs: int, reply: dict, modes: dict) -> Response | None:
        """The garbage reply when this is the victim's second turn, else None."""
        if garbage is None or by_question[question][0] != VICTIM or n_obs != 1:
            return None
        requests["garbage"] += 1
        return modes[garbage][0](reply)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        body = json.loads(raw.decode("utf-8"))  # strict: a lone surrogate would not encode
        requests["chat"] += 1
        requests["replaced"] += "\ufffd" in raw.decode("utf-8")
        messages = body["messages"]
        if body["model"] == "judge":
            text = judge_turn(messages[-1]["content"])
        else:
            assert body["stop"] == stop_strings(style)
            problem = check_messages(messages, style)
            if problem is not None:
                requests["refused"] += 1
                return _refuse(flavour, problem)
            first_user = next(m["content"] for m in messages if m["role"] == "user")
            question = re.search(r"Question: (.*)", first_user).group(1).strip()
            observations = [
                m for m in messages if m["role"] in ("user", "tool") and m["content"] != first_user
            ]
            if style not in ("tool-call", "browser"):  # chat mode keeps the style's wrapper
                for m in observations:
                    requests["wrapped"] += m["content"].startswith("<information>")
            text = policy_turn(question, len(observations))
        c = choice(text, body.get("stop"), "message")
        c["message"] = {"role": "assistant", "content": c.pop("message")}
        if flavour == "vllm-tools":
            c["message"] = structured(c["message"])
        reply = {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [c]}
        if body["model"] != "judge":
            bad = broken(question, len(observations), reply, GARBAGE_MODES)
            if bad is not None:
                return bad
        return reply

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        requests["completions"] += 1
        prompt = body["prompt"]
        question = re.search(r"Question: (.*)", prompt).group(1).strip()
        n_obs = (
            prompt.count("<information>")
            + prompt.count("<tool_response>")
            - prompt.count("between <information>")
        )
        n_obs -= prompt.count("<tool_response>made up")
        text = policy_turn(question, n_obs)
        reply = {
            "id": "x",
            "object": "text_completion",
            "choices": [choice(text, body.get("stop"), "text")],
        }
        return broken(question, n_obs, reply, GARBAGE_TEXT_MODES) or reply

    return app, requests


def fake_judge(stats: dict, delay: float = 0.05):
    """A scripted judge: the verdict follows the predicted answer (``right`` Correct, ``wrong``
    Incorrect, ``garbled`` text out of format, ``slow`` no reply within 3 s); ``stats`` counts
    ``requests`` and the most requests in flight at once (``max_in_flight``)."""
    app = FastAPI()
    stats.update(requests=0, in_flight=0, max_in_flight=0)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        pred = re.search(r"Predicted answer: (.*)\n", body["messages"][-1]["content"]).group(1)
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(3 if pred.startswith("slow") else delay)
        finally:
            stats["in_flight"] -= 1
        if pred.startswith("garbled"):
            text = "I would say it is probably right."
        else:
            verdict = "Correct" if pred.startswith("right") else "Incorrect"
            text = f'{{"rationale": "compared", "judgement": "{verdict}"}}'
        message = {"role": "assistant", "content": text}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


EXTRACTOR_PAGE = re.compile(r"<page>\n(.*)\n</page>", re.S)
_VISIT_GOAL = re.compile(r"visit goal: ([^\n]*)")


def fake_extractor(log: list[dict], stats: Counter | None = None) -> FastAPI:
    """An OpenAI-compatible server that plays the visit tool's extractor (``env.visit``) and a
    policy that calls visit.

    Extractor (a prompt with ``<page>``): the goal's first word picks what it does: ``good``
    answers the JSON asked for, ``garbled`` text out of format, ``slow`` nothing for 5 s,
    ``fussy`` refuses a page over 40 characters as too long (as vLLM refuses a prompt over its
    context), ``wait`` answers after 0.2 s (``stats["max_in_flight"]`` counts the requests in
    flight). Policy (any other request): a question that ends ``visit goal: G`` is answered with
    a visit of the University of Kansas for G (``<visit>`` or a tool call, as the prompt asks),
    then with ``<answer>1865</answer>``."""
    app = FastAPI()
    stats = Counter() if stats is None else stats

    def extract(body: dict, prompt: str):
        goal = re.search(r"Goal: (.*)\n", prompt).group(1)
        page = EXTRACTOR_PAGE.search(prompt).group(1)
        log.append({"goal": goal, "page": page, "model": body["model"]})
        mode = goal.split()[0]
        return goal, page, mode, {"slow": 5.0, "wait": 0.2}.get(mode, 0.0)

    def policy(messages: list[dict], stops) -> dict:
        question = next(m["content"] for m in messages if m["role"] == "user")
        goal = _VISIT_GOAL.search(question).group(1).strip()
        n_obs = sum(m["role"] in ("user", "tool") for m in messages) - 1
        tool_call = messages[0]["role"] == "system" and "<tools>" in messages[0]["content"]
        if n_obs == 0:
            url = "https://en.wikipedia.org/wiki/University_of_Kansas"
            if tool_call:
                call = json.dumps({"name": "visit", "arguments": {"url": url, "goal": goal}})
                text = f"<tool_call>\n{call}\n</tool_call>"
            else:
                text = f"<think>read the page</think>\n<visit> {url} | {goal} </visit>"
        else:
            text = "<think>done</think>\n<answer> 1865 </answer>"
        text, matched = apply_stop(text, stops)
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "finish_reason": "stop", "stop_reason": matched}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if "<page>\n" not in prompt:
            stats["policy"] += 1
            return {"choices": [policy(body["messages"], body.get("stop"))]}
        goal, page, mode, delay = extract(body, prompt)
        waits = mode == "wait"  # only these are counted in flight
        stats["in_flight"] += waits
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(delay)
        finally:
            stats["in_flight"] -= waits
        if mode == "fussy" and len(page) > 40:
            message = "This model's maximum context length is 40 tokens; your prompt is longer"
            error = {"message": message, "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=400)
        if mode == "garbled":
            text = "The page is about a university, I think."
        else:
            text = json.dumps({"rationale": "r", "evidence": page[:40], "summary": f"about {goal}"})
            text = f"```json\n{text}\n```"
        message = {"role": "assistant", "content": text}
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": 17}
        return {
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }

    return app
