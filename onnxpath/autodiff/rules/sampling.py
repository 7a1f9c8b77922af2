"""GridSample and AffineGrid, a spatial transformer's two halves.

GridSample: each output element reads the input at a grid location, interpolating its
nearest pixels (linear) or taking one (nearest). For a fixed grid the op is linear in X, so its
adjoint scatter-adds each output gradient to the pixels it read, with the same weights.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule


def _pixel(b: GraphBuilder, g: str, size: int, align_corners: bool) -> str:
    """The ONNX spec's unnormalisation of a grid coordinate in [-1, 1] to pixel units."""
    if align_corners:  # -1 and 1 are the centres of the corner pixels
        return b.op("Mul", b.op("Add", g, b.scalar(1.0)), b.scalar((size - 1) / 2))
    # -1 and 1 are the outer edges of the corner pixels
    return b.op("Div", b.op("Sub", b.op("Mul", b.op("Add", g, b.scalar(1.0)),
                                        b.scalar(float(size))), b.scalar(1.0)), b.scalar(2.0))


def _taps(b: GraphBuilder, coordinate: str, size: int, mode: str, padding: str):
    """[(integer pixel, weight, d weight / d coordinate)] that one coordinate reads."""
    if padding == "border":
        coordinate = b.op("Clip", coordinate, b.scalar(0.0), b.scalar(float(size - 1)))
    if mode == "nearest":
        return [(b.op("Round", coordinate), b.scalar(1.0), b.scalar(0.0))]
    low = b.op("Floor", coordinate)
    high_weight = b.op("Sub", coordinate, low)
    return [(low, b.op("Sub", b.scalar(1.0), high_weight), b.scalar(-1.0)),
            (b.op("Add", low, b.scalar(1.0)), high_weight, b.scalar(1.0))]


def _inside(b: GraphBuilder, pixel: str, size: int) -> str:
    return b.op("And", b.op("GreaterOrEqual", pixel, b.scalar(0.0)),
                b.op("LessOrEqual", pixel, b.scalar(float(size - 1))))


def _coordinate_gradient(b: GraphBuilder, total: str, raw: str, size: int, align: bool,
                         padding: str) -> str:
    """From d/d pixel coordinate to d/d grid coordinate (and 0 where border padding clamped)."""
    g = b.op("Mul", total, b.scalar((size - 1) / 2 if align else size / 2))
    if padding == "border":
        inside = b.op("And", b.op("Greater", raw, b.scalar(0.0)),
                      b.op("Less", raw, b.scalar(float(size - 1))))
        g = b.op("Mul", g, b.op("Cast", inside, to=b.float_type))
    return g


