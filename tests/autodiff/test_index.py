"""Selection, repetition and padding ops against torch in float64: the adjoint must add every
read of an element back onto it (duplicate indices, reflect padding, tiles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from tests.oracle import check_graph, check_node, graph_model, randn

X = randn(2, 3, 6, 5)
BIG = np.iinfo(np.int64).max


def ints(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


SLICES = [
    # id, starts, ends, axes, steps, torch indexing
    ("crop_step1", ints(1, 2), ints(5, 4), ints(2, 3), None, lambda x: x[:, :, 1:5, 2:4]),
    ("step2", ints(0), ints(6), ints(2), ints(2), lambda x: x[:, :, 0:6:2]),
    ("step3_offset", ints(1), ints(BIG), ints(3), ints(3), lambda x: x[:, :, :, 1::3]),
    ("negative_start", ints(-2), ints(BIG), ints(2), None, lambda x: x[:, :, -2:]),
    ("flip", ints(-1), ints(-BIG), ints(3), ints(-1), lambda x: x.flip(3)),
    ("reverse_step2", ints(4), ints(0), ints(2), ints(-2), lambda x: x.flip(2)[:, :, 1:5:2]),
    ("clamped_ends", ints(0, -100), ints(100, 2), ints(1, 3), None, lambda x: x[:, :, :, :2]),
    ("no_axes_input", ints(0, 1), ints(2, 3), None, None, lambda x: x[:, 1:3]),
    ("channel_first_only", ints(0), ints(1), ints(1), None, lambda x: x[:, :1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps,reference", [s[1:] for s in SLICES],
                         ids=[s[0] for s in SLICES])
def test_slice(starts, ends, axes, steps, reference):
    inputs = {"x": X, "starts": starts, "ends": ends, "axes": axes, "steps": steps}
    if axes is None:
        inputs = {"x": X, "starts": starts, "ends": ends}
    check_node("Slice", inputs, lambda x, *_: reference(x))


@pytest.mark.parametrize("sizes,axis,used", [
    (ints(2, 1, 3), 2, (0, 1, 2)), (None, 1, (0, 1, 2)), (ints(1, 5), 2, (1,)),
    (ints(4, 2), -2, (0,))], ids=["sizes", "equal_parts", "second_only", "first_only"])
def test_split(sizes, axis, used):
    parts = 2 if sizes is not None and len(sizes) == 2 else 3
    outputs = [f"p{i}" for i in range(parts)]
    inputs = {"x": X} if sizes is None else {"x": X, "sizes": sizes}
    weights = {f"w{i}": randn(1, seed=10 + i) for i in used}
    split_attrs = {"axis": axis} if sizes is not None else {"axis": axis, "num_outputs": 3}
    nodes = [helper.make_node("Split", list(inputs), outputs, **split_attrs)]
    # Weighted sum of the used parts: each part's gradient differs from the others.
    for i in used:
        nodes.append(helper.make_node("Mul", [f"p{i}", f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("ReduceSum", [f"m{i}"], [f"s{i}"], keepdims=0))
    nodes.append(helper.make_node("Sum", [f"s{i}" for i in used], ["y"]))
    model = graph_model(nodes, {**inputs, **weights}, constants=list(weights), opset=18)
    split = [int(s) for s in sizes] if sizes is not None else [X.shape[axis] // 3] * 3

    def reference(x):
        pieces = torch.split(x, split, dim=axis)
        return sum((pieces[i] * torch.from_numpy(weights[f"w{i}"]).double()).sum()
                   for i in used)

    check_graph(model, {"x": X}, reference, {"x": X})


GATHERS = [
    ("axis0", ints(1, 0, 1), 0),
    ("axis1_repeats", ints(2, 0, 2, 2), 1),
    ("negative", ints(-1, 0, -3), 2),
    ("scalar_index", np.asarray(4, np.int64), 2),
    ("matrix_index", ints(0, 4, 4, 1, 2, 0).reshape(2, 3), 3),
]


@pytest.mark.parametrize("indices,axis", [g[1:] for g in GATHERS], ids=[g[0] for g in GATHERS])
def test_gather(indices, axis):
    def reference(x, idx):
        length = x.shape[axis]
        positions = torch.where(idx < 0, idx + length, idx)
        picked = torch.index_select(x, axis, positions.reshape(-1))
        shape = x.shape[:axis] + tuple(idx.shape) + x.shape[axis + 1:]
        return picked.reshape(shape)

    check_node("Gather", {"x": X, "idx": indices}, reference, {"axis": axis})


def test_gather_indices_computed_in_graph():
    """Indices that are not constants (ArgMax here) take the run-time path."""
    x = randn(2, 5)
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
             helper.make_node("Gather", ["x", "i"], ["y"], axis=1)]
    check_graph(graph_model(nodes, {"x": x}), {"x": x},
                lambda t: t[:, t.argmax(1)])


@pytest.mark.parametrize("axis", [1, -1])
def test_gather_elements(axis):
    rng = np.random.default_rng(3)
    length = X.shape[axis]
    indices = rng.integers(-length, length, size=(2, 3, 6, 5)).astype(np.int64)
    check_node("GatherElements", {"x": X, "idx": indices},
               lambda x, idx: torch.gather(x, axis, torch.where(idx < 0, idx + length, idx)),
               {"axis": axis})


@pytest.mark.parametrize("x_shape,shape", [((3, 1), (2, 3, 4)), ((1, 3, 1, 5), (2, 3, 6, 5)),
                                           ((2, 3), (1, 3))], ids=["lead", "inner", "noop"])
def test_expand(x_shape, shape):
    check_node("Expand", {"x": randn(*x_shape), "s": ints(*shape)},
               lambda x, s: x.expand(*np.broadcast_shapes(x_shape, shape)))


@pytest.mark.parametrize("repeats", [(1, 2, 1, 3), (2, 1, 1, 1), (1, 1, 1, 1)],
                         ids=["inner", "batch", "none"])
def test_tile(repeats):
    check_node("Tile", {"x": X, "r": ints(*repeats)}, lambda x, r: x.repeat(*repeats))


def torch_pad(pads: list[int], mode: str, value: float = 0.0):
    """ONNX [begin..., end...] over the last axes -> F.pad's (last_begin, last_end, ...)."""
    n = len(pads) // 2
    order = [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])]
    torch_mode = {"edge": "replicate", "wrap": "circular"}.get(mode, mode)
    return lambda x, *_: F.pad(x, order, mode=torch_mode, value=value) if mode == "constant" \
        else F.pad(x, order, mode=torch_mode)


