"""Tool calls in OpenAI's harmony format, as gpt-oss writes them, and the tool messages it reads.

gpt-oss calls its browser with a message addressed to the tool, e.g.
``<|start|>assistant<|channel|>commentary to=browser.search <|constrain|>json<|message|>
{"query": "...", "topn": 5}<|call|>``; the recipient may also sit in the role part
(``assistant to=browser.open<|channel|>...``), ``<|constrain|>json`` may be missing, and a server
may have cut the leading ``<|start|>assistant`` and the final ``<|call|>``. It thinks on the
``analysis`` channel and answers on ``final``. The tool's answer is a message from the tool,
``<|start|>browser.search to=assistant<|channel|>commentary<|message|>...<|end|>``, after which
the model writes ``<|start|>assistant`` itself.

>>> call = parse_harmony('<|channel|>commentary to=browser.find <|constrain|>json<|message|>{"pattern": "Rand"}<|call|>')
>>> call.recipient, call.action.kind, call.action.arg
('browser.find', 'find', 'Rand')
>>> parse_harmony("<|channel|>analysis<|message|>done<|end|><|start|>assistant<|channel|>final<|message|>Paris").action.arg
'Paris'
>>> reply("browser.open", "[1] Paris")
'<|start|>browser.open to=assistant<|channel|>commentary<|message|>[1] Paris<|end|>'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .parsing import call_action, invalid, make_action, tag_calls
from .types import ANSWER, Action

MESSAGE = "<|message|>"
NAMESPACES = ("browser", "functions")  # gpt-oss's browser tool; harmony's function tools
_STOP = re.compile(r"<\|(?:end|call|return|start)\|>")
_RECIPIENT = re.compile(r"(?:^|[\s>])to=([^\s<]+)")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")


def is_harmony(text: str) -> bool:
    """Whether a turn is written in harmony (it has a ``<|message|>``)."""
    return MESSAGE in text


def messages(text: str) -> list[tuple[str, str]]:
    """(header, body) of each message of a turn: the header is what stands before
    ``<|message|>`` (role, channel, recipient, content type), the body runs to ``<|end|>``,
    ``<|call|>``, ``<|return|>``, the next ``<|start|>`` or the end. One pass over the text.

    >>> messages("<|channel|>analysis<|message|>hm<|end|><|start|>assistant to=browser.x<|message|>{}")
    [('<|channel|>analysis', 'hm'), ('assistant to=browser.x', '{}')]
    """
    out: list[tuple[str, str]] = []
    pos = 0
    while (at := text.find(MESSAGE, pos)) >= 0:
        head = text[pos:at]
        start = head.rfind("<|start|>")
        head = head[start + len("<|start|>") :] if start >= 0 else head
        body_at = at + len(MESSAGE)
        stop = _STOP.search(text, body_at)
        out.append((head.strip(), text[body_at : stop.start() if stop else len(text)]))
        if stop is None:
            break
        pos = stop.start() if stop.group() == "<|start|>" else stop.end()
    return out


def recipient(head: str) -> str | None:
    """The ``to=`` recipient of a message header (``browser.search``), or None."""
    m = _RECIPIENT.search(head)
    return m.group(1) if m else None


def channel(head: str) -> str | None:
    """The ``<|channel|>`` of a message header (analysis, commentary, final), or None."""
    m = _CHANNEL.search(head)
    return m.group(1) if m else None


@dataclass(frozen=True)
class HarmonyCall:
    """A parsed harmony turn: its action and the tool it addressed (None: no tool call)."""

    action: Action
    recipient: str | None = None


def parse_harmony(text: str, tools: tuple[str, ...] | None = None) -> HarmonyCall:
    """The one tool call (``to=browser.X`` or ``to=functions.X``) or final answer of a harmony
    turn; never raises. ``tools``: the tool names available (others are ``unknown_tool``)."""
    found = messages(text)
    calls = [(to, body) for head, body in found if (to := recipient(head)) is not None]
    if len(calls) > 1:
        names = ", ".join(to for to, _ in calls)
        error = f"{len(calls)} tool calls in one turn ({names}); make one call per turn"
        return HarmonyCall(invalid("two_tools", error), calls[0][0])
    if calls:
        to, body = calls[0]
        space, _, name = to.rpartition(".")
        if space not in NAMESPACES or (tools is not None and name not in tools):
            have = ", ".join(f"browser.{t}" for t in tools or () if t != ANSWER)
            error = f"Unknown function: {to[:80]}; the tools are {have or 'none'}"
            return HarmonyCall(invalid("unknown_tool", error), to)
        args = _arguments(to, body)
        return HarmonyCall(args if isinstance(args, Action) else call_action(name, args), to)
    finals = [body for head, body in found if channel(head) == "final"]
    if finals:  # the answer, or the <answer> inside it
        tagged = tag_calls(finals[-1], "")
        answers = [] if isinstance(tagged, Action) else [c for t, c in tagged if t == ANSWER]
        return HarmonyCall(make_action(ANSWER, answers[-1] if answers else finals[-1]))
    error = (
        "no tool call or final answer found; call a tool as <|channel|>commentary "
        'to=browser.search <|constrain|>json<|message|>{"query": "..."}<|call|>, or answer '
        "on the final channel"
    )
    return HarmonyCall(invalid("no_tool", error))


def _arguments(to: str, body: str) -> dict | Action:
    """The JSON object a call carries (an empty body: no arguments, as gpt-oss reads it)."""
    body = body.strip()
    if not body:
        return {}
    try:
        args = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return invalid(
            "bad_json",
            f"the arguments of {to[:80]} are not valid JSON ({exc}); write one JSON object "
            'after <|message|>, e.g. {"query": "..."}',
        )
    if not isinstance(args, dict):
        return invalid("bad_arguments", f"the arguments of {to[:80]} must be a JSON object")
    return args


def reply(author: str | None, body: str) -> str:
    """A tool's answer as gpt-oss reads it: a message from the tool (``author``) to the
    assistant; a turn that called no tool is answered as the user."""
    if author is None:
        return f"<|start|>user<|message|>{body}<|end|>"
    return f"<|start|>{author} to=assistant<|channel|>commentary<|message|>{body}<|end|>"
