"""One object per tool syntax: its prompt, tools, observation wrapper, stop strings, hint, parser.

A style is looked up once (``get_style``) by the episode, the formatter and the evaluation
runner; nothing else branches on the style's name.

>>> s = get_style("search-r1")
>>> s.stops, s.tools
(('</search>', '</answer>'), ('search', 'answer'))
>>> s.parse("<search> Paris </search>")
Action(kind='search', arg='Paris', page=None, error=None, reason=None)
>>> get_style("tool-call").wrap("x")
'\\n<tool_response>\\nx\\n</tool_response>\\n'
>>> get_style("asearcher").search_entry(1, {"contents": '"Paris"\\nCapital.', "url": "u"})
('[Doc 1](u):\\n', '"Paris"\\nCapital.', '')
>>> text, messages = get_style("search-r1").prompt("Who wrote Hamlet?")
>>> text.endswith("Question: Who wrote Hamlet?\\n"), messages[0]["role"]
(True, 'user')

``parse_action`` is the parser of one policy turn (the episode's), built from the parts in
``env.parsing``:

>>> parse_action("<think>find it</think><search> Eiffel Tower </search>", "search-r1")
Action(kind='search', arg='Eiffel Tower', page=None, error=None, reason=None)
>>> parse_action("<access>https://en.wikipedia.org/wiki/Paris#page=2</access>", "asearcher").page
2
>>> parse_action('<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>', "tool-call").arg
'x'
>>> parse_action("<search>q", "asearcher").reason
'unclosed_tag'
"""

from __future__ import annotations

import copy
import json

from . import harmony, prompts
from .parsing import (
    MAX_TURN_CHARS,
    drop_blocks,
    find_blocks,
    invalid,
    make_action,
    parse_tool_call,
    strip_thinking,
    tag_calls,
)
from .types import (
    ACCESS,
    ANSWER,
    BROWSE_KINDS,
    FIND,
    OPEN,
    SEARCH,
    SECTIONS,
    STYLES,
    VISIT,
    Action,
)


def _split_contents(doc: dict) -> tuple[str, str]:
    """(title line, text) of a doc; Search-R1 takes the first line of ``contents`` as the title."""
    contents = doc.get("contents")
    if not isinstance(contents, str):
        return f'"{doc.get("title", "")}"', str(doc.get("text", ""))
    head, _, rest = contents.partition("\n")
    return head, rest


