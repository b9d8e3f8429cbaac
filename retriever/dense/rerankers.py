"""Model rerankers: a bi-encoder (any dense encoder) and a sentence-transformers cross-encoder.

Both score only the candidates they are given, one model call per batch of queries: the
bi-encoder encodes the queries and the distinct candidate texts of the whole batch once, the
cross-encoder reads every (query, own candidate) pair in one ``predict``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from ..errors import BadRequestError, IndexFormatError
from ..rerank import KINDS, BatchScoring, split_per_query
from .encoders import Encoder, load_encoder, model_file, resolve_config

log = logging.getLogger(__name__)


class BiEncoderReranker(BatchScoring):
    """Inner product of the encoder's query and passage vectors, as its dense part scores."""

    def __init__(self, encoder: Encoder, name: str | None = None):
        self.encoder = encoder
        self.name = name or f"bi-encoder:{encoder.config.model}"

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        if len(queries) != len(passages):
            raise BadRequestError(f"{len(queries)} queries but {len(passages)} candidate lists")
        if not queries:
            return []
        slot: dict[str, int] = {}  # a passage met by several queries is encoded once
        for texts in passages:
            for t in texts:
                slot.setdefault(t, len(slot))
        q = self.encoder.encode_queries(list(queries))
        p = self.encoder.encode_passages(list(slot)) if slot else np.zeros((0, q.shape[1]))
        out = []
        for i, texts in enumerate(passages):
            rows = np.fromiter((slot[t] for t in texts), dtype=np.int64, count=len(texts))
            out.append((p[rows] @ q[i]).astype(np.float32))
        return out


class CrossEncoderReranker(BatchScoring):
    """A sentence-transformers ``CrossEncoder`` loaded by path; scores are its raw logits
    (no sigmoid: a monotone squash only adds ties in float32)."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
    ):
        import torch
        from sentence_transformers import CrossEncoder

        local = Path(model).is_dir()
        try:
            self.model = CrossEncoder(
                model,
                device=device,
                max_length=max_length,
                local_files_only=local,
                activation_fn=torch.nn.Identity(),
            )
        except Exception as exc:  # OSError, ValueError, safetensors errors: all say "cannot load"
            raise IndexFormatError(
                f"cannot load cross-encoder {model!r}: {exc}. Give a sentence-transformers "
                "CrossEncoder folder (config.json with a ...ForSequenceClassification head)"
            ) from exc
        self.name = f"cross-encoder:{model}"
        self.batch_size = batch_size

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        if len(queries) != len(passages):
            raise BadRequestError(f"{len(queries)} queries but {len(passages)} candidate lists")
        pairs = [(q, t) for q, texts in zip(queries, passages) for t in texts]
        if not pairs:
            return [np.zeros(0, np.float32) for _ in queries]
        flat = self.model.predict(
            pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        flat = np.asarray(flat, dtype=np.float32)
        if flat.ndim == 2:  # several labels: the last is "relevant" by convention
            flat = flat[:, -1]
        return split_per_query(flat, passages)


def detect_kind(model: str) -> str:
    """``cross-encoder`` when the model's config declares a sequence-classification head,
    else ``bi-encoder`` (read from its own files, never from its name)."""
    path = model_file(model, "config.json")
    if path is None:
        raise IndexFormatError(
            f"reranker model {model!r} has no config.json: give a model folder, a dense part "
            f"(dense-NAME) or KIND:MODEL with KIND one of {KINDS}"
        )
    try:
        config = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise IndexFormatError(f"{path} is not valid JSON ({exc}): reinstall the model") from None
    heads = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if any(a.endswith("ForSequenceClassification") for a in heads):
        return "cross-encoder"
    return "bi-encoder"


def load_model_reranker(
    kind: str | None, model: str, device: str = "cpu", batch_size: int = 64
) -> BatchScoring:
    """A reranker from a model folder (or a cached hub name): ``kind`` None reads it."""
    kind = kind or detect_kind(model)
    if kind == "cross-encoder":
        return CrossEncoderReranker(model, device=device, batch_size=batch_size)
    if kind == "bi-encoder":
        encoder = load_encoder(resolve_config(model), device=device, batch_size=batch_size)
        return BiEncoderReranker(encoder)
    raise BadRequestError(f"reranker kind {kind!r} does not load from a model; use one of {KINDS}")
