"""``python -m index_build faiss``: a faiss index from the embedding shards of ``ROOT/dense-NAME``.

Any factory string (``Flat``, ``HNSW32``, ``IVF4096,Flat``, ``IVF4096,PQ64``, ``OPQ64,IVF4096,PQ64``)
is trained on a seeded sample of rows and filled shard by shard, in chunks; k-means runs on the
GPU when faiss-gpu is present. The file is written through a temporary name, and the part's
manifest records it with its search defaults (nprobe, efSearch).

``--faiss-file PATH --model M`` instead registers an existing index as it is (Search-R1's
``e5_Flat.index`` beside its ``wiki-18.jsonl`` corpus): no re-encoding, no copy, no conversion;
the manifest points at the file and records the model settings to encode queries with.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from retriever.dense.encoders import POOLINGS, PRESETS, model_file, resolve_config
from retriever.errors import BadRequestError, ManifestMismatchError
from retriever.files import atomic_path
from retriever.manifest import read_manifest, write_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

log = logging.getLogger(__name__)

ADD_ROWS = 1 << 16
DEFAULT_NPROBE = 32
DEFAULT_EF_SEARCH = 128
DEFAULT_RERANK = 100  # candidates re-scored from the shards when the codes are lossy (PQ, SQ)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="ROOT", help="index root")
    p.add_argument("--name", required=True, help="the part ROOT/dense-NAME")
    p.add_argument(
        "--factory", default="Flat", help="faiss factory string (Flat, HNSW32, IVF4096,PQ64, ...)"
    )
    p.add_argument(
        "--nprobe", type=int, help=f"IVF lists searched per query (default {DEFAULT_NPROBE})"
    )
    p.add_argument(
        "--ef-search", type=int, help=f"HNSW search breadth (default {DEFAULT_EF_SEARCH})"
    )
    p.add_argument(
        "--train-sample", type=int, default=262_144, help="rows to train on (default 262144)"
    )
    p.add_argument(
        "--rerank",
        type=int,
        help=f"candidates re-scored exactly from the shards at search time (default "
        f"{DEFAULT_RERANK} for PQ/SQ codes, 0 otherwise)",
    )
    p.add_argument(
        "--device", default="cpu", help="cpu, or cuda to train k-means on GPU (faiss-gpu)"
    )
    p.add_argument(
        "--faiss-file",
        help="register this existing faiss index (e.g. Search-R1 e5_Flat.index) as it is",
    )
    p.add_argument("--model", help="with --faiss-file: the model that made the vectors")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help="with --faiss-file: prefixes/pooling preset"
    )
    p.add_argument("--pooling", choices=POOLINGS, help="with --faiss-file: override the pooling")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--query-prefix", help="with --faiss-file: override the query prefix")
    p.add_argument("--max-length", type=int, help="with --faiss-file: override the max tokens")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.faiss_file:
        if not args.model:
            raise BadRequestError("--faiss-file needs --model (the encoder that made the vectors)")
        config = resolve_config(
            args.model,
            preset=args.preset,
            pooling=args.pooling,
            normalize=args.normalize,
            query_prefix=args.query_prefix,
            max_length=args.max_length,
        )
        manifest = register_faiss_file(args.index, args.name, args.faiss_file, config)
        print(
            f"faiss: registered {args.faiss_file} ({manifest['num_docs']} x {manifest['dim']}) as dense-{args.name}"
        )
        return 0
    entry = build_index(
        args.index,
        args.name,
        args.factory,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        train_sample=args.train_sample,
        device=args.device,
        rerank=args.rerank,
    )
    print(
        f"faiss: {entry['factory']} over {entry['ntotal']} vectors in {time.perf_counter() - start:.1f} s "
        f"(train {entry['train_seconds']:.1f} s, add {entry['add_seconds']:.1f} s) -> {entry['file']}"
    )
    return 0


def factory_file(factory: str) -> str:
    """File name for a factory string.

    >>> factory_file("IVF4096,PQ64")
    'faiss-IVF4096_PQ64.index'
    """
    return "faiss-" + re.sub(r"[^A-Za-z0-9]+", "_", factory).strip("_") + ".index"


def sample_rows(parts, n: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``n`` rows (sorted, read from the parts' files) as float32."""
    total = sum(len(a) for _, a in parts)
    rows = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    out = np.empty((len(rows), parts[0][1].shape[1]), dtype=np.float32)
    for first, array in parts:
        sel = (rows >= first) & (rows < first + len(array))
        if sel.any():
            out[sel] = read_rows(array, rows[sel] - first)
    return out


