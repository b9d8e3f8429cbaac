"""GPU check sections on encoding: throughput against sentence-transformers, and the encode
verb end to end, killed after its first shard and resumed."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gpu_common import QUICK, REPO, WIKI18, median, sync

if TYPE_CHECKING:
    from gpu import Run

GPU_SCRIPT = Path(__file__).with_name("gpu.py")


def _texts(n: int) -> list[str]:
    """``"Title"\\n`` + ~100 words of real paragraphs from tests/data (wiki-18 passages are
    100-word windows), repeated with a counter when more are asked for than there are."""
    words, titles = [], []
    for line in (REPO / "tests/data/hotpotqa-distractor-500.jsonl").read_text().splitlines():
        for title, sents in json.loads(line)["context"]:
            titles.append(title)
            words.extend("".join(sents).split())
    out, i = [], 0
    while len(out) < n:
        start = (i * 100) % max(1, len(words) - 100)
        out.append(
            f'"{titles[i % len(titles)]}"\n' + " ".join(words[start : start + 100]) + f" {i}"
        )
        i += 1
    return out


def _model(run: Run) -> Path:
    """A BERT folder built from a config (random weights) with a WordPiece vocabulary trained on
    the repository's text: no hub needed. Cached in the scratch folder."""
    folder = run.scratch / "bert"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    wp = BertWordPieceTokenizer(lowercase=True)
    corpus = _texts(400 if run.sizes is QUICK else 3000)  # the vocabulary: seconds, not tens
    wp.train_from_iterator(corpus, vocab_size=30522, min_frequency=1, show_progress=False)
    wp.save_model(str(folder))
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    s = run.sizes
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=max(1, s.hidden // 64),
        intermediate_size=4 * s.hidden,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return folder


def encode_throughput(run: Run) -> dict:
    import numpy as np

    from retriever.dense.encoders import EncoderConfig, load_encoder

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        SentenceTransformer, st_error = None, str(exc)
    dev, s = run.device, run.sizes
    model = _model(run)
    texts = _texts(s.passages)
    config = EncoderConfig(model=str(model), pooling="mean", normalize=True, max_length=512)
    runs = {}
    dtypes = ("bf16", "fp16") if dev.startswith("cuda") else ("fp32", "bf16")
    for dtype in dtypes:
        enc = load_encoder(config, dev, dtype, batch_size=256 if dev.startswith("cuda") else 32)
        runs[f"ours_{dtype}"] = (enc.encode_passages, enc)
    if SentenceTransformer is not None:
        st = SentenceTransformer(str(model), device=dev)
        runs["sentence_transformers"] = (lambda t: st.encode(t, convert_to_numpy=True), st)
    tokens = [
        len(x)
        for x in runs[f"ours_{dtypes[0]}"][1].tokenizer(texts, truncation=True, max_length=512)[
            "input_ids"
        ]
    ]
    out = {
        "passages": len(texts),
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "layers": s.layers,
        "hidden": s.hidden,
    }
    vectors, times = {}, {k: [] for k in runs}
    for name, (fn, _) in runs.items():
        vectors[name] = fn(texts[:8])  # warm up
    for _ in range(2 if s is QUICK else 3):  # alternate: noise hits all alike
        for name, (fn, _) in runs.items():
            t = time.perf_counter()
            vectors[name] = np.asarray(fn(texts))
            sync(dev)
            times[name].append(time.perf_counter() - t)
        if run.left() < 60:
            break
    for name in runs:
        rate = len(texts) / median(times[name])
        out[name] = {
            "passages_per_s": round(rate, 1),
            "hours_for_wiki18": round(WIKI18 / rate / 3600, 2),
        }
    if SentenceTransformer is not None:
        base = out["sentence_transformers"]["passages_per_s"]
        for name in runs:
            out[name]["x_sentence_transformers"] = round(out[name]["passages_per_s"] / base, 2)
            a, b = (
                vectors[name].astype(np.float64),
                vectors["sentence_transformers"].astype(np.float64),
            )
            cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            out[name]["min_cosine_to_st"] = round(float(cos.min()), 4)
    else:
        out["sentence_transformers"] = f"absent: {st_error}"
    return out


def _verb(args: list[str]) -> tuple[int, str]:
    """``python -m index_build ARGS`` in this process (interpreter starts cost minutes on a
    loaded CPU); its exit status and what it wrote to stderr. Where ``index_build``'s parser
    cannot be built (it imports every verb; the corpus verb needs mwparserfromhell, absent on
    the GPU image) the verb's own module runs with the same flags."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if _full_cli() is None:
                from index_build.__main__ import main

                rc = main(args)
            else:
                rc = _verb_alone(args)
        except SystemExit as exc:  # argparse refusals
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, err.getvalue()


@functools.lru_cache(maxsize=1)
def _full_cli() -> str | None:
    """None when ``python -m index_build`` works here, else why it does not (asked once: a
    failed import leaves half-imported modules behind)."""
    try:
        from index_build.__main__ import build_parser

        build_parser()
        return None
    except ModuleNotFoundError as exc:
        return f"python -m index_build needs {exc.name}, absent here"


def _verb_alone(args: list[str]) -> int:
    import argparse
    import importlib
    import logging

    from retriever.cli import configure_process

    configure_process()
    module = importlib.import_module(f"index_build.{args[0]}")
    p = argparse.ArgumentParser(prog=f"index_build {args[0]}")
    module.add_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    logging.basicConfig(level=logging.WARNING)
    try:
        return module.run(p.parse_args(args[1:]))
    except Exception as exc:  # report like the CLI does: one line, exit status 1
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _write_store(root: Path, texts: list[str]) -> None:
    """The corpus store written directly (where the corpus verb cannot be imported)."""
    from retriever.store.docstore import CORPUS_DIR
    from retriever.store.writer import StoreWriter

    writer = StoreWriter(root / CORPUS_DIR, with_pages=False)
    for i, t in enumerate(texts):
        title, text = t.split("\n", 1)
        writer.add_passage(str(i), title.strip('"'), text, "")
    writer.finish({"sources": [{"path": "gpu-check synthetic", "format": "jsonl"}]})


def _digest(folder: Path) -> dict:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(folder.glob("emb-*.npy"))
    }


def encode_verb(run: Run) -> dict:
    import torch

    dev, s = run.device, run.sizes
    model = _model(run)
    root = run.scratch / "index"
    corpus = run.scratch / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": str(i), "contents": t}) + "\n" for i, t in enumerate(_texts(s.store))
        )
    )
    cli = _full_cli()
    if cli is None:
        rc, err = _verb(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"])
        if rc:
            raise RuntimeError(f"corpus verb failed: {err[-1500:]}")
    else:
        _write_store(root, _texts(s.store))
    devices = dev
    if dev.startswith("cuda") and torch.cuda.device_count() > 1:
        devices = "cuda:" + ",".join(str(i) for i in range(torch.cuda.device_count()))
    common = [
        "encode",
        "--index",
        str(root),
        "--model",
        str(model),
        "--device",
        devices,
        "--shard-size",
        str(s.shard),
        "--no-progress",
        "--fp16",
        "--pooling",
        "mean",
    ]
    t = time.perf_counter()
    rc, err = _verb([*common, "--name", "whole"])
    if rc:
        raise RuntimeError(f"encode verb failed: {err[-1500:]}")
    seconds = time.perf_counter() - t
    whole = _digest(root / "dense-whole")
    # the same again, killed once its first shard is written, then resumed
    cmd = (
        [sys.executable, "-m", "index_build"]
        if cli is None
        else [sys.executable, str(GPU_SCRIPT), "--verb"]
    )
    log = open(run.scratch / "killed-encode.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*cmd, *common, "--name", "resumed"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    folder, killed_after = root / "dense-resumed", None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if list(folder.glob("emb-*.npy")):
            killed_after = len(list(folder.glob("emb-*.npy")))
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group
            break
        time.sleep(0.005)
    proc.wait()
    log.close()
    rc, err = _verb([*common, "--name", "resumed"])
    if rc:
        raise RuntimeError(f"resumed encode failed: {err[-1500:]}")
    resumed = _digest(folder)
    run.results["index_root"] = str(root)
    return {
        "passages": s.store,
        "devices": devices,
        "whole_run_s": round(seconds, 1),
        "passages_per_s_end_to_end": round(s.store / seconds, 1),
        "shards": len(whole),
        "killed_after_shards": killed_after,
        "resumed_identical": resumed == whole and bool(whole),
        "cli": "python -m index_build" if cli is None else f"the verb's module alone ({cli})",
    }
