"""What is attributed when it is not the model input itself: a tensor inside the graph.

Token ids cannot be differentiated; what can is the output of the embedding lookup, the Gather
on a float initializer that the ids feed (`find_embedding`). `expose` rewrites a model so that
such a tensor becomes a graph input: its producer goes, and the inputs that only fed it go with
it. The rest of onnxpath then differentiates the exposed model as any one-input model, the
other inputs (attention mask, token types) riding along as side inputs. The tensor's value for a
given input comes from one forward run of the original model (`wrt_values`).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .autodiff.walk import prune_unused, value_infos
from .errors import UsageError

INTEGER_TYPES = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
                 TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64)
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def find_embedding(model: onnx.ModelProto) -> str | None:
    """The output of the embedding lookup: a Gather whose data is a float initializer and whose
    indices are an integer graph input. Token-type and position tables also match; the word
    table is the one with the most rows."""
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


def default_wrt(model: onnx.ModelProto) -> str | None:
    """The embedding output when the first input is integer token ids; None otherwise (the
    input itself is attributed)."""
    inputs = _data_inputs(model)
    if inputs and inputs[0].type.tensor_type.elem_type in INTEGER_TYPES:
        return find_embedding(model)
    return None


def embedding_table(model: onnx.ModelProto, tensor: str):
    """The float table behind an exposed embedding lookup, or None for any other tensor."""
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "Gather":
        return None
    table = next((i for i in model.graph.initializer if i.name == producer.input[0]), None)
    return None if table is None else onnx.numpy_helper.to_array(table)


def expose(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """A copy of `model` in which `tensor` is a graph input (its producer removed); inputs and
    nodes that nothing needs any more are dropped."""
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    names = {i.name for i in model.graph.input}
    if producer is None:
        if tensor in names:
            return model
        raise UsageError(f"--wrt {tensor}: no such tensor in the model")
    infos = value_infos(model)
    elem, shape = infos.get(tensor, (TensorProto.FLOAT, None))
    if elem not in FLOAT_TYPES:
        raise UsageError(f"--wrt {tensor}: the tensor is not floating point, so it cannot be "
                         "differentiated")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept = [n for n in graph.node if n is not producer and tensor not in n.output]
    del graph.node[:]
    graph.node.extend(kept)
    if shape is not None:
        dims = [d if isinstance(d, int) else (d or f"{tensor}_{k}") for k, d in enumerate(shape)]
        dims[0] = "batch"
    else:
        dims = None
    graph.input.append(helper.make_tensor_value_info(tensor, elem, dims))
    out = prune_unused(out)
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    inputs = [i for i in out.graph.input if i.name in used]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    # Keep the new input next to the old ones, but first: onnxpath's primary input.
    order = sorted(out.graph.input, key=lambda i: i.name != tensor)
    del out.graph.input[:]
    out.graph.input.extend(order)
    kept_infos = [v for v in out.graph.value_info if v.name != tensor]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept_infos)
    return out
