"""Dense retrieval over a ``dense-NAME`` part: query encoder + a faiss or torch search backend.

``load(folder, store, backend=..., device=...)`` is what ``Index.retriever("dense-NAME")``
calls. The part's manifest says how to encode queries (model, prefix, pooling, normalisation,
max length) and where the vectors are: our own shard files (``emb-*.npy``), a faiss index built
from them, or a user's existing faiss file (Search-R1's ``e5_Flat.index``) used as it is.

Backends: ``faiss`` (CPU; GPU with faiss-gpu, fp16, sharded or replicated) and ``torch`` (exact
matmul + top-k on one or more GPUs in fp16/bf16, or CPU in fp32; same ids as faiss Flat).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import BadRequestError, ClosedError, IndexFormatError, ManifestMismatchError
from ..manifest import check_corpus, read_manifest
from ..protocol import check_search_args
from ..script import script_converter
from ..store.docstore import DocStore
from ..types import Hit
from .encoders import Encoder, EncoderConfig, load_encoder, parse_devices

log = logging.getLogger(__name__)

BACKENDS = ("auto", "faiss", "torch")


class SearchBackend(Protocol):
    """Vector search: ``search(queries, k) -> (scores, row ids)``, best first, -1 for none."""

    num_rows: int
    dim: int

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class DenseRetriever:
    """``search(queries, k) -> list[list[Hit]]`` with queries encoded as the passages were.

    ``script``: the Chinese script the corpus was converted to (its manifest's
    ``script_conversion``); queries are converted to it before they are encoded."""

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        backend: SearchBackend,
        num_docs: int,
        script: str | None = None,
    ):
        self.name = name
        self.encoder = encoder
        self.backend = backend
        self.num_docs = num_docs
        self._convert = script_converter(script) if script else None

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if self.backend is None:  # before encoding them for nothing
            raise ClosedError(f"dense retriever {self.name!r}")
        queries, k = check_search_args(queries, k, self.num_docs)
        if not queries:
            return []
        if k == 0:
            return [[] for _ in queries]
        if self._convert is not None:
            queries = [self._convert(q) for q in queries]
        return self._search_vectors(self.encoder.encode_queries(queries), k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Search already-encoded queries (benchmarks, verify, hybrid re-use)."""
        return self._search_vectors(vectors, min(k, self.num_docs))

    def _search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """``k`` already clipped to the corpus (by ``search`` or ``search_vectors``)."""
        backend = self.backend
        if backend is None:
            raise ClosedError(f"dense retriever {self.name!r}")
        if len(vectors) == 0 or k == 0:
            return [[] for _ in range(len(vectors))]
        scores, ids = backend.search(vectors, k)
        return to_hits(scores, ids)

    def close(self) -> None:
        """Drop the backend and with it the mapped vectors and the faiss index (each mapping
        holds a file descriptor until it goes); the encoder stays, it holds no files. Safe
        twice; a search afterwards raises ClosedError."""
        backend, self.backend = self.backend, None
        close = getattr(backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> DenseRetriever:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_hits(scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Hit lists, best first, ties broken by lower row, padding (-1) dropped."""
    out = []
    for srow, irow in zip(scores.tolist(), ids.tolist()):
        hits = [Hit(i, s) for s, i in zip(srow, irow) if i >= 0]
        if any(srow[j] == srow[j + 1] for j in range(len(hits) - 1)):  # rare: order the ties
            hits.sort(key=lambda h: (-h.score, h.row))
        out.append(hits)
    return out


def vector_parts(folder: Path, manifest: dict) -> list[tuple[int, np.ndarray]]:
    """The part's vectors as ``(first_row, memory-mapped array)`` pairs, in row order."""
    if manifest.get("shards"):
        parts = []
        for shard in manifest["shards"]:
            path = folder / shard["file"]
            if not path.is_file():
                raise IndexFormatError(
                    f"{path} is missing: rerun python -m index_build encode for {folder.name}"
                )
            parts.append((int(shard["rows"][0]), np.load(path, mmap_mode="r")))
        return parts
    faiss_entry = manifest.get("faiss") or {}
    if faiss_entry.get("factory") == "Flat":
        from .faiss_backend import flat_file_vectors

        vectors, _ = flat_file_vectors(faiss_path(folder, manifest))
        return [(0, vectors)]
    raise IndexFormatError(
        f"{folder} has neither embedding shards nor a Flat faiss file: the torch backend needs one "
        "of them; use backend='faiss'"
    )


def faiss_path(folder: Path, manifest: dict) -> Path:
    entry = manifest.get("faiss")
    if not entry:
        raise IndexFormatError(
            f"{folder} has no faiss index: run python -m index_build faiss --index "
            f"{folder.parent} --name {folder.name.removeprefix('dense-')}, or use backend='torch'"
        )
    path = Path(entry["file"])
    return path if path.is_absolute() else folder / path


def _check_encoder(folder: Path, manifest: dict, encoder: Encoder) -> None:
    want = EncoderConfig.from_dict(manifest["encoder"])
    have = encoder.config
    if (have.model, have.pooling, have.normalize, have.query_prefix) != (
        want.model,
        want.pooling,
        want.normalize,
        want.query_prefix,
    ):
        raise ManifestMismatchError(
            f"{folder} was encoded with {want.model!r} (pooling {want.pooling}, prefix "
            f"{want.query_prefix!r}) but the query encoder is {have.model!r} (pooling "
            f"{have.pooling}, prefix {have.query_prefix!r}): load it with the manifest's model"
        )
    if getattr(encoder, "dim", manifest["dim"]) != manifest["dim"]:
        raise ManifestMismatchError(
            f"{folder} holds {manifest['dim']}-d vectors but model {have.model!r} makes "
            f"{encoder.dim}-d ones: load it with the manifest's model"
        )


def load(
    folder: str | os.PathLike,
    store: DocStore,
    backend: str = "auto",
    device: str | Sequence[str] = "cpu",
    dtype: str = "auto",
    model_path: str | None = None,
    encoder: Encoder | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    threads: int | None = None,
    shard: bool = True,
    batch_size: int = 64,
    block_rows: int | None = None,
    rerank: int | None = None,
    query_encoder: str = "torch",
) -> DenseRetriever:
    """Open ``folder`` (a ``dense-NAME`` part) for search against ``store``.

    ``backend``: ``faiss``, ``torch`` or ``auto`` (faiss when the part has a faiss index);
    ``device``: ``cpu``, ``cuda`` or ``cuda:0,1``; ``dtype`` of the torch matrix (``auto``:
    fp16 on GPU, fp32 on CPU); ``model_path``: where the manifest's model lies, when not at its
    recorded name; ``encoder``: a ready query encoder (must match the manifest);
    ``shard``: split the vectors over the devices (else replicate them; faiss-gpu and torch);
    ``rerank``: faiss candidates re-scored exactly from the shards (default: the manifest's,
    recorded at build time; 0 turns it off); ``query_encoder``: ``torch``, or on CPU ``onnx`` /
    ``onnx-int8`` (ONNX Runtime, exported and checked against fp32 at load: see onnx_encoder).
    """
    folder = Path(folder)
    manifest = read_manifest(folder, kind="dense")
    check_corpus(manifest, folder, store.manifest)
    if backend not in BACKENDS:
        raise BadRequestError(f"unknown dense backend {backend!r}; choose one of {BACKENDS}")
    devices = parse_devices(device)
    if backend == "auto":
        backend = "faiss" if manifest.get("faiss") else "torch"
    if encoder is None:
        config = EncoderConfig.from_dict(manifest["encoder"])
        if model_path:
            log.info("%s: loading model %s from %s", folder.name, config.model, model_path)
            config = EncoderConfig.from_dict({**config.to_dict(), "model": model_path})
        encoder = _query_encoder(config, query_encoder, devices[0], batch_size)
        encoder.config = EncoderConfig.from_dict(manifest["encoder"])  # recorded identity
    _check_encoder(folder, manifest, encoder)
    if backend == "torch":
        from .torch_backend import TorchBackend

        if manifest.get("metric", "ip") != "ip":
            raise BadRequestError(
                f"{folder} uses metric {manifest['metric']}; the torch backend does inner product only: use backend='faiss'"
            )
        search_backend = TorchBackend(
            vector_parts(folder, manifest), devices, dtype, block_rows, shard
        )
    else:
        search_backend = _faiss_backend(
            folder, manifest, devices, nprobe, ef_search, threads, shard, rerank
        )
    if search_backend.num_rows != manifest["num_docs"]:
        raise ManifestMismatchError(
            f"{folder}: the index holds {search_backend.num_rows} vectors but the manifest says "
            f"{manifest['num_docs']} passages: rebuild it"
        )
    script = (store.manifest.get("script_conversion") or {}).get("to")
    return DenseRetriever(folder.name, encoder, search_backend, len(store), script)


def _query_encoder(config: EncoderConfig, runtime: str, device: str, batch_size: int) -> Encoder:
    if runtime == "torch":
        return load_encoder(config, device, "auto", batch_size)
    from .onnx_encoder import QUERY_ENCODERS, OnnxEncoder

    if runtime not in QUERY_ENCODERS:
        raise BadRequestError(f"unknown query encoder {runtime!r}; choose one of {QUERY_ENCODERS}")
    if not device.startswith("cpu"):
        raise BadRequestError(
            f"--query-encoder {runtime} runs on CPU but the device is {device}: drop "
            "--query-encoder or use --device cpu"
        )
    return OnnxEncoder(config, runtime)


def _faiss_backend(folder, manifest, devices, nprobe, ef_search, threads, shard, rerank=None):
    from .faiss_backend import FaissBackend, read_index, set_search_params, to_gpu

    entry = manifest.get("faiss") or {}
    depth = entry.get("rerank") if rerank is None else rerank
    exact = (vector_parts(folder, manifest), depth) if depth and manifest.get("shards") else None
    index = read_index(faiss_path(folder, manifest))
    set_search_params(
        index,
        nprobe if nprobe is not None else entry.get("nprobe"),
        ef_search if ef_search is not None else entry.get("ef_search"),
    )
    metric = entry.get("metric", manifest.get("metric", "ip"))
    if devices[0].startswith("cuda"):
        parts = vector_parts(folder, manifest) if entry.get("factory") == "Flat" else None
        gpu_index, resources = to_gpu(index, devices, shard=shard, vectors=parts)
        backend = FaissBackend(gpu_index, metric, threads, on_gpu=True, rerank=exact)
        backend.resources = resources  # keep the GPU memory pools alive
        return backend
    return FaissBackend(index, metric, threads, rerank=exact)
