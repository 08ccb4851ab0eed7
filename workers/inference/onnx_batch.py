"""Open the batch dimension of an ONNX graph exported with a fixed batch of 1.

Depends only on ``onnx`` and ``numpy`` (no onnxruntime, no project settings), so the
bare-GPU-host benchmark (tests/bench/gpu/) uses the very same surgery as the workers.

Two export patterns bake the example batch into a graph:

- a PyTorch ``x.view(1, -1)`` flatten: a constant Reshape target ``[1, ...]``. ONNX's
  Reshape reads 0 as "copy this dimension from the input", so ``[0, ...]`` keeps the
  batch (the recognizer, MiniFASNet).
- SCRFD's heads (``split_flattened_heads``): each head transposes (N, A*C, H, W) with perm
  ``[2, 3, 0, 1]`` to (H, W, N, A*C) and reshapes to ``[-1, C]``, (H*W*A, C). With N = 1
  perm ``[0, 2, 3, 1]`` gives the same data as (N, H, W, A*C), which a ``[0, -1, C]``
  Reshape splits per image: (N, H*W*A, C), InsightFace's batched SCRFD layout. Left as
  they were, a batch would be folded into the anchors and the images interleaved.

Targets computed at run time from the input's shape (SCRFD's Resize sizes) are already
batch-agnostic. Nothing here proves the result right: every caller compares batched
outputs with batch-1 outputs of the original graph before trusting it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def open_batch(
    model: onnx.ModelProto, *, split_flattened_heads: bool = False
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose batch dimension is free, and a list of the edits made.

    Graph inputs get dimension 0 ``N``; the recorded output and intermediate shapes (batch
    1, and for split heads a different rank) are dropped for ORT to infer again.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    edits: list[str] = []
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            edits.append(f"input {value.name}: batch {dims[0].dim_value} -> N")
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim
        if split_flattened_heads:
            value.type.tensor_type.ClearField("shape")
        elif dims and dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    if len(graph.value_info):
        edits.append(f"dropped {len(graph.value_info)} recorded intermediate shapes")
        del graph.value_info[:]

    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    initializers = {t.name: t for t in graph.initializer}
    done: set[str] = set()
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue  # there 0 means a zero-sized dimension, not "copy"
        target = node.input[1]
        if target in done:
            continue  # a shared initializer already rewritten
        if target in initializers:
            tensor = initializers[target]
        elif target in constants and constants[target].attribute[0].name == "value":
            tensor = constants[target].attribute[0].t
        else:
            continue  # computed at run time from the input shape: already batch-agnostic
        shape = numpy_helper.to_array(tensor)
        if shape.ndim != 1 or shape.size == 0:
            continue
        head = int(shape[0]) == -1 and shape.size >= 2 and bool((shape[1:] > 0).all())
        if int(shape[0]) == 1:
            new = shape.copy()
            new[0] = 0
        elif split_flattened_heads and head:
            new = np.concatenate([np.array([0, -1], dtype=shape.dtype), shape[1:]])
        else:
            continue
        users = [n for n in graph.node if n.op_type == "Reshape" and target in n.input]
        edits.append(f"Reshape target {shape.tolist()} -> {new.tolist()} ({len(users)} node(s))")
        tensor.CopyFrom(numpy_helper.from_array(new, tensor.name))
        done.add(target)
        if int(shape[0]) == -1:
            for user in users:
                _batch_first_transpose(graph, user.input[0], edits)
    return out, edits


def _batch_first_transpose(graph: onnx.GraphProto, tensor: str, edits: list[str]) -> None:
    """Keep the batch axis first in the Transpose producing ``tensor`` (see module docstring)."""
    producer = next((n for n in graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "Transpose":
        return
    attr = next((a for a in producer.attribute if a.name == "perm"), None)
    if attr is None or not attr.ints or attr.ints[0] == 0:
        return
    perm = list(attr.ints)
    new = [0, *(a for a in perm if a != 0)]
    del attr.ints[:]
    attr.ints.extend(new)
    edits.append(f"Transpose {producer.name} perm {perm} -> {new}")