@rule("GridSample")
def grid_sample(node: Node, dy, b: GraphBuilder):
    # Each output reads sum over taps of w(ix, iy) * X[tap]: X's adjoint scatter-adds dy * w to
    # the taps; the grid's sums dy * X[tap] * dw/d(ix, iy) over the channels.
    x, grid = node.inputs[0], node.inputs[1]
    mode = {"bilinear": "linear"}.get(node.attr("mode", "linear"), node.attr("mode", "linear"))
    padding = node.attr("padding_mode", "zeros")
    if b.rank(x) != 4 or mode not in ("linear", "nearest") or padding not in ("zeros", "border"):
        raise NotImplementedError(f"GridSample of a rank-{b.rank(x)} input with mode '{mode}' "
                                  f"and padding '{padding}' (2-D linear or nearest, zeros or "
                                  "border padding are differentiated)")
    height, width = b.static_shape(x, 2)
    align = bool(node.attr("align_corners", 0))
    gx, gy = b.op("Split", grid, b.ints([1, 1]), outputs=2, axis=-1)
    flat = b.ints([0, 1, -1])  # [N, 1, Ho * Wo]: one row of locations per example
    ix = b.op("Reshape", _pixel(b, gx, width, align), flat)
    iy = b.op("Reshape", _pixel(b, gy, height, align), flat)
    g = b.op("Reshape", dy[0], b.ints([0, 0, -1]))  # [N, C, Ho * Wo]
    x_rows = b.op("Reshape", x, b.ints([0, 0, -1]))  # [N, C, H * W]
    indices, values, d_ix, d_iy = [], [], [], []
    for py, wy, sy in _taps(b, iy, height, mode, padding):
        for px, wx, sx in _taps(b, ix, width, mode, padding):
            inside = b.op("Cast", b.op("And", _inside(b, px, width), _inside(b, py, height)),
                          to=b.float_type)
            # Outside taps read nothing (weight 0); clamp them to a valid index to scatter.
            cx = b.op("Clip", px, b.scalar(0.0), b.scalar(float(width - 1)))
            cy = b.op("Clip", py, b.scalar(0.0), b.scalar(float(height - 1)))
            index = b.op("Add", b.op("Mul", cy, b.scalar(float(width))), cx)
            index = b.op("Expand", b.op("Cast", index, to=onnx.TensorProto.INT64),
                         b.shape_of(g))
            if b.needs(x):
                indices.append(index)
                values.append(b.op("Mul", g, b.op("Mul", b.op("Mul", wx, wy), inside)))
            if b.needs(grid):  # dy * X[tap] summed over channels, times the weight's slope
                read = b.reduce_sum(b.op("Mul", g, b.op("GatherElements", x_rows, index, axis=2)),
                                    [1], keepdims=True)
                read = b.op("Mul", read, inside)
                d_ix.append(b.op("Mul", read, b.op("Mul", sx, wy)))
                d_iy.append(b.op("Mul", read, b.op("Mul", wx, sy)))
    gx_grad = ggrid = None
    if b.needs(x):
        zeros = b.op("Reshape", b.zeros_like(x), b.ints([0, 0, -1]))
        summed = b.scatter_add(zeros, b.op("Concat", *indices, axis=2),
                               b.op("Concat", *values, axis=2), 2)
        gx_grad = b.reshape_like(summed, x)
    if b.needs(grid):
        raw_x = b.op("Reshape", _pixel(b, gx, width, align), flat)
        raw_y = b.op("Reshape", _pixel(b, gy, height, align), flat)
        along_x = _coordinate_gradient(b, b.op("Sum", *d_ix), raw_x, width, align, padding)
        along_y = _coordinate_gradient(b, b.op("Sum", *d_iy), raw_y, height, align, padding)
        ggrid = b.op("Concat", b.reshape_like(along_x, gx), b.reshape_like(along_y, gy), axis=-1)
    return [gx_grad, ggrid]


def base_grid(sizes: list[int], align_corners: bool) -> np.ndarray:
    """The normalised pixel centres AffineGrid transforms, as [prod(sizes), len(sizes) + 1]
    rows (x, y[, z], 1): x runs along the last dim, as the spec orders them."""
    axes = []
    for n in sizes:
        if align_corners:
            axes.append(np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1))
        else:
            axes.append((np.arange(n) * 2.0 + 1.0) / n - 1.0)
    mesh = np.meshgrid(*axes, indexing="ij")  # in (D,) H, W order
    coordinates = [m.reshape(-1) for m in reversed(mesh)]  # x first
    return np.stack([*coordinates, np.ones(mesh[0].size)], axis=1)


@rule("AffineGrid")
def affine_grid(node: Node, dy, b: GraphBuilder):
    # grid[n, pixel] = theta[n] @ base[pixel]: linear in theta, so dtheta = dgrid^T @ base.
    size = b.constant_value(node.inputs[1])
    if size is None:
        raise ValueError("AffineGrid size computed at run time")
    spatial = [int(s) for s in size[2:]]
    base = b.const(base_grid(spatial, bool(node.attr("align_corners", 0))))
    rows = b.op("Reshape", dy[0], b.ints([0, -1, len(spatial)]))  # [N, pixels, dims]
    return [b.op("MatMul", b.op("Transpose", rows, perm=[0, 2, 1]), base), None]
