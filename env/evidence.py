"""What an episode showed the policy, and the retrieval-aware quantities over it.

Every tool turn records the passages (ids, titles, urls) or the page it showed; with the task's
gold evidence (HotpotQA / 2Wiki / MuSiQue supporting titles, or passage ids) these give rewards
and metrics that look at the search, not only at the final answer:

- evidence recall: the share of gold items (ids when the task has them, else titles) shown;
- information gain: per tool call, how many gold items it showed first (without gold: how many
  passages or pages it showed first), averaged over the tool calls;
- redundancy: searches whose normalised query was already searched plus page chunks read again;
- search cost: the number of tool calls (search and access), failed ones included.

Pure functions of an ``Evidence`` value; ``answer_in_evidence`` (an answer test) lives in
``env.rewards``.

>>> ev = Evidence(
...     turns=(Shown("search", "kansas song", titles=("Kansas Song", "Lawrence")),
...            Shown("search", "Song, Kansas", titles=("Kansas Song",)),
...            Shown("access", "/wiki/University_of_Kansas", titles=("University of Kansas",))),
...     gold_titles=("Kansas Song", "University of Kansas"))
>>> evidence_recall(ev), information_gains(ev), redundancy(ev), search_cost(ev)
(1.0, [1, 0, 1], 1, 3)
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from retriever.queries import title_key

from .parsing import find_blocks

_PUNCT = str.maketrans(string.punctuation, " " * len(string.punctuation))
_TOOL_KINDS = ("search", "access")


@dataclass(frozen=True, slots=True)
class Shown:
    """One tool call and what it showed: ``kind`` search or access, ``query`` the query or the
    page asked for, the passages' (or page's) ids, titles and urls, the observation ``text``,
    and for an access the character ``offset`` of the chunk read."""

    kind: str
    query: str = ""
    ids: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    text: str = ""
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """The tool calls of an episode and the task's gold evidence (empty: the task has none)."""

    turns: tuple[Shown, ...] = ()
    gold_titles: tuple[str, ...] = field(default=())
    gold_ids: tuple[str, ...] = field(default=())

    @property
    def has_gold(self) -> bool:
        return bool(self.gold_ids or self.gold_titles)


def query_key(query: str) -> str:
    """A query as compared with earlier ones: lower case, punctuation dropped, the set of its
    words sorted, so reordered or re-punctuated queries count as the same.

    >>> query_key("Kansas song?") == query_key("song, kansas") == query_key("kansas kansas SONG")
    True
    """
    return " ".join(sorted(set(str(query).lower().translate(_PUNCT).split())))


def _gold(ev: Evidence) -> set[str]:
    if ev.gold_ids:
        return {str(i) for i in ev.gold_ids}
    return {title_key(t) for t in ev.gold_titles}


def _items(ev: Evidence, shown: Shown) -> set[str]:
    """The evidence items one call showed, in the units of the gold (ids or titles); without
    gold, passages by id (else title or url)."""
    if ev.gold_ids:
        return {str(i) for i in shown.ids}
    if ev.gold_titles:
        return {title_key(t) for t in shown.titles}
    keys = shown.ids or shown.titles or shown.urls
    return {f"{shown.kind}:{k}" for k in keys}


def evidence_recall(ev: Evidence) -> float:
    """Share of the gold items any tool call showed; 0.0 when the task has no gold evidence.

    >>> evidence_recall(Evidence((Shown("search", "x", ids=("3", "9")),), gold_ids=("3", "4")))
    0.5
    """
    gold = _gold(ev)
    if not gold:
        return 0.0
    seen: set[str] = set()
    for shown in ev.turns:
        seen |= _items(ev, shown)
    return len(gold & seen) / len(gold)


def information_gains(ev: Evidence) -> list[int]:
    """Per tool call, how many new items it showed: gold items not shown before when the task
    has gold, else passages (pages) not shown before.

    >>> information_gains(Evidence((Shown("search", "a", ids=("1", "2")), Shown("search", "b", ids=("2", "3")))))
    [2, 1]
    """
    gold = _gold(ev)
    seen: set[str] = set()
    gains = []
    for shown in ev.turns:
        items = _items(ev, shown)
        if gold:
            items &= gold
        gains.append(len(items - seen))
        seen |= items
    return gains


def information_gain(ev: Evidence) -> float:
    """Mean information gain per tool call (0.0 without tool calls)."""
    gains = information_gains(ev)
    return sum(gains) / len(gains) if gains else 0.0


