"""Ops that select, repeat or pad elements. Their adjoints scatter-add the gradient back to the
elements that were read; repeats (Gather with duplicate indices, Tile, reflect padding) add up.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule

INT64_MAX = np.iinfo(np.int64).max
INT32_MAX = np.iinfo(np.int32).max


def _known(b: GraphBuilder, name: str | None, what: str) -> np.ndarray | None:
    if not name:
        return None
    value = b.constant_value(name)
    if value is None:
        raise ValueError(f"{what} computed at run time")
    return value


def scatter_add_along(b: GraphBuilder, g: str, indices: str, axis: int, length: int,
                      rank: int) -> str:
    """Adjoint of Gather(x, indices, axis) for 1-D `indices`: a tensor shaped like `g` (of rank
    `rank`) but `length` long on `axis`, where slice k of `g` is added at position indices[k]."""
    pieces = [b.ints([length])]
    if axis > 0:
        pieces.insert(0, b.op("Shape", g, end=axis))
    if axis < rank - 1:
        pieces.append(b.op("Shape", g, start=axis + 1))
    zero = b.const(np.zeros(1))
    zeros = b.op("Expand", zero, b.op("Concat", *pieces, axis=0))
    column = b.op("Reshape", indices, b.ints([1] * axis + [-1] + [1] * (rank - axis - 1)))
    spread = b.op("Expand", column, b.shape_of(g))
    return b.scatter_add(zeros, spread, g, axis)


def slice_positions(start: int, end: int, step: int, length: int) -> list[int]:
    """The indices Slice reads along one axis, clamped as the ONNX spec says."""
    start = start + length if start < 0 else start
    end = end + length if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), length), min(max(end, 0), length)
    else:
        start, end = min(max(start, 0), length - 1), min(max(end, -1), length - 1)
    return list(range(start, end, step))


@rule("Slice")
def slice_(node: Node, dy, b: GraphBuilder):
    x = node.inputs[0]
    rank, shape = b.rank(x), b.shape(x)
    starts = _known(b, node.input(1), "Slice starts")
    ends = _known(b, node.input(2), "Slice ends")
    axes = _known(b, node.input(3), "Slice axes")
    steps = _known(b, node.input(4), "Slice steps")
    axes = range(len(starts)) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    g = dy[0]
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        length = shape[axis]
        if not isinstance(length, int):
            if int(start) == 0 and int(step) == 1 and int(end) >= INT32_MAX:
                continue  # the whole axis, whatever its length (tf2onnx slices every axis)
            raise ValueError(f"Slice along dynamic axis {axis}")
        positions = slice_positions(int(start), int(end), int(step), length)
        if positions == list(range(length)):
            continue
        if step == 1 and positions:  # a contiguous crop: pad the gradient with zeros
            pads = [0] * (2 * rank)
            pads[axis], pads[rank + axis] = positions[0], length - 1 - positions[-1]
            g = b.op("Pad", g, b.ints(pads))
        else:
            g = scatter_add_along(b, g, b.ints(positions), axis, length, rank)
    return [g] + [None] * 4


@rule("Split")
def split(node: Node, dy, b: GraphBuilder):
    # Outputs that do not reach the target contribute zeros of their own shape.
    parts = [g if g is not None else b.zeros_like(o) for g, o in zip(dy, node.outputs,
                                                                     strict=True)]
    return [b.op("Concat", *parts, axis=node.attr("axis", 0)), None]


def _non_negative(b: GraphBuilder, indices: str, length: int) -> str:
    """Negative indices count from the end; make them plain positions for ScatterElements."""
    value = b.constant_value(indices)
    if value is not None:
        return b.const(np.where(value < 0, value + length, value).astype(np.int64))
    indices = b.op("Cast", indices, to=onnx.TensorProto.INT64)
    size, zero = b.const(np.asarray(length, np.int64)), b.const(np.asarray(0, np.int64))
    return b.op("Where", b.op("Less", indices, zero), b.op("Add", indices, size), indices)


def _static_length(b: GraphBuilder, x: str, axis: int, op: str) -> int:
    length = b.shape(x)[axis]
    if not isinstance(length, int):
        raise ValueError(f"{op} along dynamic axis {axis}")
    return length


@rule("Gather")
def gather(node: Node, dy, b: GraphBuilder):
    x, indices = node.inputs
    rank = b.rank(x)
    axis = node.attr("axis", 0) % rank
    length = _static_length(b, x, axis, "Gather")
    # dy is x's shape with `axis` replaced by the indices' shape: fold those into one axis.
    g = dy[0]
    if b.rank(indices) != 1:
        pieces = [b.ints([-1])]
        if axis > 0:
            pieces.insert(0, b.op("Shape", x, end=axis))
        if axis < rank - 1:
            pieces.append(b.op("Shape", x, start=axis + 1))
        g = b.op("Reshape", g, b.op("Concat", *pieces, axis=0))
    flat = b.op("Reshape", _non_negative(b, indices, length), b.ints([-1]))
    return [scatter_add_along(b, g, flat, axis, length, rank), None]


@rule("GatherElements")
def gather_elements(node: Node, dy, b: GraphBuilder):
    x, indices = node.inputs
    axis = node.attr("axis", 0) % b.rank(x)
    positions = _non_negative(b, indices, _static_length(b, x, axis, "GatherElements"))
    gx = b.scatter_add(b.zeros_like(x), positions, dy[0], axis)
    return [gx, None]


@rule("Expand")
def expand(node: Node, dy, b: GraphBuilder):
    return [b.unbroadcast(dy[0], node.inputs[0], node.outputs[0]), None]


@rule("Tile")
def tile(node: Node, dy, b: GraphBuilder):
    # View the tiled axis i as (repeats_i, size_i) and sum over the repeats.
    x = node.inputs[0]
    repeats = _known(b, node.inputs[1], "Tile repeats")
    sizes = [d if isinstance(d, int) else -1 for d in b.shape(x)]
    if sizes.count(-1) > 1:
        raise ValueError("Tile of a tensor with several dynamic dims")
    interleaved = [v for r, d in zip(repeats, sizes, strict=True) for v in (int(r), d)]
    folded = b.op("Reshape", dy[0], b.ints(interleaved))
    return [b.op("ReduceSum", folded, b.ints(range(0, 2 * len(sizes), 2)), keepdims=0), None]


@rule("Pad")
def pad(node: Node, dy, b: GraphBuilder):
    x = node.inputs[0]
    rank, shape = b.rank(x), b.shape(x)
    pads = [int(p) for p in _known(b, node.inputs[1], "Pad pads")]
    axes = _known(b, node.input(3), "Pad axes")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    begins, ends = pads[:len(axes)], pads[len(axes):]
    mode = node.attr("mode", "constant")
    g = dy[0]
    if mode == "constant":
        # Crop the padding away; negative pads cropped x, so pad the gradient back with zeros.
        g = b.op("Slice", g, b.ints([max(p, 0) for p in begins]),
                 b.ints([-p if p > 0 else INT64_MAX for p in ends]), b.ints(axes))
        if min(pads) < 0:
            full = [0] * (2 * rank)
            for a, p, q in zip(axes, begins, ends, strict=True):
                full[a], full[rank + a] = max(-p, 0), max(-q, 0)
            g = b.op("Pad", g, b.ints(full))
        return [g, None, None, None]
    if min(pads) < 0:
        raise NotImplementedError(f"Pad mode {mode} with negative pads")
    for axis, begin, end in zip(axes, begins, ends, strict=True):
        if begin == end == 0:
            continue
        length = shape[axis]
        if not isinstance(length, int):
            raise ValueError(f"Pad mode {mode} along dynamic axis {axis}")
        # Which input element each output element copies, per numpy (same as ONNX's modes).
        source = np.pad(np.arange(length), (begin, end), mode=mode)
        g = scatter_add_along(b, g, b.ints(source), axis, length, rank)
    return [g, None, None, None]