class Style:
    """The parts of one tool syntax. Subclasses set the class attributes and override what
    differs; ``parse`` gets the turn with its ``<think>`` blocks already removed."""

    name: str = ""
    tools: tuple[str, ...] = (SEARCH, ACCESS, ANSWER)
    stops: tuple[str, ...] = ()
    checks_turn_format: bool = True  # ASearcher's per-turn format rule applies
    search_joiner: str = "\n\n"
    tag_syntax: bool = True  # tools are called as <tool>...</tool>; stops are their closing tags
    search_as_page: bool = False  # search results shown as a browser view (env.browser)
    link_base: int = 1  # the number of the first search result, as the observation shows it

    @property
    def browses(self) -> bool:
        """Whether any browser tool (open, find, sections) is enabled."""
        return any(t in BROWSE_KINDS for t in self.tools)

    def with_tools(self, tools: tuple[str, ...] | None) -> Style:
        """This style with other tools (``EnvConfig.tools``), e.g. the browser tools added; the
        registry's object is left as it is."""
        if tools is None or tuple(tools) == self.tools:
            return self
        style = copy.copy(self)
        style.tools = tuple(tools)
        if self.tag_syntax:
            style.stops = tuple(f"</{t}>" for t in style.tools)
        return style

    @property
    def hint(self) -> str:
        tools = ["<search>query</search>"]
        if ACCESS in self.tools:
            tools.append("<access>url</access>")
        if OPEN in self.tools:
            tools += ["<open>result or link number, or url</open>", "<open>L40</open>"]
        if FIND in self.tools:
            tools.append("<find>text</find>")
        if SECTIONS in self.tools:
            tools.append("<sections></sections>")
        if VISIT in self.tools:
            tools.append("<visit>url | goal</visit>")
        return f"use one of {', '.join(tools)} or give the final answer as <answer>...</answer>"

    def template(self, template: str) -> str:
        """A tag prompt template with a line on the browser tools when they are enabled (the
        verbatim template otherwise)."""
        notes = []
        if OPEN in self.tools:
            notes.append(
                "<open> k </open> opens search result k, link k of the page shown last, or a "
                "url, with numbered lines; <open> L40 </open> scrolls it to line 40."
            )
        if FIND in self.tools:
            notes.append("<find> text </find> finds text in the page shown last.")
        if SECTIONS in self.tools:
            notes.append(
                "<sections> </sections> lists its sections as numbered links; open one by number."
            )
        if VISIT in self.tools:
            notes.append(
                "<visit> url | goal </visit> reads the page at url (from the search results) and "
                "returns the evidence it has for goal and a summary."
            )
        if not notes:
            return template
        return template.replace("Question: {question}", " ".join(notes) + " Question: {question}")

    def tool_specs(self) -> list[dict] | None:
        """OpenAI tool specs for a chat request's ``tools=`` (None: the prompt explains the tools)."""
        return None

    def for_turn(self, text: str) -> Style:
        """The style that answers the turn ``text``: this one, unless the style accepts a second
        syntax whose observations look different (the browser's harmony calls)."""
        return self

    def prompt(self, question: str, system_prompt: str | None = None) -> tuple[str, list[dict]]:
        """(text prompt for completion endpoints, chat messages) of the first observation."""
        raise NotImplementedError

    def wrap(self, body: str) -> str:
        return f"\n\n<information>\n{body}\n</information>\n\n"

    def invalid_observation(self, error: str) -> str:
        """The observation of a malformed action: what was wrong and how to go on."""
        return f"\nMy previous action is invalid: {error}. Let me try again.\n"

    def page_footer(self, k: int, n: int) -> str:
        """The line under chunk ``k`` of ``n`` of a page that says how to read the next one."""
        return f"\n\n(page {k} of {n}; access the same URL again to read page {k + 1})"

    def chat_messages(
        self, text: str, observation: str, native_calls: list | None = None, turn: int = 0
    ) -> list[dict]:
        """The chat messages of one finished turn: the assistant's text, then the observation as
        a ``user`` message with the style's wrapper (the prompt promised the model those tags)."""
        messages = [{"role": "assistant", "content": text}]
        if observation:
            messages.append({"role": "user", "content": observation.strip("\n")})
        return messages

    def search_entry(self, k: int, doc: dict) -> tuple[str, str, str]:
        """(header, text, tail) of search result ``k``; the text is what a budget may cut."""
        contents = doc.get("contents")
        if not isinstance(contents, str):
            contents = f'"{doc.get("title", "")}"\n{doc.get("text", "")}'
        return f"[Doc {k}]({doc.get('url', '')}):\n", contents, ""

    def parse(self, body: str) -> Action:
        calls = tag_calls(body, self.hint, browse=self.browses or VISIT in self.tools)
        if isinstance(calls, Action):
            return calls
        calls = [c for c in calls if c[0] != "tool_call"]
        if not calls:
            return invalid("no_tool", f"no tool call or answer found; {self.hint}")
        if len(calls) > 1:
            names = ", ".join(f"<{t}>" for t, _ in calls)
            return invalid(
                "two_tools",
                f"{len(calls)} tool calls in one turn ({names}); make one call per turn",
            )
        tag, content = calls[0]
        if tag not in self.tools:
            return invalid("unknown_tool", f"<{tag}> is not available here; {self.hint}")
        return make_action(tag, content)


class ASearcher(Style):
    name = "asearcher"
    stops = ("</search>", "</access>", "</answer>")

    def prompt(self, question: str, system_prompt: str | None = None) -> tuple[str, list[dict]]:
        return prompts.tag_prompt(
            self.template(prompts.ASEARCHER_TEMPLATE), question, system_prompt
        )


class SearchR1(Style):
    name = "search-r1"
    tools = (SEARCH, ANSWER)
    stops = ("</search>", "</answer>")
    search_joiner = ""

    def prompt(self, question: str, system_prompt: str | None = None) -> tuple[str, list[dict]]:
        return prompts.tag_prompt(
            self.template(prompts.SEARCH_R1_TEMPLATE), question, system_prompt
        )

    def wrap(self, body: str) -> str:
        return f"\n\n<information>{body}</information>\n\n"

    def search_entry(self, k: int, doc: dict) -> tuple[str, str, str]:
        title, text = _split_contents(doc)
        return f"Doc {k}(Title: {title}) ", text, "\n"


