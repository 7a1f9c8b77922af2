"""Conv input gradients, one row per attribute combination, against torch in float64.

The reference pads explicitly with F.pad, so asymmetric pads and auto_pad are checked against a
computation that never sees ONNX's padding conventions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from tests.oracle import (
    check_graph,
    check_node,
    graph_model,
    onnx_gradient,
    randn,
    relative_error,
    torch_gradient,
)


def explicit_pads(attrs: dict, spatial, kernel) -> list[int]:
    """ONNX [begin..., end...] pads, auto_pad resolved by the spec's formula."""
    n = len(kernel)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)
    mode = attrs.get("auto_pad", "NOTSET")
    if mode == "VALID":
        return [0] * 2 * n
    if mode == "NOTSET":
        return list(attrs.get("pads", [0] * 2 * n))
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        lower, upper = total // 2, total - total // 2
        begin.append(lower if mode == "SAME_UPPER" else upper)
        end.append(upper if mode == "SAME_UPPER" else lower)
    return begin + end


def torch_conv(attrs: dict):
    def reference(x, w, bias=None):
        n = w.dim() - 2
        pads = explicit_pads(attrs, x.shape[2:], w.shape[2:])
        torch_pads = [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])]
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
        return conv(F.pad(x, torch_pads), w, bias, stride=attrs.get("strides", 1),
                    dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))
    return reference


