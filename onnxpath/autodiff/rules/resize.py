"""Resize. Every mode ONNX defines (nearest, linear, cubic, with antialias) interpolates each
axis separately, so the op is a product of per-axis matrices A (out x in) and its adjoint applies
A transposed along each resized axis.

A is not re-derived here from the spec's coordinate formulas: the gradient graph resizes an
identity matrix with the forward node's own attributes, so it reproduces exactly what the
runtime's kernel does. That subgraph depends on constants only and ONNX Runtime folds it.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


def _scales(node: Node, b: GraphBuilder, rank: int) -> list[float] | None:
    """One scale per axis when the op is driven by scales; None when it is driven by sizes
    (then only the output length matters, and shape inference knows it)."""
    if node.input(3):
        return None
    value = b.constant_value(node.input(2))
    if value is None:
        raise ValueError("Resize scales computed at run time")
    axes = node.attr("axes")
    if axes is None:
        return value.tolist()
    full = [1.0] * rank
    for a, v in zip(axes, value.tolist(), strict=True):
        full[a % rank] = v
    return full


def _interpolation_matrix(node: Node, b: GraphBuilder, axis: int, helper_axis: int,
                          rank: int, length_in: int, length_out: int, scales) -> str:
    """A transposed, (length_in, length_out): Resize of an identity laid across `axis` and an
    axis the op leaves alone."""
    shape = [1] * rank
    shape[axis] = shape[helper_axis] = length_in
    # Sized by the input's length, not by an attribute; made in the graph's float type.
    eye = np.eye(length_in, dtype=helper.tensor_dtype_to_np_dtype(b.float_type)).reshape(shape)
    attrs = {k: v for k, v in node.attrs.items() if k not in ("axes", "extrapolation_value")}
    if scales is None:
        target = list(shape)
        target[axis] = length_out
        inputs = ["", "", b.ints(target)]
    else:
        axis_scales = [1.0] * rank
        axis_scales[axis] = scales[axis]
        inputs = ["", b.const(np.asarray(axis_scales, np.float32), np.float32)]
    roi = b.constant_value(node.input(1))
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        if roi is None:
            raise ValueError("tf_crop_and_resize without a constant roi")
        roi = np.asarray(roi, np.float64).copy()
        roi[helper_axis], roi[rank + helper_axis] = 0.0, 1.0
        inputs[0] = b.const(roi)
    # extrapolation_value is an additive constant of the forward op: zero in the adjoint.
    resized = b.op("Resize", b.const(eye), *inputs, extrapolation_value=0.0, **attrs)
    # Row-major: the lower of the two axes indexes the rows.
    two_d = b.op("Reshape", resized, b.ints([-1, length_out if helper_axis < axis else length_in]))
    return two_d if helper_axis < axis else b.op("Transpose", two_d, perm=[1, 0])


@rule("Resize")
def resize(node: Node, dy, b: GraphBuilder):
    x, y = node.inputs[0], node.outputs[0]
    rank = b.rank(x)
    x_shape, y_shape = b.shape(x), b.shape(y)
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotImplementedError("Resize with keep_aspect_ratio_policy")
    scales = _scales(node, b, rank)
    resized = [a for a in range(rank) if x_shape[a] != y_shape[a]
               or (scales is not None and scales[a] != 1.0)]
    still = [a for a in range(rank) if a not in resized]
    if not still:
        raise NotImplementedError("Resize of every axis")
    if not all(isinstance(d, int) for a in resized for d in (x_shape[a], y_shape[a])):
        raise ValueError(f"Resize of dynamic axes: {x_shape} -> {y_shape}")
    g = dy[0]
    for axis in resized:
        a_t = _interpolation_matrix(node, b, axis, still[0], rank, x_shape[axis], y_shape[axis],
                                    scales)
        if axis == rank - 2:  # (in, out) @ (..., out, W)
            g = b.op("MatMul", a_t, g)
            continue
        a = b.op("Transpose", a_t, perm=[1, 0])
        if axis == rank - 1:
            g = b.op("MatMul", g, a)
            continue
        perm = [d for d in range(rank) if d != axis] + [axis]
        inverse = list(np.argsort(perm))
        g = b.op("Transpose", b.op("MatMul", b.op("Transpose", g, perm=perm), a), perm=inverse)
    return [g, None, None, None]
