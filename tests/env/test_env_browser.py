"""The browser tools in the env (``env.browser``): the ``browser`` style (gpt-oss's
browser.search / browser.open / browser.find) and ``open``/``find``/``sections`` enabled in an
existing style with ``EnvConfig.tools``, over the real store of the Wikipedia XML sample (its
sections and links), in process and through a live server."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import XML_SAMPLE

from env.batched import BatchedSearchEnv
from env.errors import ConfigError
from env.search_env import SearchEnv
from env.types import EnvConfig

pytestmark = pytest.mark.timeout(180)

QUESTION = {"question": "Who wrote Atlas Shrugged?", "answers": ["Ayn Rand"]}
TAG_TOOLS = ("search", "access", "open", "find", "sections")
EVIL = r"(.|\s)*\d{9}"  # backtracks about 0.3 s on each line of prose: seconds on a page


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The XML sample's corpus (pages with sections and links) with a BM25 part."""
    from index_build.__main__ import main
    from retriever.server.service import RetrievalService
    from retriever.server.service_config import ServiceConfig

    out = tmp_path_factory.mktemp("env-browser") / "index"
    assert main(["corpus", "--input", str(XML_SAMPLE), "--out", str(out), "--no-progress"]) == 0
    assert main(["bm25", "--index", str(out), "--no-progress"]) == 0
    return RetrievalService(ServiceConfig(index=out, max_wait_ms=1))


@pytest.fixture(scope="module")
def live(service):
    """The same service over HTTP (started first: it starts the service's workers)."""
    from retriever_fakes import LiveServer

    with LiveServer(service) as server:
        yield server


@pytest.fixture(scope="module")
def client(service, live):
    from retriever.client.inprocess import InProcessClient

    return InProcessClient(service)


class Counting:
    """A client that counts the backend calls the env makes (the batching checks)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def retrieve(self, queries, topk=3, retriever=None):
        self.calls.append(("retrieve", len(queries)))
        return self.inner.retrieve(queries, topk=topk, retriever=retriever)

    def browse(self, requests):
        self.calls.append(("browse", len(requests)))
        return self.inner.browse(requests)


def call(name: str, **arguments) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def _link(observation: str, anchor: str) -> int:
    """The number of the link whose anchor text is ``anchor`` in a view."""
    m = re.search(rf"【(\d+)†{re.escape(anchor)}】", observation)
    assert m is not None, f"no link {anchor!r} in {observation[:500]}"
    return int(m.group(1))


# ---- a scripted episode: search, open a result by number, scroll, find, follow a link --------
def browser_episode(client) -> list[str]:
    """gpt-oss's browser style, numbers read from what the env showed."""
    env = SearchEnv(client, style="browser", topk=5)
    obs, info = env.reset(options=QUESTION)
    assert [t["function"]["name"] for t in info["tools"]] == [
        "browser.search",
        "browser.open",
        "browser.find",
        "browser.sections",
        "answer",
    ]
    shown = []

    def step(text: str) -> str:
        o, _, terminated, truncated, info = env.step(text)
        assert info["error"] is None, info["error"]
        shown.append(o)
        return o

    results = step(call("browser.search", query="Ayn Rand novelist Atlas Shrugged"))
    step(call("browser.open", id=_link(results, "Ayn Rand")))
    step(call("browser.open", loc=40, num_lines=10))  # scroll the page at the last cursor
    found = step(call("browser.find", pattern="objectivism", cursor=1))
    match = step(call("browser.open", id=0))  # the first match, on the find view
    toc = step(call("browser.sections", cursor=1))
    step(call("browser.open", id=_link(toc, "Early life")))
    page = step(call("browser.open", cursor=1))
    step(call("browser.open", id=_link(page, "Aristotle"), cursor=1))  # follow a link
    o, reward, terminated, _, _ = env.step("<answer>Ayn Rand</answer>")
    assert terminated and reward == 1.0
    assert found and match
    return shown


