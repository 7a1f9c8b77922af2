"""Ops that move, select or scatter elements without arithmetic: each adjoint sends the gradient
back to the element it came from (a gather's adjoint scatter-adds, a scatter's adjoint gathers),
and zero to elements that were overwritten or dropped.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.index import scatter_add_along


@rule("Trilu")
def trilu(node: Node, dy, b: GraphBuilder):
    # The same triangle of the gradient passes; the zeroed one had no effect.
    return [b.op("Trilu", dy[0], node.input(1), upper=node.attr("upper", 1)), None]


@rule("DepthToSpace")
def depth_to_space(node: Node, dy, b: GraphBuilder):
    # A permutation of elements: its adjoint is the inverse permutation. DCR's inverse is
    # SpaceToDepth; CRD (PixelShuffle) moves the block offsets back behind the channel.
    block = node.attr("blocksize")
    if node.attr("mode", "DCR") == "DCR":
        return [b.op("SpaceToDepth", dy[0], blocksize=block)]
    channels, height, width = b.static_shape(node.inputs[0], 1)
    split = b.op("Reshape", dy[0], b.ints([0, channels // block**2, height, block, width, block]))
    blocks_first = b.op("Transpose", split, perm=[0, 1, 3, 5, 2, 4])
    return [b.op("Reshape", blocks_first, b.ints([0, channels, height, width]))]


@rule("SpaceToDepth")
def space_to_depth(node: Node, dy, b: GraphBuilder):
    return [b.op("DepthToSpace", dy[0], blocksize=node.attr("blocksize"), mode="DCR")]


@rule("ReverseSequence")
def reverse_sequence(node: Node, dy, b: GraphBuilder):
    # Reversing the same prefixes again sends each gradient back to where its element was.
    return [b.op("ReverseSequence", dy[0], node.inputs[1], batch_axis=node.attr("batch_axis", 1),
                 time_axis=node.attr("time_axis", 0)), None]


@rule("CenterCropPad")
def center_crop_pad(node: Node, dy, b: GraphBuilder):
    # Cropping the gradient back where x was padded, and padding it with zeros where x was
    # cropped, is CenterCropPad to x's own shape (both centre with the same rounding).
    x = node.inputs[0]
    shape = b.shape_of(x)
    axes = node.attr("axes")
    if axes is not None:
        shape = b.op("Gather", shape, b.ints([int(a) % b.rank(x) for a in axes]))
    return [b.op("CenterCropPad", dy[0], shape, axes=axes), None]


@rule("Compress")
def compress(node: Node, dy, b: GraphBuilder):
    # Compress is Gather at the positions where the condition holds (on x flattened when no
    # axis is given): scatter-add back there.
    x, condition = node.inputs
    positions = b.op("Reshape", b.op("NonZero", condition), b.ints([-1]))
    axis = node.attr("axis")
    if axis is None:
        length = int(np.prod(b.static_shape(x)))
        flat = scatter_add_along(b, dy[0], positions, 0, length, 1)
        return [b.reshape_like(flat, x), None]
    rank = b.rank(x)
    axis %= rank
    return [scatter_add_along(b, dy[0], positions, axis, b.static_shape(x)[axis], rank), None]


@rule("GatherND")
def gather_nd(node: Node, dy, b: GraphBuilder):
    if node.attr("batch_dims", 0):
        raise NotImplementedError("GatherND with batch_dims")
    x, indices = node.inputs
    return [b.op("ScatterND", b.zeros_like(x), indices, dy[0], reduction="add"), None]


@rule("ScatterND")
def scatter_nd(node: Node, dy, b: GraphBuilder):
    data, indices, updates = node.inputs
    reduction = node.attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise NotImplementedError(f"ScatterND with reduction '{reduction}'")
    g_data = g_updates = None
    if b.needs(data):  # overwritten elements never reach the output
        g_data = dy[0] if reduction == "add" else \
            b.op("ScatterND", dy[0], indices, b.zeros_like(updates))
    if b.needs(updates):
        g_updates = b.op("GatherND", dy[0], indices)
    return [g_data, None, g_updates]


@rule("ScatterElements")
def scatter_elements(node: Node, dy, b: GraphBuilder):
    data, indices, updates = node.inputs
    axis = node.attr("axis", 0)
    reduction = node.attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise NotImplementedError(f"ScatterElements with reduction '{reduction}'")
    g_data = g_updates = None
    if b.needs(data):
        g_data = dy[0] if reduction == "add" else \
            b.op("ScatterElements", dy[0], indices, b.zeros_like(updates), axis=axis)
    if b.needs(updates):
        g_updates = b.op("GatherElements", dy[0], indices, axis=axis)
    return [g_data, None, g_updates]


@rule("TopK")
def top_k(node: Node, dy, b: GraphBuilder):
    # Only the values output carries a gradient; it returns to the positions they came from.
    x = node.inputs[0]
    if dy[0] is None:
        return [None, None]
    axis = node.attr("axis", -1) % b.rank(x)
    return [b.scatter_add(b.zeros_like(x), node.outputs[1], dy[0], axis), None]


@rule("MaxUnpool")
def max_unpool(node: Node, dy, b: GraphBuilder):
    # Each input element was written at its index into the flattened output (MaxPool's
    # indices): read the gradient back from there.
    x, indices = node.inputs[0], node.inputs[1]
    flat = b.op("Reshape", dy[0], b.ints([-1]))
    picked = b.op("GatherElements", flat, b.op("Reshape", indices, b.ints([-1])), axis=0)
    return [b.reshape_like(picked, x), None, None]


@rule("Col2Im")
def col2im(node: Node, dy, b: GraphBuilder):
    # Col2Im sums column blocks into an image (torch's fold); its adjoint cuts the gradient
    # image back into blocks (unfold). Unfold is a grouped convolution whose filters are one-hot
    # at each block position, with the same strides, pads and dilations.
    x = node.inputs[0]
    block = b.constant_value(node.inputs[2])
    if block is None:
        raise ValueError("Col2Im block_shape computed at run time")
    block = [int(k) for k in block]
    positions = int(np.prod(block))
    channels = b.static_shape(x)[1] // positions
    n = len(block)
    one_hot = np.eye(positions).reshape(positions, 1, *block)
    weights = b.const(np.tile(one_hot, (channels, 1) + (1,) * n))
    cols = b.op("Conv", dy[0], weights, group=channels,
                strides=node.attr("strides", [1] * n), pads=node.attr("pads", [0] * 2 * n),
                dilations=node.attr("dilations", [1] * n))
    return [b.reshape_like(b.op("Reshape", cols, b.ints([0, channels * positions, -1])), x),
            None, None]


@rule("TensorScatter")
def tensor_scatter(node: Node, dy, b: GraphBuilder):
    # A KV-cache write: the update lands at write_indices[b] + i along `axis` (wrapping when
    # circular). The cache's gradient is dy with the written positions zeroed; the update's is
    # dy read back from them.
    cache, update = node.inputs[0], node.inputs[1]
    rank = b.rank(cache)
    axis = node.attr("axis", -2) % rank
    length, capacity = b.static_shape(update)[axis], b.static_shape(cache)[axis]
    steps = b.const(np.arange(length, dtype=np.int64))
    if node.input(2):
        starts = b.op("Unsqueeze", b.op("Cast", node.inputs[2], to=onnx.TensorProto.INT64),
                      b.ints([1]))
        positions = b.op("Add", starts, steps)  # [batch, length]
    else:
        positions = b.op("Unsqueeze", steps, b.ints([0]))
    if node.attr("mode", "linear") == "circular":
        positions = b.op("Mod", positions, b.const(np.asarray(capacity, np.int64)))
    shape = [1] * rank
    shape[0], shape[axis] = -1, length
    spread = b.op("Expand", b.op("Reshape", positions, b.ints(shape)), b.shape_of(update))
    g_cache = g_update = None
    if b.needs(cache):
        g_cache = b.op("ScatterElements", dy[0], spread, b.zeros_like(update), axis=axis)
    if b.needs(update):
        g_update = b.op("GatherElements", dy[0], spread, axis=axis)
    return [g_cache, g_update, None]