def redundancy(ev: Evidence) -> int:
    """Repeated work: searches whose ``query_key`` was searched before, plus accesses of a page
    chunk (same page, same offset) read before.

    >>> redundancy(Evidence((Shown("access", "P", offset=0), Shown("access", "P", offset=0))))
    1
    """
    queries: set[str] = set()
    pages: set[tuple[str, int | None]] = set()
    repeated = 0
    for shown in ev.turns:
        if shown.kind == "search":
            key = query_key(shown.query)
            repeated += key in queries
            queries.add(key)
        elif shown.kind == "access":
            name = title_key(shown.titles[0]) if shown.titles else title_key(shown.query)
            repeated += (name, shown.offset) in pages
            pages.add((name, shown.offset))
    return repeated


def search_cost(ev: Evidence) -> int:
    """Number of tool calls (searches and accesses, failed ones included)."""
    return sum(shown.kind in _TOOL_KINDS for shown in ev.turns)


def evidence_of(
    turns: Iterable[dict], gold_titles: Sequence[str] = (), gold_ids: Sequence[str] = ()
) -> Evidence:
    """The ``Evidence`` of an episode's recorded turns (``Episode.turns`` or a trajectory's
    ``turns``: ``kind``, ``arg``, ``shown`` and ``observation`` of each)."""
    calls = []
    for turn in turns:
        if turn.get("kind") not in _TOOL_KINDS:
            continue
        shown = turn.get("shown") or {}
        calls.append(
            Shown(
                turn["kind"],
                str(turn.get("arg") or ""),
                tuple(str(i) for i in shown.get("ids", ())),
                tuple(str(t) for t in shown.get("titles", ())),
                tuple(str(u) for u in shown.get("urls", ())),
                str(turn.get("observation") or ""),
                shown.get("offset"),
            )
        )
    return Evidence(tuple(calls), tuple(map(str, gold_titles)), tuple(map(str, gold_ids)))


# what a tag-style response shows, for trainers that keep only the text (verl, TRL text rewards)
_CALL = re.compile(r"<(search|access)>(.*?)</\1>|<tool_call>(.*?)</tool_call>", re.S)
_DOC = re.compile(r"\[Doc \d+\]\(([^\n]*?)\):\n\"([^\n]*)\"")  # urls may hold ( )
_DOC_R1 = re.compile(r"Doc \d+\(Title: \"([^\n]*?)\"\)")
_PAGE = re.compile(r">>>> Page (\d+) of \d+ >>>> ([^\n]*?) \((\S*)\)$", re.M)
_TOOL_NAME = re.compile(r'"name"\s*:\s*"(search|access)"')
_TOOL_ARG = re.compile(r'"(?:query|url)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _last_call(segment: str) -> tuple[str, str]:
    calls = list(_CALL.finditer(segment[-4000:]))  # the call just before the tool result
    if not calls:
        return "search", ""
    m = calls[-1]
    if m.group(1):
        return m.group(1), m.group(2).strip()
    name, arg = _TOOL_NAME.search(m.group(3) or ""), _TOOL_ARG.search(m.group(3) or "")
    return (name.group(1) if name else "search"), (arg.group(1) if arg else "")


def evidence_from_text(text: str, gold_titles: Sequence[str] = ()) -> Evidence:
    """The ``Evidence`` of a whole tag-style response (turns and ``<information>`` results, as
    the env formats them): titles and urls are read back from the results; ids are not in the
    text, so only title gold counts here.

    >>> t = '<search>paris</search><information>[Doc 1](/wiki/Paris):\\n"Paris"\\nx</information>'
    >>> evidence_from_text(t, ["Paris"]).turns[0].titles, evidence_recall(evidence_from_text(t, ["Paris"]))
    (('Paris',), 1.0)
    """
    calls = []
    pos = 0
    for start, end in find_blocks(text, "<information>", "</information>"):
        kind, query = _last_call(text[pos:start])
        body = text[start:end]
        page = _PAGE.search(body)
        if page is not None:
            kind, titles, urls = "access", (page.group(2),), (page.group(3),)
            offset = int(page.group(1))  # the chunk number: the same chunk read twice repeats
        else:
            docs = _DOC.findall(body)
            titles = tuple(t for _, t in docs) or tuple(_DOC_R1.findall(body))
            urls, offset = tuple(u for u, _ in docs), None
        calls.append(Shown(kind, query, (), titles, urls, body, offset))
        pos = end
    return Evidence(tuple(calls), tuple(map(str, gold_titles)), ())