def tag_episode(client, style: str = "asearcher") -> list[str]:
    """The same walk in a tag style with the browser tools enabled (results as [Doc k])."""
    env = SearchEnv(client, style=style, topk=5, tools=TAG_TOOLS)
    obs, _ = env.reset(options=QUESTION)
    assert "<open> k </open> opens search result k" in obs
    shown = []

    def step(text: str) -> str:
        o, _, _, _, info = env.step(text)
        assert info["error"] is None, info["error"]
        shown.append(o)
        return o

    results = step("<search> Ayn Rand novelist Atlas Shrugged </search>")
    k = re.search(r"\[Doc (\d+)\]\(https://en.wikipedia.org/wiki/Ayn_Rand\)", results)
    assert k is not None, results
    step(f"<open> {k.group(1)} </open>")
    step("<open> L40 </open>")
    step("<find> objectivism </find>")
    step("<open> 0 </open>")
    toc = step("<sections></sections>")
    step(f"<open> {_link(toc, 'Early life')} </open>")
    page = step("<open> https://en.wikipedia.org/wiki/Ayn_Rand | L0 </open>")
    step(f"<open> {_link(page, 'Aristotle')} </open>")
    _, reward, terminated, _, _ = env.step("<answer> Ayn Rand </answer>")
    assert terminated and reward == 1.0
    return shown


def _check_walk(shown: list[str], first: int) -> None:
    """What every walk shows, ``first`` the cursor of the opened page."""
    assert f"[{first}] Ayn Rand (https://en.wikipedia.org/wiki/Ayn_Rand)" in shown[1]
    assert "**viewing lines [0 - 39] of " in shown[1] and "\nL0: " in shown[1]
    assert "**viewing lines [40 - " in shown[2] and "\nL40: " in shown[2]
    assert "Find results for text: `objectivism` in `Ayn Rand`" in shown[3]
    line = int(re.search(r"# 【0†match at L(\d+)】", shown[3]).group(1))
    assert f"\nL{line}: " in shown[4] and "objectivism" in shown[4].lower()
    assert "Sections of `Ayn Rand`" in shown[5] and "Early life" in shown[5]
    assert re.search(r"\nL\d+: Early life\n", shown[6])  # opened at the heading
    assert "] Aristotle (https://en.wikipedia.org/wiki/Aristotle)" in shown[8]


def test_browser_style_episode_same_in_process_and_over_http(live, client):
    from retriever.client.http import HTTPClient

    in_process = browser_episode(client)
    with HTTPClient(live.url) as http:
        over_http = browser_episode(http)
    assert over_http == in_process
    assert in_process[0].startswith("\n<tool_response>\n[0] Search results for `Ayn Rand")
    assert "L0: # 【" in in_process[0]
    _check_walk(in_process, first=1)
    # cursors count every view: search 0, page 1, scroll 2, find 3, match 4, sections 5, ...
    assert "\n[4] Ayn Rand (" in in_process[4] and "\n[8] Aristotle" in in_process[8]


def test_tag_style_with_browser_tools_same_in_process_and_over_http(live, client):
    from retriever.client.http import HTTPClient

    in_process = tag_episode(client)
    with HTTPClient(live.url) as http:
        over_http = tag_episode(http)
    assert over_http == in_process
    assert in_process[0].startswith("\n\n<information>\n[Doc 1](")  # the style's own results
    assert in_process[1].startswith("\n\n<information>\n[1] Ayn Rand (")
    _check_walk(in_process, first=1)


def test_tool_call_style_with_browser_tools(client):
    env = SearchEnv(client, style="tool-call", tools=("search", "open", "find"))
    _, info = env.reset(options=QUESTION)
    assert [t["function"]["name"] for t in info["tools"]] == ["search", "open", "find", "answer"]
    env.step(call("search", query="Ayn Rand"))
    o, _, _, _, info = env.step(call("open", id="Ayn Rand", loc=3, num_lines=2))
    assert info["error"] is None and "**viewing lines [3 - 4] of " in o
    o, _, _, _, info = env.step(call("access", url="Ayn Rand"))  # not enabled
    assert info["reason"] == "unknown_tool" and "open" in info["error"]


# ---- bad input: tool errors, never a stall or an exception ---------------------------------
@pytest.mark.parametrize(
    "actions, error",
    [
        ([call("browser.find", pattern="x")], "No pages to access!"),
        ([call("browser.open", id=0)], "No pages to access!"),
        ([call("browser.open", id="No such page zz")], "no page 'No such page zz'"),
        ([call("browser.search", query="Ayn Rand"), call("browser.open", id=99)], "Invalid link id `99`"),
        ([call("browser.search", query="Ayn Rand"), call("browser.open", id=0, cursor=7)], "Cursor `7` is out of range"),
        ([call("browser.search", query="Ayn Rand"), call("browser.find", pattern="x")], "Cannot run `find` on search results"),
        ([call("browser.open", id="Ayn Rand", loc=99999)], "Invalid location parameter: `99999`"),
        ([call("browser.open", id="Ayn Rand"), call("browser.find", pattern=EVIL, regex=True)], "took over 0.2 s"),
        ([call("browser.open", id="Ayn Rand"), call("browser.find", pattern="(x", regex=True)], "not a valid regex"),
    ],
)  # fmt: skip
def test_bad_input_is_a_tool_error(client, actions, error):
    env = SearchEnv(client, style="browser")
    env.reset(options=QUESTION)
    t = time.monotonic()
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
    assert time.monotonic() - t < 5
    assert error in info["error"] and error in obs and obs.startswith("\n<tool_response>\nError: ")
    assert not terminated and not truncated and info["counts"]["tool_error"] == 1
    # the episode goes on: the stack is as before the failed call
    obs, *_, info = env.step(call("browser.open", id="Aristotle"))
    assert info["error"] is None and "Aristotle (" in obs


