"""Pooling. MaxPool routes gradients through its argmax indices; average pools are linear."""

from __future__ import annotations

import numpy as np
import onnx

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.conv import transposed_window, window_geometry


def _scatter_to_argmax(b: GraphBuilder, g: str, indices: str, x: str) -> str:
    # Indices are flat positions in the whole input tensor (batch and channel included).
    flat = b.ints([-1])
    zero = onnx.helper.make_tensor("value", b.float_type, [1], [0.0])
    zeros = b.op("ConstantOfShape", b.op("Shape", b.op("Reshape", x, flat)), value=zero)
    summed = b.scatter_add(zeros, b.op("Reshape", indices, flat), b.op("Reshape", g, flat), 0)
    return b.reshape_like(summed, x)


@rule("MaxPool")
def max_pool(node: Node, dy, b: GraphBuilder):
    if node.attr("storage_order", 0) != 0:
        raise NotImplementedError("MaxPool with storage_order=1")
    if len(node.outputs) > 1 and node.outputs[1]:
        indices = node.outputs[1]
    else:
        _, indices = b.op("MaxPool", node.inputs[0], outputs=2, **node.attrs)
    return [_scatter_to_argmax(b, dy[0], indices, node.inputs[0])]


@rule("GlobalMaxPool")
def global_max_pool(node: Node, dy, b: GraphBuilder):
    # An equality mask would count every tied maximum (all-zero post-ReLU maps tie everywhere),
    # so take MaxPool's single argmax instead, as the forward kernels do.
    spatial = list(b.static_shape(node.inputs[0], 2))
    _, indices = b.op("MaxPool", node.inputs[0], outputs=2, kernel_shape=spatial)
    return [_scatter_to_argmax(b, dy[0], indices, node.inputs[0])]


def clipped_kernel(kernel: list[int], x_spatial, pads, dilations) -> list[int]:
    """The smallest kernel whose windows reach every padded-input element the given kernel's
    windows reach. Exporters write kernels far larger than the input (Hugging Face's
    EfficientNet pools a 7x7 map with a 1280x1280 ceil_mode kernel); taps past the padded input
    read nothing, so constants sized by the clipped kernel suffice."""
    n = len(kernel)
    clipped = []
    for i in range(n):
        padded = x_spatial[i] + pads[i] + pads[n + i]
        # (k - 1) * d + 1 >= padded: from any start inside the padding the window then spans it.
        clipped.append(min(kernel[i], -(-(padded - 1) // dilations[i]) + 1))
    return clipped


@rule("AveragePool")
def average_pool(node: Node, dy, b: GraphBuilder):
    x, y = node.inputs[0], node.outputs[0]
    x_spatial, y_spatial = b.static_shape(x, 2), b.static_shape(y, 2)
    channels = b.static_shape(x, 1)[0]
    strides, dilations, pads = window_geometry(node, list(x_spatial),
                                               list(node.attr("kernel_shape")))
    kernel = clipped_kernel(list(node.attr("kernel_shape")), x_spatial, pads, dilations)
    n = len(kernel)
    # ceil_mode windows may overhang the padded input: widen the end pads to host them.
    overhang = [max(0, (y_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
                    - (x_spatial[i] + pads[i] + pads[n + i])) for i in range(n)]
    hosted = pads[:n] + [pads[n + i] + overhang[i] for i in range(n)]
    # Each window's divisor is whatever the forward op used (pads counted or not): recover it as
    # AveragePool(ones) / (in-bounds count). Both depend on constants only and fold away.
    ones_x = b.ones((1, 1, *x_spatial))
    forward_attrs = {k: v for k, v in node.attrs.items() if k != "auto_pad"}
    forward_attrs["pads"] = pads
    mean_of_ones = b.op("AveragePool", ones_x, **forward_attrs)
    in_bounds = b.op("Conv", ones_x, b.ones((1, 1, *kernel)), strides=strides,
                     dilations=dilations, pads=hosted)
    weight = b.op("Div", mean_of_ones, in_bounds)
    kernel_ones = b.ones((channels, 1, *kernel))
    return [transposed_window(b, b.op("Mul", dy[0], weight), kernel_ones, x, y, kernel, strides,
                              dilations, hosted, group=channels)]


@rule("GlobalAveragePool")
def global_average_pool(node: Node, dy, b: GraphBuilder):
    x = node.inputs[0]
    area = int(np.prod(b.static_shape(x, 2)))
    return [b.op("Expand", b.op("Div", dy[0], b.scalar(float(area))), b.shape_of(x))]
