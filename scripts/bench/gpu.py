"""One-call GPU check: every CUDA path of ours exercised and timed in a single prepared run.

Made for a short, rare GPU window (one H100/H200, no network, a Python with torch,
transformers, sentence-transformers and numpy; no faiss, no fastapi; only the checkout travels).
Sections, each in its own ``try`` (an error is recorded and the run goes on), under one global
time budget (a section that would not fit is skipped, saying so):

1. ``env``: versions, the GPU, which optional packages are present.
2. ``ceilings``: device-to-device copy bandwidth and fp16/bf16 matmul TFLOP/s, measured here.
3. ``exact_search``: the torch backend over 21,015,324 x 768 fp16 random unit vectors (wiki-18
   with e5-base) built on the GPU in chunks, k=5, batches 1/64/1024/4096: median ms, queries/s,
   ratio to the bandwidth floor and to the matmul floor; ids against a float64 reference on a
   subset; two logical shards and two replicas on one GPU (the merge paths), all GPUs if several.
4. ``encode_throughput``: a BERT-base-sized encoder built from a config (random weights, a
   WordPiece vocabulary trained on the repository's text), ~100-word passages as wiki-18 has:
   our encoder (length-sorted batches) in bf16 and fp16 against ``SentenceTransformer.encode``.
5. ``encode_verb``: ``python -m index_build encode`` end to end on a small synthetic store (one
   process per listed device), killed after its first shard and resumed: shards byte-identical
   to an uninterrupted run.
6. ``service_load``: the dense retriever in ``RetrievalService`` (no HTTP) under 1/64/512
   concurrent single-query callers, coalesced vs ``max_batch=1``.
7. ``faiss`` and ``http``: run when their packages are present, else skipped, saying so.

Results go to ``--out`` as ``gpu.json`` and ``gpu.md`` (rewritten after every section, so a
killed run keeps what it measured) and are printed. Without ``orjson`` (the GPU image lacks
it) a small stdlib-json stand-in is put on the path of this process and its children.

    python scripts/bench/gpu.py --out /tmp/gpu-check                     # on the GPU node
    python scripts/bench/gpu.py --device cpu --quick --out /tmp/gpu-check  # toy sizes, CI
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
WIKI18 = 21_015_324

ORJSON_STANDIN = '''"""Stand-in for orjson (stdlib json) where the real one is absent: scripts/bench/gpu.py."""
import dataclasses, json
OPT_INDENT_2, OPT_SORT_KEYS, OPT_SERIALIZE_NUMPY, OPT_APPEND_NEWLINE = 1, 2, 4, 8
JSONDecodeError = json.JSONDecodeError
class JSONEncodeError(TypeError):
    pass
def _default(obj, user):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if user is not None:
        return user(obj)
    raise JSONEncodeError(f"Type is not JSON serializable: {type(obj).__name__}")
def dumps(obj, default=None, option=0):
    text = json.dumps(obj, default=lambda o: _default(o, default), ensure_ascii=False,
                      indent=2 if option & OPT_INDENT_2 else None,
                      separators=None if option & OPT_INDENT_2 else (",", ":"),
                      sort_keys=bool(option & OPT_SORT_KEYS))
    return (text + ("\\n" if option & OPT_APPEND_NEWLINE else "")).encode()
def loads(data):
    return json.loads(data)
'''


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the real ones, or toys for ``--quick``."""

    rows: int
    dim: int
    batches: tuple[int, ...]
    subset: int
    passages: int
    layers: int
    hidden: int
    store: int
    shard: int
    concurrency: tuple[int, ...]
    seconds: float


REAL = Sizes(
    WIKI18, 768, (1, 64, 1024, 4096), 1 << 20, 8192, 12, 768, 8000, 2000, (1, 64, 512), 3.0
)
QUICK = Sizes(20_000, 64, (1, 16, 64), 5_000, 32, 2, 64, 60, 20, (1, 4, 16), 0.5)


def ensure_orjson() -> str:
    try:
        import orjson  # noqa: F401

        return "orjson"
    except ImportError:
        folder = Path(tempfile.mkdtemp(prefix="gpu-check-shim-"))
        (folder / "orjson.py").write_text(ORJSON_STANDIN)
        sys.path.insert(0, str(folder))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(folder), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        return f"stdlib stand-in at {folder}"