def test_bad_arguments_are_format_errors(client):
    env = SearchEnv(client, style="asearcher", tools=TAG_TOOLS)
    env.reset(options=QUESTION)
    for text, reason in [
        ("<find>  </find>", "empty_pattern"),
        ("<open> Ayn Rand | Lx </open>", "bad_arguments"),
        ("<open>3</open><find>x</find>", "two_tools"),
    ]:
        _, _, _, _, info = env.step(text)
        assert info["reason"] == reason, (text, info)
    _, _, _, _, info = env.step("<open> 4 </open>")  # no search yet: nothing to number
    assert "No pages to access!" in info["error"]
    results, *_ = env.step("<search> Ayn Rand </search>")
    k = re.search(r"\[Doc (\d+)\]\(https://en.wikipedia.org/wiki/Ayn_Rand\)", results).group(1)
    toc, *_, info = env.step(f"<sections> {k} </sections>")  # of a result, by its number
    assert info["error"] is None and "Sections of `Ayn Rand`" in toc
    plain = SearchEnv(client, style="asearcher")  # without the tools the tags are no calls
    plain.reset(options=QUESTION)
    assert plain.step("<open> 1 </open>")[4]["reason"] == "no_tool"


def test_a_backend_without_browse_is_a_tool_error(client):
    class SearchOnly:
        def retrieve(self, queries, topk=3, retriever=None):
            return client.retrieve(queries, topk=topk, retriever=retriever)

    env = SearchEnv(SearchOnly(), style="browser")
    env.reset(options=QUESTION)
    env.step(call("browser.search", query="Ayn Rand"))
    obs, _, _, _, info = env.step(call("browser.open", id=0))
    assert "cannot browse" in info["error"]


def test_unknown_tools_are_refused_at_config():
    with pytest.raises(ConfigError, match=r"unknown tools \['browse'\]"):
        EnvConfig(tools=("search", "browse"))
    assert EnvConfig(tools="search,open").tools == ("search", "open", "answer")


# ---- batched = one by one, one browse call per step ----------------------------------------
SCRIPTS = [
    [
        call("browser.search", query="Ayn Rand"),
        call("browser.open", id=0),
        call("browser.find", pattern="novel"),
        "<answer>Ayn Rand</answer>",
    ],
    [
        call("browser.open", id="Aristotle"),
        call("browser.open", loc=20, num_lines=5),
        call("browser.open", id=99),
        "<answer>x</answer>",
    ],
    [
        call("browser.open", id="No such page zz"),
        call("browser.open", id="Anarchism"),
        call("browser.sections"),
        call("browser.open", id=1),
    ],
]


def test_batched_equals_one_by_one_with_one_browse_call_per_step(client):
    alone = []
    for script in SCRIPTS:
        env = SearchEnv(client, style="browser")
        env.reset(options=QUESTION)
        alone.append([env.step(a)[0] for a in script])
    counting = Counting(client)
    benv = BatchedSearchEnv(counting, num_envs=len(SCRIPTS), style="browser")
    benv.reset(options=[QUESTION] * len(SCRIPTS))
    together = [[] for _ in SCRIPTS]
    for turn in range(4):
        counting.calls.clear()
        obs = benv.step([s[turn] for s in SCRIPTS])[0]
        for i, o in enumerate(obs):
            together[i].append(o)
        browse_calls = [c for c in counting.calls if c[0] == "browse"]
        assert len(browse_calls) <= 1, counting.calls  # all views of a step in one call
    assert together == alone
    assert "no page 'No such page zz'" in together[2][0]