PADS = [
    # id, pads over all 4 axes, mode, constant value
    ("constant_zero", [0, 0, 1, 2, 0, 0, 2, 1], "constant", None),
    ("constant_value", [0, 0, 1, 0, 0, 0, 0, 3], "constant", 1.5),
    ("constant_crop", [0, 0, -1, 2, 0, 0, 1, -2], "constant", None),
    ("reflect", [0, 0, 2, 1, 0, 0, 3, 4], "reflect", None),
    ("edge", [0, 0, 3, 1, 0, 0, 2, 2], "edge", None),
]


@pytest.mark.parametrize("pads,mode,value", [p[1:] for p in PADS], ids=[p[0] for p in PADS])
def test_pad(pads, mode, value):
    inputs = {"x": X, "pads": ints(*pads)}
    if value is not None:
        inputs["value"] = np.asarray(value, np.float32)
    check_node("Pad", inputs, torch_pad(pads[2:4] + pads[6:8], mode, value or 0.0),
               {"mode": mode}, constants=["value"])


def test_pad_wrap_with_axes_input():
    """opset 19: wrap mode and the axes input."""
    inputs = {"x": X, "pads": ints(2, 1, 1, 3), "value": None, "axes": ints(-1, 2)}
    check_node("Pad", inputs, torch_pad([1, 2, 3, 1], "wrap"), {"mode": "wrap"}, opset=19)