class ToolCall(Style):
    """Qwen / Hermes function calling: ``<tool_call>{json}</tool_call>`` in the text, or the
    server's structured ``tool_calls``; results come back in ``<tool_response>``."""

    name = "tool-call"
    stops = ("</tool_call>", "</answer>")
    checks_turn_format = False
    tag_syntax = False
    prefix = ""  # the tools' namespace in their names (gpt-oss: "browser.")
    system_template = prompts.TOOL_CALL_SYSTEM  # with ``{tools}``: the tools' JSON specs
    user_template = prompts.TOOL_CALL_USER  # with ``{question}``

    @property
    def hint(self) -> str:
        return (
            'call one tool as <tool_call>{"name": "search", "arguments": {"query": "..."}}'
            "</tool_call>, or give the final answer as <answer>...</answer>"
        )

    def tool_specs(self) -> list[dict]:
        return prompts.tool_specs(self.tools, self.prefix)

    def prompt(self, question: str, system_prompt: str | None = None) -> tuple[str, list[dict]]:
        tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in self.tool_specs())
        system = system_prompt or self.system_template.format(tools=tools)
        user = self.user_template.format(question=question)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return f"{system}\n\n{user}\n", messages

    def wrap(self, body: str) -> str:
        return f"\n<tool_response>\n{body}\n</tool_response>\n"

    def invalid_observation(self, error: str) -> str:
        return self.wrap(f"Error: {error}")

    def page_footer(self, k: int, n: int) -> str:
        """Names the ``page`` argument too: a caller that keeps no state between tool calls
        (verl without its per-trajectory ``agent_data``) reads on only with it."""
        return (
            f"\n\n(page {k} of {n}; to read page {k + 1}, call access with the same url again "
            f'or with "page": {k + 1})'
        )

    def chat_messages(
        self, text: str, observation: str, native_calls: list | None = None, turn: int = 0
    ) -> list[dict]:
        """A turn that called tools: the assistant message carries them as ``tool_calls`` (ids
        from the server, or made up for in-text calls) and each gets a ``tool`` message with
        its ``tool_call_id``, as strict servers demand. A turn without a tool call gets its
        observation as a ``user`` message."""
        calls = _tool_calls(text)
        if not observation or not calls:
            return super().chat_messages(text, observation)
        native = [c for c in native_calls or [] if isinstance(c, dict)]
        ids = [
            (native[i].get("id") if i < len(native) else None) or f"call_{turn}_{i}"
            for i in range(len(calls))
        ]
        content = drop_blocks(text, "<tool_call>", "</tool_call>").strip()
        structured = [
            {
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
            }
            for cid, (name, args) in zip(ids, calls)
        ]
        messages = [{"role": "assistant", "content": content, "tool_calls": structured}]
        body = _unwrap_tool_response(observation)
        for k, (cid, (name, _)) in enumerate(zip(ids, calls)):
            result = body if k == 0 else "Error: one tool call per turn; this one was not run"
            messages.append({"role": "tool", "tool_call_id": cid, "name": name, "content": result})
        return messages

    def parse(self, body: str) -> Action:
        calls = tag_calls(body, self.hint)
        if isinstance(calls, Action):
            return calls
        if not calls:
            return invalid("no_tool", f"no tool call or answer found; {self.hint}")
        if len(calls) > 1:
            return invalid(
                "two_tools", f"{len(calls)} tool calls in one turn; make one call per turn"
            )
        tag, content = calls[0]
        if tag == "tool_call":
            action = parse_tool_call(content)
            if action.valid and action.kind not in self.tools:
                names = ", ".join(self.prefix + t if t != ANSWER else t for t in self.tools)
                return invalid(
                    "unknown_tool", f"{action.kind} is not available here; the tools are {names}"
                )
            return action
        if tag == ANSWER:
            return make_action(ANSWER, content)
        return invalid("unknown_tool", f"<{tag}> is not a tool-call; {self.hint}")