def test_views_keep_the_observation_budget(client):
    env = SearchEnv(client, style="browser", obs_max_chars=400)
    env.reset(options=QUESTION)
    for action in [
        call("browser.search", query="Ayn Rand"),
        call("browser.open", id="Ayn Rand", num_lines=200),
        call("browser.find", pattern="novel"),
        call("browser.open", id=999),
    ]:
        obs, *_ = env.step(action)
        assert len(obs) <= 400 and obs.startswith("\n<tool_response>\n")


async def test_coroutines_share_one_browse_call(client):
    import asyncio

    class AsyncCounting(Counting):
        async def abrowse(self, requests):
            self.calls.append(("browse", len(requests)))
            return client.browse(requests)

    counting = AsyncCounting(client)
    benv = BatchedSearchEnv(counting, num_envs=3, style="browser")
    await benv.areset(options=[QUESTION] * 3)
    titles = ["Ayn Rand", "Aristotle", "No such page zz"]
    results = await asyncio.gather(
        *(benv.astep_one(i, call("browser.open", id=t)) for i, t in enumerate(titles))
    )
    assert counting.calls == [("browse", 3)]
    assert results[0][0].startswith("\n<tool_response>\n[0] Ayn Rand (")
    assert results[1][4]["error"] is None and "no page" in results[2][4]["error"]


def test_browser_and_tool_call_prompts_use_their_own_templates():
    """Both function-calling styles build the prompt one way, each from its own templates (the
    browser's names the ``browser.*`` tools); a given system prompt replaces the template."""
    from env import prompts
    from env.styles import get_style

    for name, system_t, user_t in (
        ("tool-call", prompts.TOOL_CALL_SYSTEM, prompts.TOOL_CALL_USER),
        ("browser", prompts.BROWSER_SYSTEM, prompts.BROWSER_USER),
    ):
        style = get_style(name)
        tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in style.tool_specs())
        text, messages = style.prompt("who wrote hamlet")
        system, user = system_t.format(tools=tools), user_t.format(question="who wrote hamlet")
        assert messages == [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ]
        assert text == f"{system}\n\n{user}\n"
        assert style.prompt("q", "be brief")[1][0] == {"role": "system", "content": "be brief"}
    assert '"browser.search"' in get_style("browser").prompt("q")[0]


# ---- gpt-oss's harmony calls: parsed, run and answered as gpt-oss's browser answers ----------
HARMONY_VARIANTS = [
    # the full message, the recipient on the channel, json constrained
    "<|start|>assistant<|channel|>commentary to={to} <|constrain|>json<|message|>{args}<|call|>",
    # the server cut <|start|>assistant (the prompt ended with it) and <|call|> (a stop token)
    "<|channel|>commentary to={to} <|constrain|>json<|message|>{args}",
    # no <|constrain|>: a bare content type, and thinking first
    "<|channel|>analysis<|message|>Let me look.<|end|><|start|>assistant<|channel|>commentary "
    "to={to} json<|message|>{args}<|call|>",
    # the recipient in the role part, nothing between it and <|message|> but the channel
    "<|start|>assistant to={to}<|channel|>commentary<|message|>{args}<|call|>",
]


def harmony(name: str, variant: int = 0, **arguments) -> str:
    return HARMONY_VARIANTS[variant].format(to=name, args=json.dumps(arguments))


def harmony_reply(author: str, body: str) -> str:
    return f"<|start|>{author} to=assistant<|channel|>commentary<|message|>{body}<|end|>"


def _unwrap(obs: str) -> str:
    head, tail = "\n<tool_response>\n", "\n</tool_response>\n"
    assert obs.startswith(head) and obs.endswith(tail), obs[:200]
    return obs[len(head) : -len(tail)]


