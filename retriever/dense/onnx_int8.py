"""Int8 weights with per-token activation scales: a row's vector does not depend on its batch.

ONNX Runtime's dynamic quantisation scales each MatMul's whole input tensor by one range, so a
query's vector changes with its batch-mates and their padding; the query encoder then had to
run one text at a time. Here each token (each row of a MatMul's input) gets its own scale,
``max|x| / 127``, and the fixed zero point 128 (uint8), while the weights are int8 with one
scale per output channel. The product is exact in int32 (``MatMulInteger``), then multiplied by
the token's scale and the channel's scale. No token's numbers depend on another token's, so a
text's vector in a padded batch equals its vector alone up to the float rounding of the fp32
operators, and batches can be as large as speed wants. Per-token scales also follow outlier
tokens closely enough that every linear layer can be int8 (the per-tensor scheme had to keep
the FFN output projections in fp32), which is most of the speed-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SCHEME = "per-token-u8-per-channel-s8"  # recorded in the cache key: a new scheme, a new file
_EPS = 1e-12  # an all-zero row gets this range instead of a division by zero


def quantize_per_token(src: Path, dst: Path) -> int:
    """Write ``src`` with every MatMul by a constant 2-D weight made per-token int8; returns
    how many were replaced (the attention products, activation by activation, stay fp32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    added = [
        numpy_helper.from_array(np.array(_EPS, np.float32), "ptq_eps"),
        numpy_helper.from_array(np.array(127.0, np.float32), "ptq_127"),
        numpy_helper.from_array(np.array(128.0, np.float32), "ptq_128f"),
        numpy_helper.from_array(np.array(128, np.uint8), "ptq_zero_point"),
    ]
    nodes, replaced, count = [], set(), 0
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is None or len(w.dims) != 2:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(w).astype(np.float32)
        channel_scale = np.maximum(np.abs(weight).max(axis=0), _EPS) / 127.0
        q = np.clip(np.round(weight / channel_scale), -127, 127).astype(np.int8)
        p = f"ptq{count}_"
        count += 1
        added += [
            numpy_helper.from_array(q, p + "w"),
            numpy_helper.from_array(channel_scale.astype(np.float32), p + "w_scale"),
        ]
        x = node.input[0]
        nodes += [
            helper.make_node("Abs", [x], [p + "abs"]),
            helper.make_node("ReduceMax", [p + "abs"], [p + "range"], axes=[-1], keepdims=1),
            helper.make_node("Max", [p + "range", "ptq_eps"], [p + "range1"]),
            helper.make_node("Div", [p + "range1", "ptq_127"], [p + "scale"]),
            helper.make_node("Div", [x, p + "scale"], [p + "scaled"]),
            helper.make_node("Round", [p + "scaled"], [p + "rounded"]),
            helper.make_node("Add", [p + "rounded", "ptq_128f"], [p + "shifted"]),
            helper.make_node("Cast", [p + "shifted"], [p + "x_u8"], to=TensorProto.UINT8),
            helper.make_node("MatMulInteger", [p + "x_u8", p + "w", "ptq_zero_point"], [p + "i32"]),
            helper.make_node("Cast", [p + "i32"], [p + "f32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "f32", p + "scale"], [p + "by_token"]),
            helper.make_node("Mul", [p + "by_token", p + "w_scale"], [node.output[0]]),
        ]
        replaced.add(w.name)
    still_used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    log.info("per-token int8: %d MatMuls of %s quantised", count, src.name)
    return count
