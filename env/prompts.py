"""Prompt templates of the tool syntaxes (the first observation), and JSON-schema tool specs.

>>> tag_prompt(SEARCH_R1_TEMPLATE, "Who wrote Hamlet?", None)[0].endswith("Hamlet?\\n")
True
>>> [t["function"]["name"] for t in tool_specs(("search", "answer"))]
['search', 'answer']
"""

from __future__ import annotations

# Search-R1's template, verbatim (models trained with it expect exactly this text)
SEARCH_R1_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query </search> and it will return the top "
    "searched results between <information> and </information>. You can search as many times "
    "as your want. If you find no further external knowledge needed, you can directly provide "
    "the answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)

ASEARCHER_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query </search>; the top results come back "
    "between <information> and </information>, each as [Doc k](url). To read a whole page, call "
    "<access> url </access>; long pages come in numbered chunks (Page k of N): access the same "
    "url again to read the next one. Make one call per turn. You can search and access as many "
    "times as you want. If you find no further external knowledge needed, you can directly "
    "provide the answer inside <answer> and </answer>, without detailed illustrations. For "
    "example, <answer> Beijing </answer>. Question: {question}\n"
)

# Qwen2.5 / Hermes tool preamble, as their chat templates render a ``tools`` list
TOOL_CALL_SYSTEM = (
    "You are a helpful assistant that answers questions by searching a local copy of "
    "Wikipedia.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
    "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\nFor each function call, return a json object with function "
    "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)

TOOL_CALL_USER = (
    "Answer the question below. Make one tool call per turn; search results come back as "
    "[Doc k](url) entries, long pages in numbered chunks (access the same url again for the "
    "next one). When you know the answer, call answer or write it inside <answer> and "
    "</answer>, as short as possible.\nQuestion: {question}"
)

_SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the local Wikipedia; returns the top passages with their URLs.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to search for"}},
            "required": ["query"],
        },
    },
}
_ACCESS = {
    "type": "function",
    "function": {
        "name": "access",
        "description": "Read a Wikipedia page by URL or title, one numbered chunk at a time.",
        "parameters": {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "description": "a URL from the search results, or a title",
                },
                "page": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "which chunk to read (default: the next unread one)",
                },
            },
            "required": ["url"],
        },
    },
}
_ANSWER = {
    "type": "function",
    "function": {
        "name": "answer",
        "description": "Give the final answer and end the episode.",
        "parameters": {
            "type": "object",
            "properties": {"answer": {"type": "string", "description": "the short final answer"}},
            "required": ["answer"],
        },
    },
}


def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


_CURSOR = {
    "type": "integer",
    "description": "which opened view, the number in brackets before it (default: the last)",
}
# gpt-oss's browser.open and browser.find (their arguments and defaults), and sections
_OPEN = _function(
    "open",
    "Open a link of a view by its number (a search result, a link of a page, a match of find) "
    "or a page by URL or title, shown with numbered lines; without id, scroll the view at "
    "cursor to line loc.",
    {
        "id": {
            "type": ["integer", "string"],
            "description": "a link number of the view at cursor, or a URL or title",
        },
        "cursor": _CURSOR,
        "loc": {"type": "integer", "description": "the first line to show (default: 0)"},
        "num_lines": {"type": "integer", "description": "how many lines to show (default: 40)"},
    },
    [],
)
_FIND = _function(
    "find",
    "Find text in the page at cursor; the matches come back as numbered links that open the "
    "page at them.",
    {
        "pattern": {"type": "string", "description": "the text to look for (case-insensitive)"},
        "cursor": _CURSOR,
        "regex": {"type": "boolean", "description": "pattern is a regular expression"},
    },
    ["pattern"],
)
_SECTIONS = _function(
    "sections",
    "List the sections of a page as numbered links; open one by its number.",
    {
        "id": {"type": "string", "description": "a URL or title (default: the page at cursor)"},
        "cursor": _CURSOR,
    },
    [],
)
# Tongyi DeepResearch's visit (one url here: one call per turn)
_VISIT = _function(
    "visit",
    "Read a page (a URL from the search results) for a goal; returns the evidence the page has "
    "for the goal and a summary.",
    {
        "url": {"type": "string", "description": "the URL (or title) of the page"},
        "goal": {"type": "string", "description": "what to look for in the page"},
    },
    ["url", "goal"],
)
_SPECS = {
    "visit": _VISIT,
    "search": _SEARCH,
    "access": _ACCESS,
    "answer": _ANSWER,
    "open": _OPEN,
    "find": _FIND,
    "sections": _SECTIONS,
}


def tool_specs(tools: tuple[str, ...], prefix: str = "") -> list[dict]:
    """OpenAI-format tool specs of the named tools (``tools=`` of a chat request); ``prefix``
    names them in a namespace (gpt-oss: ``browser.``), the answer tool excepted.

    >>> [t["function"]["name"] for t in tool_specs(("search", "open", "answer"), "browser.")]
    ['browser.search', 'browser.open', 'answer']
    """
    specs = []
    for name in tools:
        spec = _SPECS[name]
        if prefix and name != "answer":
            function = {**spec["function"], "name": prefix + name}
            spec = {**spec, "function": function}
        specs.append(spec)
    return specs


# gpt-oss's browser tool description, for the browser style's system prompt
BROWSER_SYSTEM = (
    "You are a helpful assistant that answers questions by browsing a local copy of "
    "Wikipedia.\n\n# Tools\n\n## browser\n\nTool for browsing.\nThe `cursor` appears in "
    "brackets before each browsing display: `[{{cursor}}]`.\nSearch results and pages show "
    "numbered links `【{{id}}†title】`: open one with browser.open and its id. Pages come with "
    "numbered lines `L{{n}}: `; scroll with browser.open and loc.\n\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\nFor "
    "each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)

BROWSER_USER = (
    "Answer the question below. Make one tool call per turn: search, open results and links "
    "by their numbers, find text in a page. When you know the answer, call answer or write it "
    "inside <answer> and </answer>, as short as possible.\nQuestion: {question}"
)


def tag_prompt(template: str, question: str, system_prompt: str | None) -> tuple[str, list[dict]]:
    """(text prompt, chat messages) of a tag style: the template as the user turn."""
    user = template.format(question=question)
    messages = [{"role": "user", "content": user}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
        return f"{system_prompt}\n\n{user}", messages
    return user, messages