def test_harmony_calls_show_the_json_calls_views_in_harmony(client):
    """Every harmony variant of every call runs like its ``<tool_call>`` JSON twin; the view comes
    back as a message from the tool (``browser.open to=assistant``), not in <tool_response>."""
    scout = SearchEnv(client, style="browser")
    scout.reset(options=QUESTION)
    page = scout.step(call("browser.open", id="Ayn Rand", num_lines=500))[0]
    aristotle = _link(page, "Aristotle")
    script = [
        ("browser.search", {"query": "Ayn Rand novelist Atlas Shrugged", "topn": 5}),
        ("browser.open", {"id": 0}),  # result 0 of the search view
        ("browser.open", {"cursor": 1, "loc": 40, "num_lines": 10}),  # scroll the page
        ("browser.find", {"pattern": "Objectivism", "cursor": 1}),
        ("browser.open", {"id": 0, "cursor": 3}),  # the first match
        ("browser.open", {"id": "https://en.wikipedia.org/wiki/Aristotle", "loc": 10}),
        ("browser.sections", {}),
        # a link of the page at cursor 1, as gpt-oss's own example
        ("browser.open", {"id": aristotle, "cursor": 1, "loc": 10, "num_lines": 40}),
    ]
    for variant in range(len(HARMONY_VARIANTS)):
        as_json, as_harmony = SearchEnv(client, style="browser"), SearchEnv(client, style="browser")
        as_json.reset(options=QUESTION)
        as_harmony.reset(options=QUESTION)
        for name, args in script:
            want, *_, want_info = as_json.step(call(name, **args))
            got, reward, terminated, truncated, info = as_harmony.step(
                harmony(name, variant, **args)
            )
            assert want_info["error"] is None, (name, args, want_info["error"])
            assert info["error"] is None and info["action"] == name.removeprefix("browser.")
            assert got == harmony_reply(name, _unwrap(want)), (variant, name, got[:300])
            assert (reward, terminated, truncated) == (0.0, False, False)
        assert "] Aristotle (" in got and "**viewing lines [10 - 49] of " in got
        assert got.count("\nL") == 40
        answer = "<|channel|>analysis<|message|>Rand.<|end|><|start|>assistant<|channel|>final"
        obs, reward, terminated, *_ = as_harmony.step(answer + "<|message|>Ayn Rand<|return|>")
        assert terminated and reward == 1.0 and obs == ""


@pytest.mark.parametrize(
    "action, reason, says, author",
    [
        (harmony("browser.nope", query="x"), "unknown_tool", "Unknown function: browser.nope", "browser.nope"),
        (harmony("python", query="x"), "unknown_tool", "Unknown function: python", "python"),
        (harmony("browser.visit", url="x", goal="y"), "unknown_tool", "browser.search, browser.open", "browser.visit"),
        ("<|channel|>commentary to=browser.search json<|message|>{\"query\": \"Ayn<|call|>", "bad_json", "not valid JSON", "browser.search"),
        ("<|channel|>commentary to=browser.open<|message|>[3, 1]<|call|>", "bad_arguments", "must be a JSON object", "browser.open"),
        (harmony("browser.find", pattern=""), "empty_pattern", "non-empty pattern", "browser.find"),
        (harmony("browser.open", id=1.5), "bad_arguments", "id must be a link number", "browser.open"),
        (harmony("browser.search", query="a") + harmony("browser.search", query="b"), "two_tools", "2 tool calls", "browser.search"),
        ("<|channel|>analysis<|message|>thinking, no call<|end|>", "no_tool", "no tool call or final answer", None),
    ],
)  # fmt: skip
def test_malformed_harmony_is_an_error_the_policy_sees(client, action, reason, says, author):
    env = SearchEnv(client, style="browser")
    env.reset(options=QUESTION)
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["reason"] == reason and says in info["error"], info
    head = "<|start|>user<|message|>" if author is None else harmony_reply(author, "")[:-7]
    assert obs.startswith(head + "Error: ") and obs.endswith("<|end|>") and says in obs, obs
    assert not terminated and not truncated
    obs, *_, info = env.step(harmony("browser.open", id="Aristotle"))  # the episode goes on
    assert info["error"] is None and obs.startswith(
        harmony_reply("browser.open", "[0] Aristotle (")[:-7]
    )


def test_harmony_tool_errors_and_budget(client):
    """A call that cannot be resolved is gpt-oss's plain message from the tool; the budget cuts
    the harmony message like any observation."""
    env = SearchEnv(client, style="browser", obs_max_chars=300)
    env.reset(options=QUESTION)
    obs, *_, info = env.step(harmony("browser.open", 1, id=4))
    assert obs == harmony_reply("browser.open", "Error: " + info["error"])
    assert "No pages to access!" in obs
    obs, *_, info = env.step(harmony("browser.open", 2, id="Ayn Rand", num_lines=200))
    assert info["error"] is None and len(obs) <= 300
    assert obs.startswith(harmony_reply("browser.open", "[0] Ayn Rand")[:-7])
    assert obs.endswith("<|end|>")
    json_turn, *_ = env.step(call("browser.find", pattern="novel"))  # the two syntaxes mix
    assert json_turn.startswith("\n<tool_response>\n[1] Find results")


def test_browser_style_stops_at_harmony_call():
    from env.styles import get_style

    assert "<|call|>" in get_style("browser").stops
    assert get_style("browser").for_turn(call("browser.find", pattern="x")).wrap("x") == (
        "\n<tool_response>\nx\n</tool_response>\n"
    )
