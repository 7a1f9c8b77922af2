"""A float64 copy of a model's forward pass, for finite differences far below float32 rounding.

ONNX Runtime's CPU provider has no float64 Conv, GlobalAveragePool, GlobalMaxPool, HardSigmoid
or Mean, so those are rewritten into ops it has: a Conv becomes Pad, one strided Slice per
kernel offset and a batched MatMul (im2col, groups and dilations included); the global pools
become ReduceMean and ReduceMax; HardSigmoid and HardSwish become Mul, Add and Clip; Mean a Sum
over a count. A model with another op ORT lacks in float64 (Erf, Resize, AveragePool, LRN, ...)
gets no copy, and `float64_copy` says which op stopped it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxpath.autodiff.walk import value_infos
from onnxpath.errors import OnnxPathError
from onnxpath.ort.external import has_external_data, with_weights_loaded
from onnxpath.ort.sessions import make_session

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
PREFIX = "onnxpath_f64"


class NoFloat64(Exception):
    """Why a model has no float64 copy."""


def float64_copy(model: onnx.ModelProto, folder: Path | None = None, device: str = "cpu",
                 threads: int | None = None):
    """(session, None) for a float64 copy of `model`, or (None, the reason there is none)."""
    try:
        converted = as_float64(model, folder)
        return make_session(converted, device, threads, folder), None
    except NoFloat64 as why:
        return None, str(why)
    except OnnxPathError as err:  # ORT refused the copy: an op without a float64 kernel
        text = str(err)
        op = text.split("implementation for ")[1].split("(")[0] \
            if "implementation for " in text else None
        return None, (f"ONNX Runtime has no float64 {op}" if op else text)


def as_float64(model: onnx.ModelProto, folder: Path | None = None) -> onnx.ModelProto:
    copy = with_weights_loaded(model, folder) if has_external_data(model) and folder \
        else _copy(model)
    graph = copy.graph
    infos = value_infos(copy)
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), 0)
    for tensor in graph.initializer:
        if tensor.data_type in FLOATS:
            tensor.CopyFrom(_double(tensor))
    nodes = []
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx"):
            raise NoFloat64(f"{node.op_type} (domain {node.domain}) has no float64 version")
        if any(a.HasField("g") or a.graphs for a in node.attribute):
            raise NoFloat64(f"{node.op_type} has a subgraph")
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type in FLOATS:
                attr.t.CopyFrom(_double(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i in FLOATS:
                attr.i = TensorProto.DOUBLE
        rewrite = REWRITES.get(node.op_type)
        made = rewrite(node, f"{PREFIX}/{index}", infos, graph, opset) if rewrite else None
        nodes.extend(made if made is not None else [node])
    del graph.node[:]
    graph.node.extend(nodes)
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type in FLOATS:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    del graph.value_info[:]
    return copy


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _double(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _const(graph: onnx.GraphProto, name: str, values, dtype=np.int64) -> str:
    graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype), name))
    return name


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _static(infos, *names) -> list[tuple[int, ...]]:
    shapes = [infos.get(name, (0, None))[1] for name in names]
    if not all(shape and all(isinstance(d, int) for d in shape[1:]) for shape in shapes):
        raise NoFloat64(f"no static shapes for the float64 rewrite of {', '.join(names)}")
    return shapes


def _window(a: dict, rank: int):
    return a.get("strides", [1] * rank), a.get("dilations", [1] * rank), a.get("group", 1)


def _auto_pad(a: dict) -> str:
    auto = a.get("auto_pad", b"NOTSET")
    return auto.decode() if isinstance(auto, bytes) else auto


def _conv(node, fresh, infos, graph, opset):
    a = _attrs(node)
    x_shape, w_shape = _static(infos, node.input[0], node.input[1])
    rank = len(x_shape) - 2
    strides, dilations, group = _window(a, rank)
    spatial, span = x_shape[2:], [(k - 1) * d + 1 for k, d in zip(w_shape[2:], dilations,
                                                                   strict=True)]
    pads, auto = list(a.get("pads", [0] * 2 * rank)), _auto_pad(a)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(rank):
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + span[i] - spatial[i])
            small, large = total // 2, total - total // 2
            pads[i], pads[rank + i] = (small, large) if auto == "SAME_UPPER" else (large, small)
    elif auto == "VALID":
        pads = [0] * 2 * rank
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return _im2col(graph, fresh, node.input[0], node.input[1], bias, node.output[0], x_shape,
                   w_shape, strides, dilations, pads, group)


def _im2col(graph, fresh, x, w, bias, y, x_shape, w_shape, strides, dilations, pads, group):
    """A convolution as Pad (negative pads crop), one strided Slice per kernel offset, and a
    MatMul per group."""
    rank, kernel, out_channels = len(x_shape) - 2, list(w_shape[2:]), w_shape[0]
    outs = [(x_shape[2 + i] + pads[i] + pads[rank + i] - (kernel[i] - 1) * dilations[i] - 1)
            // strides[i] + 1 for i in range(rank)]
    nodes, padded = [], x
    if any(pads):
        padded = f"{fresh}/padded"
        nodes.append(helper.make_node("Pad", [x, _const(
            graph, f"{fresh}/pads", [0, 0, *pads[:rank], 0, 0, *pads[rank:]])], [padded]))
    columns = []
    offsets = list(itertools.product(*(range(n) for n in kernel)))
    for k, offset in enumerate(offsets):
        starts = [o * d for o, d in zip(offset, dilations, strict=True)]
        ends = [s + (n - 1) * t + 1 for s, n, t in zip(starts, outs, strides, strict=True)]
        piece = f"{fresh}/slice{k}"
        if len(offsets) == 1 and all(t == 1 for t in strides):  # the slice is all of it
            columns.append(padded)  # a 1×1 convolution reads its input as it is
            break
        if not k:
            axes = _const(graph, f"{fresh}/axes", list(range(2, 2 + rank)))
            steps = _const(graph, f"{fresh}/steps", strides)
        nodes.append(helper.make_node("Slice", [padded, _const(graph, f"{piece}/starts", starts),
                                                _const(graph, f"{piece}/ends", ends), axes,
                                                steps], [piece]))
        columns.append(piece)
    pixels = int(np.prod(outs))
    # Concatenated on axis 2, the slices lie in memory as N, C, K, *out.
    stacked = columns[0]
    if len(columns) > 1:
        stacked = f"{fresh}/stacked"
        nodes.append(helper.make_node("Concat", columns, [stacked], axis=2))
    nodes += [
        helper.make_node("Reshape", [stacked, _const(graph, f"{fresh}/cols_shape",
                                                     [0, group, -1, pixels])], [f"{fresh}/cols"]),
        helper.make_node("Reshape", [w, _const(
            graph, f"{fresh}/w_shape", [group, out_channels // group, -1])], [f"{fresh}/w"]),
        helper.make_node("MatMul", [f"{fresh}/w", f"{fresh}/cols"], [f"{fresh}/y"]),
    ]
    shaped = y if bias is None else f"{fresh}/nobias"
    nodes.append(helper.make_node("Reshape", [f"{fresh}/y", _const(
        graph, f"{fresh}/y_shape", [0, out_channels, *outs])], [shaped]))
    if bias is not None:
        nodes += [helper.make_node("Reshape", [bias, _const(
                      graph, f"{fresh}/b_shape", [out_channels] + [1] * rank)], [f"{fresh}/b"]),
                  helper.make_node("Add", [shaped, f"{fresh}/b"], [y])]
    return nodes


def _conv_transpose(node, fresh, infos, graph, opset):
    """ConvTranspose as a stride-1 convolution of the input with zeros inserted between its
    elements, by the flipped kernel with its two channel axes swapped per group."""
    a = _attrs(node)
    x_shape, w_shape = _static(infos, node.input[0], node.input[1])
    rank = len(x_shape) - 2
    strides, dilations, group = _window(a, rank)
    spatial, kernel = list(x_shape[2:]), list(w_shape[2:])
    extra = list(a.get("output_padding", [0] * rank))
    pads, auto, target = list(a.get("pads", [0] * 2 * rank)), _auto_pad(a), a.get("output_shape")
    if target is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        target = [n * s for n, s in zip(spatial, strides, strict=True)]
    if target is not None:  # then ONNX Runtime derives the pads, as the spec says
        total = [strides[i] * (spatial[i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
                 - list(target)[-rank:][i] for i in range(rank)]
        small, large = [t // 2 for t in total], [t - t // 2 for t in total]
        pads = small + large if auto == "SAME_UPPER" else large + small
    elif auto == "VALID":
        pads = [0] * 2 * rank
    x, nodes = node.input[0], []
    if any(s > 1 for s in strides):
        # N, C, d1, 1, d2, 1, ... -> pad each 1 to s - 1 zeros after -> N, C, d1·s1, ... -> cut
        spread = [0, 0, *[v for n in spatial for v in (n, 1)]]
        nodes += [
            helper.make_node("Reshape", [x, _const(graph, f"{fresh}/spread", spread)],
                             [f"{fresh}/x6"]),
            helper.make_node("Pad", [f"{fresh}/x6", _const(
                graph, f"{fresh}/zeros", [0] * len(spread) + [0, 0, *[v for s in strides
                                                                     for v in (0, s - 1)]])],
                [f"{fresh}/x6p"]),
            helper.make_node("Reshape", [f"{fresh}/x6p", _const(graph, f"{fresh}/merged", [
                0, 0, *[n * s for n, s in zip(spatial, strides, strict=True)]])],
                [f"{fresh}/xs"]),
            helper.make_node("Slice", [f"{fresh}/xs", _const(graph, f"{fresh}/s0", [0] * rank),
                                       _const(graph, f"{fresh}/s1", [
                                           (n - 1) * s + 1 for n, s in zip(spatial, strides,
                                                                           strict=True)]),
                                       _const(graph, f"{fresh}/sa", list(range(2, 2 + rank)))],
                             [f"{fresh}/xu"])]
        x = f"{fresh}/xu"
    c_in, per_group = w_shape[0], w_shape[1]
    flip = list(range(2, 2 + rank))
    nodes += [
        helper.make_node("Reshape", [node.input[1], _const(graph, f"{fresh}/wg_shape", [
            group, c_in // group, per_group, *kernel])], [f"{fresh}/wg"]),
        helper.make_node("Transpose", [f"{fresh}/wg"], [f"{fresh}/wt"],
                         perm=[0, 2, 1, *range(3, 3 + rank)]),
        helper.make_node("Reshape", [f"{fresh}/wt", _const(graph, f"{fresh}/wm_shape", [
            group * per_group, c_in // group, *kernel])], [f"{fresh}/wm"]),
        helper.make_node("Slice", [f"{fresh}/wm", _const(graph, f"{fresh}/f0", [-1] * rank),
                                   _const(graph, f"{fresh}/f1", [-(2 ** 62)] * rank),
                                   _const(graph, f"{fresh}/fa", flip),
                                   _const(graph, f"{fresh}/fs", [-1] * rank)], [f"{fresh}/wf"])]
    span = [(k - 1) * d for k, d in zip(kernel, dilations, strict=True)]
    conv_pads = [span[i] - pads[i] for i in range(rank)] + [
        span[i] - pads[rank + i] + extra[i] for i in range(rank)]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    upsampled = [0, 0, *[(n - 1) * s + 1 for n, s in zip(spatial, strides, strict=True)]]
    return nodes + _im2col(graph, f"{fresh}/conv", x, f"{fresh}/wf", bias, node.output[0],
                           upsampled, [group * per_group, c_in // group, *kernel],
                           [1] * rank, dilations, conv_pads, group)


def _global_pool(node, fresh, infos, graph, opset):
    shape = infos.get(node.input[0], (0, None))[1]
    if not shape:
        raise NoFloat64(f"{node.op_type} '{node.name}' has no known rank")
    op = "ReduceMean" if node.op_type == "GlobalAveragePool" else "ReduceMax"
    axes = list(range(2, len(shape)))
    if opset < 18:  # axes became an input in opset 18
        return [helper.make_node(op, [node.input[0]], list(node.output), axes=axes, keepdims=1)]
    return [helper.make_node(op, [node.input[0], _const(graph, f"{fresh}/axes", axes)],
                             list(node.output), keepdims=1)]


def _hard_sigmoid(node, fresh, infos, graph, opset):
    a = _attrs(node)
    alpha, beta = (a.get("alpha", 0.2), a.get("beta", 0.5)) if node.op_type == "HardSigmoid" \
        else (1 / 6, 0.5)
    x, out = node.input[0], node.output[0]
    clipped = out if node.op_type == "HardSigmoid" else f"{fresh}/hs"
    nodes = [helper.make_node("Mul", [x, _const(graph, f"{fresh}/alpha", alpha, np.float64)],
                              [f"{fresh}/ax"]),
             helper.make_node("Add", [f"{fresh}/ax", _const(graph, f"{fresh}/beta", beta,
                                                            np.float64)], [f"{fresh}/axb"]),
             helper.make_node("Clip", [f"{fresh}/axb", _const(graph, f"{fresh}/lo", 0.0,
                                                              np.float64),
                                       _const(graph, f"{fresh}/hi", 1.0, np.float64)], [clipped])]
    if node.op_type == "HardSwish":
        nodes.append(helper.make_node("Mul", [x, clipped], [out]))
    return nodes


def _mean(node, fresh, infos, graph, opset):
    total = f"{fresh}/sum"
    return [helper.make_node("Sum", list(node.input), [total]),
            helper.make_node("Div", [total, _const(graph, f"{fresh}/n", float(len(node.input)),
                                                   np.float64)], list(node.output))]


REWRITES = {"Conv": _conv, "ConvTranspose": _conv_transpose, "GlobalAveragePool": _global_pool,
            "GlobalMaxPool": _global_pool, "HardSigmoid": _hard_sigmoid,
            "HardSwish": _hard_sigmoid, "Mean": _mean}
