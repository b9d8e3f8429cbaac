"""Data for the /ui tests and screenshots: a small real index with hostile passages, real
trajectories from the env, and a live server in a thread.

The index is HotpotQA's paragraphs for the first questions of the committed sample plus pages
whose title and text carry markup (``<script>``, ``<img onerror>``). The trajectories are what
``env.evaluate`` writes per episode: ``SearchEnv.trajectory()`` plus ``task_id``,
``policy_error``, ``messages``, ``dataset`` and ``sample``, produced by running the real env
over that index with a scripted policy (the oracle of ``env_support``, made to answer wrong
or emit a malformed turn on some questions).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from env_support import HOTPOT, Oracle

HOSTILE_TITLE = '<img src=x onerror="window.xssFired=1">Marmalade Quokka'
HOSTILE_TEXT = (
    "<script>window.xssFired=2</script> The marmalade quokka <b>flew</b> over "
    '<a href="javascript:window.xssFired=3">the bay</a> & landed.'
)
LONG_TEXT = " ".join(
    f"Zeppelin manual section {i}: <script>window.xssFired=5</script> the airship <b>rises</b>."
    for i in range(60)
)
HOSTILE_PREDICTION = '<img src=y onerror="window.xssFired=4">'
QUESTIONS = 30


def write_corpus(path: Path, questions: int = QUESTIONS) -> list[dict]:
    """HotpotQA context paragraphs of the first ``questions`` questions plus hostile pages."""
    rows, seen = [], set()
    with open(HOTPOT, encoding="utf-8") as f:
        for line, _ in zip(f, range(questions)):
            for title, sentences in json.loads(line)["context"]:
                if title in seen:
                    continue
                seen.add(title)
                rows.append({"id": f"p{len(rows)}", "title": title, "text": "".join(sentences)})
    rows.append({"id": "hostile", "title": HOSTILE_TITLE, "text": HOSTILE_TEXT})
    rows.append({"id": "hostile-long", "title": "Zeppelin <i>manual</i>", "text": LONG_TEXT})
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def build_index(root: Path) -> Path:
    """Corpus + BM25 index at ``root`` (built once; reused when already there)."""
    if (root / "bm25" / "manifest.json").is_file():
        return root
    from index_build.__main__ import main

    root.parent.mkdir(parents=True, exist_ok=True)
    corpus = root.parent / "ui-corpus.jsonl"
    write_corpus(corpus)
    args = ["corpus", "--input", str(corpus), "--format", "jsonl", "--out", str(root)]
    assert main([*args, "--no-progress"]) == 0
    assert main(["bm25", "--index", str(root), "--no-progress"]) == 0
    return root


def write_trajectories(path: Path, root: Path, questions: int = QUESTIONS) -> list[dict]:
    """Episodes of the real env over ``root``, as ``env.evaluate`` writes them, one a line."""
    from env.search_env import SearchEnv
    from env.tasks import load_tasks
    from retriever.client import InProcessClient

    tasks = load_tasks(HOTPOT, limit=questions)
    records = []
    with InProcessClient(root, warmup=False) as client:
        env = SearchEnv(client, style="asearcher", topk=3, page_chars=800)
        for i, task in enumerate(tasks):
            oracle = Oracle(task, "asearcher")
            obs, info = env.reset(options=task.options())
            messages = [dict(m) for m in info["messages"]]
            for turn in range(8):
                action = oracle.act(obs)
                if i % 5 == 1 and turn == 0:
                    action = "I will look it up <search> unclosed"  # a malformed turn
                if i % 3 == 2 and oracle.last == "answer":
                    action = f"<answer>{HOSTILE_PREDICTION} not {task.answers[0]}</answer>"
                obs, _, terminated, truncated, _ = env.step(action)
                messages.append({"role": "assistant", "content": action})
                if obs:
                    messages.append({"role": "user", "content": obs})
                if terminated or truncated:
                    break
            rec = env.trajectory()
            rec.update(policy_error=None, task_id=task.id, messages=messages)
            rec.update(dataset="hotpotqa" if i % 4 else "hotpot-dev", sample=0)
            records.append(rec)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    return records


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A uvicorn server for ``app`` in a daemon thread; ``with LiveServer(app) as base_url``."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