CONV = [
    # id, x shape, w shape, attrs
    ("3x3", (2, 3, 8, 8), (4, 3, 3, 3), {}),
    ("3x3_pad1", (2, 3, 8, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("stride2_pad1", (2, 3, 8, 8), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("stride2_odd_input", (2, 3, 9, 9), (4, 3, 3, 3), {"strides": [2, 2]}),
    ("stride2_uncovered_tail", (1, 2, 10, 10), (3, 2, 3, 3), {"strides": [2, 2]}),
    ("k5_stride3_pad2", (1, 2, 11, 11), (3, 2, 5, 5), {"strides": [3, 3], "pads": [2, 2, 2, 2]}),
    ("dilation2", (2, 3, 9, 9), (4, 3, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ("dilation2_stride2", (1, 3, 10, 10), (4, 3, 3, 3),
     {"dilations": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("groups2", (2, 4, 8, 8), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ("groups2_stride2", (2, 4, 8, 8), (6, 2, 3, 3),
     {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("depthwise", (2, 4, 8, 8), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    ("depthwise_stride2", (2, 4, 8, 8), (4, 1, 3, 3),
     {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("depthwise_multiplier2", (2, 3, 8, 8), (6, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    ("1x1", (2, 3, 8, 8), (5, 3, 1, 1), {}),
    ("1x1_stride2", (2, 3, 8, 8), (5, 3, 1, 1), {"strides": [2, 2]}),
    ("rect_kernel_aniso_stride", (2, 3, 8, 9), (4, 3, 3, 1),
     {"strides": [2, 1], "pads": [1, 0, 1, 0]}),
    ("tf_same_asym_stride2", (2, 3, 8, 8), (4, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("tf_same_asym_stride2_odd", (2, 3, 9, 9), (4, 3, 3, 3),
     {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    ("asym_pads_stride1", (2, 3, 8, 8), (4, 3, 3, 3), {"pads": [0, 1, 2, 0]}),
    ("pads_wider_than_kernel", (1, 2, 6, 6), (3, 2, 3, 3), {"pads": [3, 1, 3, 2]}),
    ("same_upper_stride2", (2, 3, 8, 8), (4, 3, 3, 3),
     {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same_lower_stride2", (2, 3, 7, 7), (4, 3, 4, 4),
     {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("same_upper_even_kernel", (2, 3, 8, 8), (4, 3, 2, 2), {"auto_pad": "SAME_UPPER"}),
    ("same_lower_even_kernel", (2, 3, 8, 8), (4, 3, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ("valid_stride2", (2, 3, 9, 9), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ("conv1d", (2, 3, 16), (4, 3, 3), {"pads": [1, 1]}),
    ("conv1d_stride2_dilation2", (2, 3, 17), (4, 3, 3), {"strides": [2], "dilations": [2]}),
    ("conv1d_groups_asym", (2, 4, 12), (4, 2, 5), {"group": 2, "pads": [0, 2]}),
    ("conv3d", (1, 2, 5, 6, 5), (2, 2, 3, 3, 3), {"strides": [2, 1, 2], "pads": [1] * 6}),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("x_shape,w_shape,attrs", [c[1:] for c in CONV], ids=[c[0] for c in CONV])
def test_conv(x_shape, w_shape, attrs, bias):
    inputs = {"x": randn(*x_shape), "w": randn(*w_shape, seed=1),
              "b": randn(w_shape[0], seed=2) if bias else None}
    check_node("Conv", inputs, torch_conv(attrs), attrs, constants=["w", "b"])


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 2], "pads": [0, 0, 1, 1]},
                                   {"group": 2, "pads": [1, 1, 1, 1]}],
                         ids=["stride1", "tf_same", "groups"])
def test_conv_weights_computed_in_graph(attrs):
    """Weights that are not initializers (e.g. dequantised) take the ConvTranspose path."""
    x, w = randn(2, 4, 8, 8), randn(6, 4 // attrs.get("group", 1), 3, 3, seed=1)
    nodes = [helper.make_node("Identity", ["w"], ["w_live"]),
             helper.make_node("Conv", ["x", "w_live"], ["y"], **attrs)]
    model = graph_model(nodes, {"x": x, "w": w}, constants=["w"])
    check_graph(model, {"x": x}, torch_conv(attrs), {"x": x, "w": w})


def test_auto_pad_through_normalise():
    """normalise() rewrites auto_pad as pads before the rule sees it: same gradient."""
    attrs = {"auto_pad": "SAME_UPPER", "strides": [2, 2]}
    x, w = randn(2, 3, 9, 9), randn(4, 3, 3, 3, seed=1)
    model = graph_model([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], {"x": x, "w": w},
                        constants=["w"])

    class Same(torch.nn.Module):
        def forward(self, t):
            return torch_conv(attrs)(t, torch.from_numpy(w).to(t.dtype))

    seed = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    _, expected = torch_gradient(Same(), x, seed)
    _, grad = onnx_gradient(model, x, seed)
    assert relative_error(grad, expected) <= 1e-4


def torch_conv_transpose(attrs: dict):
    """The natural-size transposed conv, output_padding zeros appended, then the pads cropped:
    pads may be asymmetric here, unlike torch's own `padding`."""
    def reference(x, w, bias=None):
        n = w.dim() - 2
        conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[n]
        full = conv(x, w, None, stride=attrs.get("strides", 1), groups=attrs.get("group", 1),
                    dilation=attrs.get("dilations", 1))
        extra = attrs.get("output_padding", [0] * n)
        full = F.pad(full, [p for i in reversed(range(n)) for p in (0, extra[i])])
        pads = attrs["effective_pads"]
        for i in range(n):
            full = full.narrow(2 + i, pads[i], full.shape[2 + i] - pads[i] - pads[n + i])
        return full if bias is None else full + bias.reshape(-1, *[1] * n)
    return reference


CONV_TRANSPOSE = [
    # id, x shape, w shape, attrs, effective pads
    ("stride1_pad1", (2, 4, 5, 5), (4, 3, 3, 3), {"pads": [1] * 4}, [1] * 4),
    ("stride2_pad1_outpad1", (2, 4, 5, 5), (4, 3, 3, 3),
     {"strides": [2, 2], "pads": [1] * 4, "output_padding": [1, 1]}, [1] * 4),
    ("stride2_k4_pad1", (1, 3, 4, 4), (3, 2, 4, 4), {"strides": [2, 2], "pads": [1] * 4},
     [1] * 4),
    ("groups2_dilation2", (2, 4, 5, 5), (4, 1, 3, 3),
     {"group": 2, "dilations": [2, 2], "pads": [2] * 4}, [2] * 4),
    ("asym_pads", (2, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]},
     [0, 0, 1, 1]),
    # With output_shape or auto_pad the pads are derived (total padding 1 here): the odd unit
    # goes to the begin unless auto_pad is SAME_UPPER, as the spec and ONNX Runtime agree.
    ("output_shape", (1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "output_shape": [10, 10]},
     [1, 1, 0, 0]),
    ("output_shape_same_upper", (1, 4, 5, 5), (4, 3, 3, 3),
     {"strides": [2, 2], "output_shape": [10, 10], "auto_pad": "SAME_UPPER"}, [0, 0, 1, 1]),
    ("same_upper", (1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
     [0, 0, 1, 1]),
    ("same_lower", (1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
     [1, 1, 0, 0]),
    ("conv_transpose1d", (2, 4, 7), (4, 3, 3), {"strides": [2], "pads": [1, 0]}, [1, 0]),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,pads", [c[1:] for c in CONV_TRANSPOSE],
                         ids=[c[0] for c in CONV_TRANSPOSE])
def test_conv_transpose(x_shape, w_shape, attrs, pads):
    channels = w_shape[1] * attrs.get("group", 1)
    inputs = {"x": randn(*x_shape), "w": randn(*w_shape, seed=1), "b": randn(channels, seed=2)}
    check_node("ConvTranspose", inputs, torch_conv_transpose({**attrs, "effective_pads": pads}),
               attrs, constants=["w", "b"])
