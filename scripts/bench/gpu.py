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
7. ``faiss`` (GPU Flat index against the torch backend's ids) and ``http`` (the FastAPI server
   on the encode section's index: a checked /retrieve, then single-query requests/s): run
   when their packages are present, else skipped, saying so.

Results go to ``--out`` as ``gpu.json`` and ``gpu.md`` (rewritten after every section, so a
killed run keeps what it measured) and are printed. Without ``orjson`` (the GPU image lacks
it) a small stdlib-json stand-in is put on the path of this process and its children.

    python scripts/bench/gpu.py --out /tmp/gpu-check                     # on the GPU node
    python scripts/bench/gpu.py --device cpu --quick --out /tmp/gpu-check  # toy sizes, CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import importable, use_repo_if_not_installed

use_repo_if_not_installed()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from gpu_common import QUICK, REAL, REPO, Sizes, Skip, median, sync, timed  # noqa: E402, F401
from gpu_encode import _verb, encode_throughput, encode_verb  # noqa: E402
from gpu_search import exact_search, faiss_gpu, http, service_load  # noqa: E402

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


def ensure_orjson() -> str:
    try:
        import orjson  # noqa: F401

        return "orjson"
    except ImportError:
        folder = Path(tempfile.mkdtemp(prefix="gpu-check-shim-"))
        (folder / "orjson.py").write_text(ORJSON_STANDIN)
        importable(folder)
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


SECTIONS = (
    ("env", env, 1),
    ("ceilings", ceilings, 10),
    ("exact_search", exact_search, 60),
    ("encode_throughput", encode_throughput, 60),
    ("encode_verb", encode_verb, 60),
    ("service_load", service_load, 30),
    ("faiss", faiss_gpu, 5),
    ("http", http, 15),
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
    ap.add_argument("--out", help="folder for gpu.json and gpu.md (--smoke: a temporary one)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="toy sizes (CI; --device cpu)")
    ap.add_argument("--budget-s", type=float, default=450, help="time budget for all sections")
    ap.add_argument("--only", help="comma list of sections to run (default: all)")
    ap.add_argument("--smoke", action="store_true", help="the same as --device cpu --quick")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.quick = "cpu", True
        args.out = args.out or tempfile.mkdtemp(prefix="gpu-check-smoke-")
    if not args.out:
        ap.error("--out is required (or --smoke)")
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
        shutil.rmtree(run.scratch, ignore_errors=True)  # models, stores: results are in --out
    print(markdown(run.results))
    status = {n: r["status"] for n, r in run.results["sections"].items()}
    print(json.dumps({"bench": "gpu", "device": args.device, "out": str(args.out), **status}))
    errors = [n for n, r in run.results["sections"].items() if r["status"] == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