def read_rows(array: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """``array[rows]`` as float32; for a memory-mapped shard, read with ``pread``.

    Pages touched through a mapping stay in the process's resident set until the kernel needs
    them back, so a build that walked 21M rows through ``np.memmap`` would report (and, under
    memory pressure, fight for) tens of GB. Plain reads keep the resident set at one chunk.
    """
    if not isinstance(array, np.memmap) or array.filename is None or not array.flags.c_contiguous:
        return np.ascontiguousarray(array[rows], dtype=np.float32)
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:]))
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(len(array))
        rows = np.arange(start, max(start, stop))
        runs = [(start, len(rows))]
    else:
        rows = np.asarray(rows)
        runs = [(int(r), 1) for r in rows.tolist()]
    out = np.empty((len(rows), *array.shape[1:]), array.dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    with open(array.filename, "rb", buffering=0) as f:
        at = 0
        for first, count in runs:
            want = count * row_bytes
            f.seek(array.offset + first * row_bytes)
            if f.readinto(view[at : at + want]) != want:
                raise OSError(f"{array.filename} is shorter than its header says: re-encode it")
            at += want
    return out.astype(np.float32, copy=False)


def build_index(
    root: str | os.PathLike,
    name: str,
    factory: str = "Flat",
    nprobe: int | None = None,
    ef_search: int | None = None,
    train_sample: int = 262_144,
    device: str = "cpu",
    rerank: int | None = None,
) -> dict:
    """Build ``factory`` over ``root/dense-name``'s shards; returns the manifest's faiss entry."""
    import faiss

    from retriever.dense.retriever import vector_parts

    folder = Path(root) / f"dense-{name}"
    manifest = read_manifest(folder, kind="dense")
    if not manifest.get("shards"):
        raise BadRequestError(
            f"{folder} has no embedding shards (a registered file?): nothing to build from"
        )
    parts = vector_parts(folder, manifest)
    d = manifest["dim"]
    metric = faiss.METRIC_INNER_PRODUCT if manifest.get("metric", "ip") == "ip" else faiss.METRIC_L2
    try:
        index = faiss.index_factory(d, factory, metric)
    except RuntimeError as exc:
        raise BadRequestError(f"faiss cannot build factory {factory!r}: {exc}") from exc
    _no_polysemous(index)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    if not index.is_trained:
        sample = sample_rows(parts, train_sample)
        if device.startswith("cuda"):
            _train_on_gpu(index, d)
        log.info("training %s on %d rows", factory, len(sample))
        index.train(sample)
        del sample
    t1 = time.perf_counter()
    total, done, next_report = sum(len(a) for _, a in parts), 0, t1 + 30
    for first, array in parts:
        for s in range(0, len(array), ADD_ROWS):
            index.add(read_rows(array, slice(s, s + ADD_ROWS)))
            done += min(ADD_ROWS, len(array) - s)
            if time.perf_counter() > next_report:  # a long add says how far it got
                elapsed = time.perf_counter() - t1
                log.info(
                    "added %d/%d vectors (%.0f/s, about %.0f s left)",
                    done,
                    total,
                    done / elapsed,
                    (total - done) * elapsed / done,
                )
                next_report = time.perf_counter() + 30
        log.debug("added rows %d..%d", first, first + len(array))
    t2 = time.perf_counter()
    filename = factory_file(factory)
    with atomic_path(folder / filename) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # faiss reports a failed write (a full disk) this way
            raise OSError(f"faiss could not write {tmp}: {exc}") from exc
    has_ivf = _has_ivf(index)
    entry = {
        "file": filename,
        "factory": factory,
        "metric": manifest.get("metric", "ip"),
        "ntotal": int(index.ntotal),
        "nprobe": (nprobe or DEFAULT_NPROBE) if has_ivf else None,
        "ef_search": (ef_search or DEFAULT_EF_SEARCH) if "HNSW" in factory else None,
        "rerank": default_rerank(factory) if rerank is None else rerank,
        "train_sample": min(train_sample, int(index.ntotal)) if t1 > t0 + 1e-3 else 0,
        "train_seconds": t1 - t0,
        "add_seconds": t2 - t1,
    }
    manifest = read_manifest(folder, kind="dense")  # re-read: keep concurrent changes
    manifest["faiss"] = entry
    write_manifest(folder, manifest)
    return entry


def default_rerank(factory: str) -> int:
    """Lossy codes (PQ, SQ, LSH) are re-scored from the shards by default; exact ones are not.

    >>> default_rerank("IVF4096,PQ64"), default_rerank("HNSW32"), default_rerank("HNSW32,SQ8")
    (100, 0, 100)
    """
    return DEFAULT_RERANK if re.search(r"PQ|SQ|LSH|RQ", factory) else 0


def _has_ivf(index) -> bool:
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def _no_polysemous(index) -> None:
    """index_factory turns on polysemous training for IVF-PQ: minutes of annealing for a
    Hamming pre-filter that search does not use by default. Turn it off."""
    import faiss

    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False


def _train_on_gpu(index, d: int) -> None:
    """Run IVF k-means on the GPUs (the slow part of training) when faiss-gpu is present."""
    import faiss

    from retriever.dense.faiss_backend import gpu_available

    if not gpu_available():
        log.warning("faiss-gpu is not available: training on CPU")
        return
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(d))