class Run:
    """Results, the time budget, and the writing of gpu.json / gpu.md."""

    def __init__(self, out: Path, device: str, sizes: Sizes, budget_s: float):
        self.out, self.device, self.sizes = out, device, sizes
        self.deadline = time.monotonic() + budget_s
        self.results: dict = {"device": device, "quick": sizes is QUICK, "sections": {}}
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str, fn, need_s: float) -> None:
        import torch

        if self.left() < need_s:
            result = {
                "status": "skipped",
                "why": f"out of time ({self.left():.0f} s left, needs ~{need_s:.0f})",
            }
        else:
            t = time.monotonic()
            if self.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            try:
                result = {"status": "ok", **fn(self)}
            except Skip as why:
                result = {"status": "skipped", "why": str(why)}
            except Exception as exc:  # record and go on: one broken part must not hide the rest
                result = {
                    "status": "error",
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            result["seconds"] = round(time.monotonic() - t, 1)
            if self.device.startswith("cuda"):
                result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
                torch.cuda.empty_cache()
            result["peak_rss_gb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2
            )
        self.results["sections"][name] = result
        print(
            f"[{name}] {result['status']} {json.dumps({k: v for k, v in result.items() if k != 'traceback'})[:1500]}",
            flush=True,
        )
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "gpu.md").write_text(markdown(self.results))


class Skip(Exception):
    """A section that cannot run here (a package or a device is missing)."""


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, budget_s: float) -> list[float]:
    """Seconds of ``reps`` calls (after one warm-up), stopping early when ``budget_s`` is spent."""
    fn()
    sync(device)
    out, start = [], time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(out) >= 3:
            break
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


# ---- sections -------------------------------------------------------------------------------


def env(run: Run) -> dict:
    import importlib.util

    import numpy
    import torch

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "orjson": run.results["orjson"],
    }
    if run.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device: run with --device cpu --quick")
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    for name in (
        "transformers",
        "sentence_transformers",
        "tokenizers",
        "faiss",
        "fastapi",
        "httpx",
    ):
        out[name] = _version(name) if importlib.util.find_spec(name) else "absent"
    return out


