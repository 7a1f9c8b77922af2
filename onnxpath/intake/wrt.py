"""What is attributed when it is not the model input itself: a tensor inside the graph.

Token ids cannot be differentiated; what can is the output of the embedding lookup, the Gather
on a float initializer that the ids feed (`find_embedding`). The model intake (`model.py`,
`intake/cut.py`) cuts the model there; this module finds the lookup and its table, whose pad
row is the default baseline for text.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from onnxpath.errors import UsageError
from onnxpath.intake.model import WRT_FINDERS
from onnxpath.intake.unfuse import unfuse

INTEGER_TYPES = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
                 TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64)
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def find_embedding(model: onnx.ModelProto) -> str | None:
    """The output of the embedding lookup: a Gather whose data is a float initializer and whose
    indices are an integer graph input. Token-type and position tables also match; the word
    table is the one with the most rows. ONNX Runtime's EmbedLayerNormalization is unfused
    first (intake/unfuse_norm.py), as the intake does, so its word lookup is found too."""
    model = unfuse(model)
    tables = {i.name: i for i in model.graph.initializer if i.data_type in FLOAT_TYPES}
    integer_inputs = {i.name for i in _data_inputs(model)
                      if i.type.tensor_type.elem_type in INTEGER_TYPES}
    best, rows = None, -1
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in tables \
                and node.input[1] in integer_inputs:
            size = tables[node.input[0]].dims[0] if tables[node.input[0]].dims else 0
            if size > rows:
                best, rows = node.output[0], size
    return best


def embedding_lookup(model: onnx.ModelProto, ids: str, logits: str,
                     infos: dict) -> tuple[str, str] | None:
    """A WRT_FINDERS entry (model.py): the lookup that the token ids `ids` feed directly, so a
    float tensor computed from the ids for another purpose (a padding mask cast to float)
    is never taken for the embeddings."""
    tables = {i.name: i for i in model.graph.initializer if i.data_type in FLOAT_TYPES}
    found = [(tables[n.input[0]].dims[0] if tables[n.input[0]].dims else 0, n.output[0])
             for n in model.graph.node
             if n.op_type == "Gather" and n.input[0] in tables and n.input[1] == ids]
    if not found:
        return None
    return max(found)[1], "the embedding lookup of the token ids"


WRT_FINDERS.append(embedding_lookup)


def embedding_table(model: onnx.ModelProto, tensor: str):
    """The float table behind an exposed embedding lookup, or None for any other tensor."""
    model = unfuse(model)  # the names the intake gave an unfused EmbedLayerNormalization
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "Gather":
        return None
    table = next((i for i in model.graph.initializer if i.name == producer.input[0]), None)
    return None if table is None else onnx.numpy_helper.to_array(table)


def embedding_defaults(model: onnx.ModelProto, wrt: str | None, pad_id: int,
                       options: dict) -> dict:
    """Attributing an embedding lookup's output: the pad token's embedding is the baseline
    (integrated gradients, occlusion, LIME, KernelSHAP), and tokens (rows of the T×D map) are
    the features the forward-only methods switch."""
    table = embedding_table(model, wrt) if wrt else None
    if table is None:
        return options
    options = dict(options)
    if options.get("baseline") is None:
        if not 0 <= pad_id < len(table):
            raise UsageError(f"pad token id {pad_id} is outside the embedding table "
                             f"({len(table)} rows)")
        options["baseline"] = table[pad_id].astype(np.float32)
    options.setdefault("segments", "rows")
    return options