class Browser(ToolCall):
    """gpt-oss's browser: ``browser.search`` shows the results as a view of numbered links,
    ``browser.open`` (id = link number or URL, cursor, loc, num_lines) shows a page with numbered
    lines, ``browser.find`` (pattern, cursor) its matches; ``browser.sections`` lists a page's
    sections. Calls are JSON as in ``tool-call``, or gpt-oss's own harmony messages
    (``to=browser.open ...<|message|>{json}<|call|>``, ``env.harmony``), which are answered as
    gpt-oss's browser answers them; every view starts ``[cursor]``."""

    name = "browser"
    tools = (SEARCH, OPEN, FIND, SECTIONS, ANSWER)
    stops = ("</tool_call>", "</answer>", "<|call|>")
    harmony_turn = False  # this turn was a harmony call (``for_turn``): answered in harmony
    author: str | None = None  # the tool it called (None: none)
    search_as_page = True
    link_base = 0
    prefix = "browser."
    system_template = prompts.BROWSER_SYSTEM
    user_template = prompts.BROWSER_USER

    @property
    def hint(self) -> str:
        return (
            'call one tool as <tool_call>{"name": "browser.search", "arguments": {"query": '
            '"..."}}</tool_call> (or browser.open, browser.find), or give the final answer as '
            "<answer>...</answer>"
        )

    def parse(self, body: str) -> Action:
        """gpt-oss's own harmony calls (``to=browser.search ...<|message|>{json}``, ``env.harmony``)
        as well as ``<tool_call>`` JSON."""
        if harmony.is_harmony(body):
            return harmony.parse_harmony(body, self.tools).action
        return super().parse(body)

    def for_turn(self, text: str) -> Style:
        """A harmony turn is answered as gpt-oss's browser answers: a message from the tool."""
        text = strip_thinking(text) if isinstance(text, str) else ""
        if not harmony.is_harmony(text):
            return self
        style = copy.copy(self)
        style.harmony_turn, style.author = True, harmony.parse_harmony(text, self.tools).recipient
        return style

    def wrap(self, body: str) -> str:
        return harmony.reply(self.author, body) if self.harmony_turn else super().wrap(body)


def _tool_calls(text: str) -> list[tuple[str, object]]:
    """(name, arguments) of every well-formed ``<tool_call>`` JSON block of a turn."""
    out = []
    text = strip_thinking(text)
    for start, end in find_blocks(text, "<tool_call>", "</tool_call>"):
        try:
            call = json.loads(text[start + len("<tool_call>") : end - len("</tool_call>")])
        except (ValueError, RecursionError):
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            args = call.get("arguments", call.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except (ValueError, RecursionError):
                    pass
            out.append((call["name"], args))
    return out


def _unwrap_tool_response(observation: str) -> str:
    text = observation.strip("\n")
    head, tail = "<tool_response>\n", "\n</tool_response>"
    return text[len(head) : -len(tail)] if text.startswith(head) and text.endswith(tail) else text


_REGISTRY: dict[str, Style] = {s.name: s for s in (ASearcher(), SearchR1(), ToolCall(), Browser())}
assert tuple(_REGISTRY) == STYLES


def get_style(style: str | Style) -> Style:
    """The style object of a name (a ``Style`` is returned as is)."""
    if isinstance(style, Style):
        return style
    try:
        return _REGISTRY[style]
    except (KeyError, TypeError):
        raise ValueError(f"style {style!r} is unknown; use one of {', '.join(STYLES)}") from None


def parse_action(text: object, style: str | Style = "asearcher") -> Action:
    """The one tool call or final answer of a policy turn in a style (a name or a ``Style``);
    never raises on bad text. A turn over ``MAX_TURN_CHARS`` is refused unread (``long_turn``)."""
    parser = get_style(style)
    if not isinstance(text, str):
        return invalid("not_text", f"the action must be text, got {type(text).__name__}")
    if len(text) > MAX_TURN_CHARS:
        return invalid(
            "long_turn",
            f"the turn has {len(text):,} characters, more than the {MAX_TURN_CHARS:,} that are "
            "read; think briefly and make one tool call or answer",
        )
    return parser.parse(strip_thinking(text))
