"""Helpers for the env tests: a real in-process search client over the HotpotQA mini corpus and
an oracle policy that knows each question's gold paragraphs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from env.tasks import load_tasks
from env.types import Task

DATA = Path(__file__).parent / "data"
HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"
_DOC = re.compile(r"\[Doc \d+\]\((.*?)\):\n\"([^\n]*)\"")
_DOC_R1 = re.compile(r"Doc \d+\(Title: \"([^\n]*?)\"\)")
_RESULT = re.compile(r"L\d+: # 【(\d+)†([^】]*)】")  # a result of the browser style's search view
_CURSOR = re.compile(r"^\s*(?:<tool_response>\s*)?\[(\d+)\]")


def ensure_bm25(hotpot_root: Path) -> Path:
    """A private index root for the env tests (corpus and BM25 part), copied once per session
    from the template every test module shares (the shared ``hotpot_root`` stays untouched)."""
    from retriever_fakes import build_root

    parent = hotpot_root.parent / "env-index-parent"
    root = parent / "index"
    if not (root / "bm25" / "manifest.json").is_file():
        parent.mkdir(exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        build_root(parent, bm25=True)
    return root


def hotpot_client(hotpot_root: Path):
    """The real in-process client (``retriever.client.InProcessClient``) over the env root."""
    from retriever.client import InProcessClient

    return InProcessClient(ensure_bm25(hotpot_root), warmup=False)


def hotpot_tasks(n: int | None = None) -> list[Task]:
    tasks = load_tasks(HOTPOT)
    return tasks if n is None else tasks[:n]


def gold_titles(task: Task) -> list[str]:
    return list(dict.fromkeys(title for title, _ in task.meta["supporting_facts"]))


def docs_in(observation: str) -> list[tuple[str, str]]:
    """(url, title) of every ``[Doc k](url):`` entry of an observation."""
    return _DOC.findall(observation)


def titles_in(observation: str, style: str) -> list[str]:
    if style == "browser":
        return [t for _, t in _RESULT.findall(observation)]
    if style == "search-r1":
        return _DOC_R1.findall(observation)
    return [t for _, t in docs_in(observation)]


class Oracle:
    """Searches each gold title, accesses the first gold page it found by URL, answers.

    ``act(observation)`` returns the next turn's text in the env's style; ``found`` lists the
    gold titles that came back in search results.
    """

    def __init__(self, task: Task, style: str):
        self.task, self.style = task, style
        self.queue = gold_titles(task)
        self.found: list[str] = []
        self.accessed: str | None = None
        self.page_seen = False
        self.turn = 0

    def _call(self, name: str, **args) -> str:
        import json

        if self.style == "browser":  # gpt-oss's names; a result is opened by its number
            name = name if name == "answer" else "browser." + ("open" if name == "access" else name)
            if name == "browser.open":
                args = {"id": args["url"][1], "cursor": args["url"][0]}
        if self.style in ("tool-call", "browser"):
            if name == "answer":
                return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"
            return f"I will call {name}.\n<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"
        value = next(iter(args.values()))
        return f"<think>next: {name}</think>\n<{name}> {value} </{name}>"

    def act(self, observation: str) -> str:
        self.turn += 1
        if self.turn > 1 and self.last == "search":
            got = titles_in(observation, self.style)
            want = self.searched
            if want in got:
                self.found.append(want)
                if self.accessed is None and self.style == "browser":  # (cursor, link number)
                    links = {t: int(i) for i, t in _RESULT.findall(observation)}
                    cursor = int(_CURSOR.match(observation).group(1))
                    self.pending_url = (cursor, links[want])
                elif self.accessed is None and self.style != "search-r1":
                    self.pending_url = dict((t, u) for u, t in docs_in(observation))[want]
        if (
            self.turn > 1
            and self.last == "access"
            and (">>>> Page 1 of" in observation or "**viewing lines [0 - " in observation)
        ):
            self.page_seen = True
        if self.queue:
            self.searched = self.queue.pop(0)
            self.last = "search"
            return self._call("search", query=self.searched)
        url = getattr(self, "pending_url", None)
        if url and self.accessed is None:
            self.accessed = url
            self.last = "access"
            return self._call("access", url=url)
        self.last = "answer"
        return self._call("answer", answer=self.task.answers[0])


def accessible_tasks(root: Path, n: int = 6) -> list[tuple[str, Task]]:
    """The first ``n`` questions whose gold pages are all in the corpus under their titles."""
    from env.tasks import row_to_task
    from retriever.store.docstore import DocStore

    store = DocStore.open(root)
    out = []
    for line in open(HOTPOT, encoding="utf-8"):
        task = row_to_task(json.loads(line))
        if all(store.page(t) is not None for t in gold_titles(task)):
            out.append((line, task))
        if len(out) == n:
            return out
    raise AssertionError("not enough questions")