def register_faiss_file(
    root: str | os.PathLike, name: str, path: str | os.PathLike, config
) -> dict:
    """Make ``root/dense-name`` point at an existing faiss index file (nothing is copied)."""
    from retriever.dense.faiss_backend import METRICS, flat_file_vectors, read_index

    root, path = Path(root), Path(path).resolve()
    store = DocStore.open(root / CORPUS_DIR)
    try:
        vectors, metric = flat_file_vectors(path)
        ntotal, dim, factory = vectors.shape[0], vectors.shape[1], "Flat"
    except Exception:  # not a flat file: ask faiss (IVF lists are memory-mapped)
        index = read_index(path)
        ntotal, dim, factory = int(index.ntotal), int(index.d), type(index).__name__
        metric = METRICS.get(int(index.metric_type), "l2")
    if ntotal != len(store):
        raise ManifestMismatchError(
            f"{path} holds {ntotal} vectors but the corpus {root / CORPUS_DIR} has {len(store)} "
            "passages: register it beside the corpus it was built from (e.g. its wiki-18.jsonl)"
        )
    model_config = model_file(config.model, "config.json")
    if model_config is not None:
        import orjson

        hidden = orjson.loads(model_config.read_bytes()).get("hidden_size")
        if hidden is not None and hidden != dim:
            raise ManifestMismatchError(
                f"{path} holds {dim}-d vectors but model {config.model} makes {hidden}-d ones: "
                "give the model that built the index"
            )
    folder = root / f"dense-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "kind": "dense",
        **config.manifest_fields(),
        "dim": dim,
        "metric": metric,
        "dtype": "float32",
        "num_docs": ntotal,
        "corpus_checksum": store.checksum,
        "shards": [],
        "row_map": "identity",
        "faiss": {
            "file": str(path),
            "factory": factory,
            "metric": metric,
            "ntotal": ntotal,
            "external": True,
            "nprobe": None,
            "ef_search": None,
        },
    }
    write_manifest(folder, manifest)
    return manifest
