"""Convolution. The input gradient is the transposed convolution of the output gradient.

ONNX Runtime's ConvTranspose ignores `pads` when `output_shape` is given, so the exact input
size is always reached through `output_padding`. Stride-1 convolutions with constant weights use
a plain Conv with flipped, per-group-transposed weights instead: it is the same linear map and
runs faster in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


def window_geometry(node: Node, in_spatial: list[int], kernel: list[int]):
    """Strides, dilations and explicit [begin..., end...] pads, auto_pad resolved."""
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_spatial, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = list(node.attr("pads", [0] * (2 * n)))
    return strides, dilations, pads


def transposed_window(b: GraphBuilder, g: str, kernel_weights: str, x: str, y: str,
                      kernel: list[int], strides, dilations, pads, group: int) -> str:
    """The adjoint of a strided window map: ConvTranspose sized exactly to `x`."""
    x_spatial = b.static_shape(x, 2)
    y_spatial = b.static_shape(y, 2)
    n = len(kernel)
    output_padding = [
        x_spatial[i] - (strides[i] * (y_spatial[i] - 1) + (kernel[i] - 1) * dilations[i] + 1
                        - pads[i] - pads[n + i])
        for i in range(n)
    ]
    return b.op("ConvTranspose", g, kernel_weights, strides=strides, dilations=dilations,
                pads=pads, group=group, output_padding=output_padding)


def _flipped_transposed(weights: np.ndarray, group: int) -> np.ndarray:
    c_out, c_in_g = weights.shape[:2]
    spatial = weights.shape[2:]
    w = weights.reshape(group, c_out // group, c_in_g, *spatial).swapaxes(1, 2)
    w = w.reshape(group * c_in_g, c_out // group, *spatial)
    return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, w.ndim))))


@rule("Conv")
def conv(node: Node, dy, b: GraphBuilder):
    x, w = node.inputs[0], node.inputs[1]
    if b.needs(w) or b.needs(node.input(2)):
        raise NotImplementedError("gradients with respect to Conv weights are not supported")
    kernel = list(b.static_shape(w)[2:])
    strides, dilations, pads = window_geometry(node, list(b.static_shape(x, 2)), kernel)
    group = node.attr("group", 1)
    n = len(kernel)
    weights = b.constant_value(w)
    flipped_pads = [(kernel[i % n] - 1) * dilations[i % n] - pads[i] for i in range(2 * n)]
    if weights is not None and all(s == 1 for s in strides) and min(flipped_pads) >= 0:
        # The adjoint of a stride-1 conv is a full-padded conv with flipped weights.
        w_t = b.const(_flipped_transposed(weights, group))
        gx = b.op("Conv", dy[0], w_t, dilations=dilations, group=group, pads=flipped_pads)
        return [gx, None, None]
    gx = transposed_window(b, dy[0], w, x, node.outputs[0], kernel, strides, dilations, pads,
                           group)
    return [gx, None, None]


def transpose_pads(node: Node, x_spatial, kernel, strides, dilations) -> list[int]:
    """ConvTranspose's effective [begin..., end...] pads, from output_shape or auto_pad when
    given (ONNX Runtime then ignores `pads`), as the ONNX spec derives them."""
    n = len(kernel)
    output_padding = list(node.attr("output_padding", [0] * n))
    auto_pad = node.attr("auto_pad", "NOTSET")
    target = node.attr("output_shape")
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [x * s for x, s in zip(x_spatial, strides, strict=True)]
    if target is None:
        return [0] * (2 * n) if auto_pad == "VALID" else list(node.attr("pads", [0] * (2 * n)))
    target = list(target)[-n:]
    total = [strides[i] * (x_spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i]
             + 1 - target[i] for i in range(n)]
    if auto_pad == "SAME_UPPER":
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return [t - t // 2 for t in total] + [t // 2 for t in total]


@rule("ConvTranspose")
def conv_transpose(node: Node, dy, b: GraphBuilder):
    # The adjoint of a transposed convolution is the convolution with the same weights and
    # pads; output_padding only added rows that no input reaches.
    x, w = node.inputs[0], node.inputs[1]
    if b.needs(w) or b.needs(node.input(2)):
        raise NotImplementedError("gradients with respect to ConvTranspose weights")
    kernel = list(b.static_shape(w)[2:])
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    pads = transpose_pads(node, list(b.static_shape(x, 2)), kernel, strides, dilations)
    if min(pads) < 0:
        raise NotImplementedError("ConvTranspose whose output_shape exceeds its natural size")
    gx = b.op("Conv", dy[0], w, strides=strides, dilations=dilations, pads=pads,
              group=node.attr("group", 1))
    return [gx, None, None]