def _version(name: str) -> str:
    """The installed distribution's version, without importing it (faiss, fastapi are slow)."""
    from importlib import metadata

    for dist in (name, name.replace("_", "-"), f"{name}-cpu", f"{name}-gpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "present"


def ceilings(run: Run) -> dict:
    import torch

    dev, quick = run.device, run.sizes is QUICK
    n = (1 << 24) if quick else (1 << 30)  # bytes per copy buffer
    src = torch.empty(n // 2, dtype=torch.float16, device=dev).normal_()
    dst = torch.empty_like(src)
    t = median(timed(lambda: dst.copy_(src), dev, 20, 5))
    out = {"copy_gb_s": round(2 * n / t / 1e9, 2)}  # read + write
    src = dst = None  # free before the matmuls
    m = 512 if quick else 8192
    kinds = (("fp16", torch.float16), ("bf16", torch.bfloat16))
    if dev == "cpu":  # what the CPU backend computes in
        kinds = (("fp32", torch.float32),)
    for name, dtype in kinds:
        x = torch.randn(m, m, device=dev).to(dtype)
        y = torch.randn(m, m, device=dev).to(dtype)
        t = median(timed(lambda x=x, y=y: x @ y, dev, 20, 5))
        out[f"matmul_{name}_tflops"] = float(f"{2 * m**3 / t / 1e12:.4g}")
    run.results["ceilings"] = out
    return out


def _random_matrix(rows: int, dim: int, device: str, seed: int = 0):
    """Unit vectors in fp16 (fp32 on CPU), generated on the device chunk by chunk."""
    import torch

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    x = torch.empty((rows, dim), dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    for s in range(0, rows, 1 << 20):
        chunk = torch.randn((min(1 << 20, rows - s), dim), generator=gen, device=device)
        x[s : s + len(chunk)] = torch.nn.functional.normalize(chunk, dim=1).to(dtype)
    return x


def exact_search(run: Run) -> dict:
    import numpy as np
    import torch

    from retriever.dense.torch_backend import TorchBackend

    s, dev = run.sizes, run.device
    t = time.perf_counter()
    x = _random_matrix(s.rows, s.dim, dev)
    sync(dev)
    out = {
        "rows": s.rows,
        "dim": s.dim,
        "dtype": str(x.dtype),
        "k": 5,
        "build_s": round(time.perf_counter() - t, 1),
    }
    rng = np.random.default_rng(1)
    q = rng.standard_normal((max(s.batches), s.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    dtype = "fp16" if dev.startswith("cuda") else "fp32"
    backend = TorchBackend([(0, x)], [dev], dtype)
    ceil = run.results.get("ceilings", {})
    matrix_bytes = x.numel() * x.element_size()
    rows = []
    for batch in s.batches:
        if run.left() < 30:
            rows.append({"batch": batch, "skipped": "out of time"})
            continue
        times = timed(
            lambda b=batch, f=backend.search: f(q[:b], 5), dev, 20 if batch <= 64 else 5, 20
        )
        ms = 1000 * median(times)
        row = {"batch": batch, "ms": round(ms, 3), "qps": round(1000 * batch / ms, 1)}
        if ceil.get("copy_gb_s"):
            floor = 1000 * matrix_bytes / (ceil["copy_gb_s"] * 1e9)
            row["bandwidth_floor_ms"], row["x_bandwidth_floor"] = (
                round(floor, 3),
                round(ms / floor, 2),
            )
        rate = ceil.get("matmul_fp16_tflops") or ceil.get("matmul_fp32_tflops")
        if rate:
            floor = 1000 * 2 * s.rows * s.dim * batch / (rate * 1e12)
            row["matmul_floor_ms"], row["x_matmul_floor"] = round(floor, 3), round(ms / floor, 2)
        rows.append(row)
        print(f"  exact batch {batch}: {row}", flush=True)
    out["batches"] = rows
    # exactness: same ids as a float64 reference over a subset of the same stored vectors
    sub = x[: s.subset]
    want = _reference_topk(sub, q[:64], 5)
    got_s, got_i = TorchBackend([(0, sub)], [dev], dtype).search(q[:64], 5)
    out["subset_rows"] = int(len(sub))
    out["subset_same_ids"] = float(
        np.mean([a == b for a, b in zip(got_i.tolist(), want[1].tolist())])
    )
    out["subset_max_score_diff"] = float(np.abs(got_s - want[0]).max())
    # layouts: two logical shards / replicas on one GPU (the merge paths); all GPUs if several
    ngpu = torch.cuda.device_count() if dev.startswith("cuda") else 0
    layouts = {
        "2 shards, 1 device": ([dev, dev], True),
        "2 replicas, 1 device": ([dev, dev], False),
    }
    if ngpu > 1:
        devs = [f"cuda:{i}" for i in range(ngpu)]
        layouts |= {f"sharded x{ngpu}": (devs, True), f"replicated x{ngpu}": (devs, False)}
    base = {b: backend.search(q[:b], 5) for b in s.batches[1:3]}
    out["layouts"] = []
    for label, (devs, shard) in layouts.items():
        if run.left() < 40:
            out["layouts"].append({"layout": label, "skipped": "out of time"})
            continue
        other = TorchBackend([(0, x)], devs, dtype, shard=shard)
        for b, (ws, wi) in base.items():
            ms = 1000 * median(timed(lambda b=b, f=other.search: f(q[:b], 5), dev, 5, 10))
            gs, gi = other.search(q[:b], 5)
            out["layouts"].append(
                {
                    "layout": label,
                    "batch": b,
                    "ms": round(ms, 3),
                    "same_ids_and_scores": bool((gi == wi).all() and (gs == ws).all()),
                }
            )
        del other
    del backend, x
    return out


def _reference_topk(x, q, k: int):
    """float64 top-k (ties by row) of ``q`` against the stored rows ``x``, chunk by chunk."""
    import numpy as np
    import torch

    qd = torch.from_numpy(q).to(x.device, torch.float64)
    scores = []
    for s in range(0, len(x), 1 << 18):
        scores.append((qd @ x[s : s + (1 << 18)].to(torch.float64).T).float().cpu().numpy())
    scores = np.concatenate(scores, axis=1)
    ids = np.stack([np.lexsort((np.arange(len(r)), -r))[:k] for r in scores])
    return np.take_along_axis(scores, ids, axis=1), ids


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
    wp.train_from_iterator(_texts(3000), vocab_size=30522, min_frequency=1, show_progress=False)
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
        else [sys.executable, __file__, "--verb"]
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
        time.sleep(0.05)
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
        "seconds": round(seconds, 1),
        "passages_per_s_end_to_end": round(s.store / seconds, 1),
        "shards": len(whole),
        "killed_after_shards": killed_after,
        "resumed_identical": resumed == whole and bool(whole),
        "cli": "python -m index_build" if cli is None else f"the verb's module alone ({cli})",
    }


def service_load(run: Run) -> dict:
    from retriever.server.service import RetrievalService, ServiceConfig

    root = run.results.get("index_root")
    if not root:
        raise Skip("needs the index the encode_verb section builds")
    s, dev = run.sizes, run.device
    queries = [f"who wrote {t.split(chr(10))[0]} and when {i}" for i, t in enumerate(_texts(4096))]
    out = []
    for max_batch, label in ((64, "coalesced"), (1, "max_batch=1")):
        config = ServiceConfig(
            index=root,
            retrievers=("dense-whole",),
            device=dev,
            dense_backend="torch",
            cache_size=0,
            max_batch=max_batch,
            queue_size=4096,
        )
        with RetrievalService(config) as service:
            for callers in s.concurrency:
                if run.left() < 20:
                    out.append({"mode": label, "callers": callers, "skipped": "out of time"})
                    continue
                out.append(
                    {
                        "mode": label,
                        "callers": callers,
                        **_load(service, queries, callers, s.seconds),
                    }
                )
                print(f"  service {out[-1]}", flush=True)
    return {"rows": out}


def _load(service, queries, callers: int, seconds: float) -> dict:
    done, errors, stop = [0] * callers, [], time.monotonic() + seconds
    latencies: list[float] = []

    def caller(j):
        i = j
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                service.retrieve([queries[i % len(queries)]], topk=5, retriever="dense-whole")
            except Exception as exc:  # a queue-full answer is a result too: count it
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - t)
            done[j] += 1
            i += callers

    threads = [threading.Thread(target=caller, args=(j,)) for j in range(callers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    latencies.sort()
    return {
        "qps": round(sum(done) / wall, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
        "errors": len(errors),
    }


def faiss_gpu(run: Run) -> dict:
    import importlib.util

    if importlib.util.find_spec("faiss") is None:
        raise Skip("faiss is not installed here (the GPU image has none): torch backend only")
    import faiss
    import numpy as np

    from retriever.dense.faiss_backend import FaissBackend, to_gpu
    from retriever.dense.torch_backend import TorchBackend

    if run.device.startswith("cuda") and faiss.get_num_gpus() == 0:
        raise Skip("faiss here is CPU-only (no faiss-gpu)")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((min(run.sizes.subset, 200_000), 64)).astype(np.float32)
    q = rng.standard_normal((64, 64)).astype(np.float32)
    flat = faiss.IndexFlatIP(64)
    flat.add(x)
    if run.device.startswith("cuda"):
        index, _ = to_gpu(flat, [run.device])
        backend = FaissBackend(index, on_gpu=True)
    else:
        backend = FaissBackend(flat)
    _, fi = backend.search(q, 5)
    _, ti = TorchBackend([(0, x)], ["cpu"], "fp32").search(q, 5)
    return {"same_ids_as_torch": float((fi == ti).all(axis=1).mean())}


def http(run: Run) -> dict:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed here: the HTTP server is left to tests/")
    raise Skip("present, but the HTTP path is CPU-bound and covered by scripts/bench/server.py")


SECTIONS = (
    ("env", env, 1),
    ("ceilings", ceilings, 10),
    ("exact_search", exact_search, 60),
    ("encode_throughput", encode_throughput, 60),
    ("encode_verb", encode_verb, 60),
    ("service_load", service_load, 30),
    ("faiss", faiss_gpu, 5),
    ("http", http, 1),
)


def markdown(results: dict) -> str:
    lines = [
        f"# GPU check ({results['device']}{', quick' if results['quick'] else ''})",
        "",
        "| section | status | s | peak GPU GB | key figures |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["sections"].items():
        keep = {
            k: v
            for k, v in r.items()
            if k not in ("status", "seconds", "peak_gpu_gb", "peak_rss_gb", "traceback")
        }
        lines.append(
            f"| {name} | {r['status']} | {r.get('seconds', '')} | {r.get('peak_gpu_gb', '')} | "
            f"{json.dumps(keep)[:600].replace('|', '/')} |"
        )
    exact = results["sections"].get("exact_search", {})
    if exact.get("batches"):
        lines += [
            "",
            "| batch | ms | queries/s | x bandwidth floor | x matmul floor |",
            "|---|---|---|---|---|",
        ]
        for b in exact["batches"]:
            lines.append(
                f"| {b['batch']} | {b.get('ms', '-')} | {b.get('qps', '-')} | "
                f"{b.get('x_bandwidth_floor', '-')} | {b.get('x_matmul_floor', '-')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--verb"]:  # the encode run this script kills: one index_build verb
        ensure_orjson()
        rc, err = _verb(argv[1:])
        sys.stderr.write(err)
        return rc
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu.json and gpu.md")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="toy sizes (CI; --device cpu)")
    ap.add_argument("--budget-s", type=float, default=450, help="time budget for all sections")
    ap.add_argument("--only", help="comma list of sections to run (default: all)")
    args = ap.parse_args(argv)
    orjson_note = ensure_orjson()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("torch sees no CUDA device: use --device cpu --quick", file=sys.stderr)
        return 2
    run = Run(Path(args.out), args.device, QUICK if args.quick else REAL, args.budget_s)
    run.results["orjson"] = orjson_note
    only = set(args.only.split(",")) if args.only else None
    threads = torch.get_num_threads()
    if args.device == "cpu":  # a code-path check here: one thread, no OpenMP spinning on
        torch.set_num_threads(1)  # a shared machine
    try:
        for name, fn, need in SECTIONS:
            if only is None or name in only:
                run.section(name, fn, need)
    finally:
        torch.set_num_threads(threads)
    print(markdown(run.results))
    errors = [n for n, r in run.results["sections"].items() if r["status"] == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
