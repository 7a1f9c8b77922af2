"""Shapes from one ONNX Runtime run where static shape inference gives up (issue #10 item 1):
a Slice, Gather or Resize "along a dynamic axis" becomes a static one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from onnxpath import Explainer
from onnxpath.errors import ModelError
from onnxpath.intake import probe
from tests.intake import intake_models as m
from tests.oracle import relative_error

TOL = 1e-5
W = m.weights(4, 3, 3, 3)


def computed_shapes_model(kind: str):
    """x (N×3×8×8) -> Conv -> c (N×4×8×8), then a shape computed from Shape(c) through Div,
    which ONNX's data propagation does not follow, with the batch kept symbolic:
    - reshape-slice: Reshape(c, [N, -1, H / 2]) -> Slice [0:32] on axis 1 -> mean over axis 1;
    - resize: Resize(c, sizes = [N, C, H / 2, W / 2]) linear -> mean over H, W;
    - gather: Reshape(c, [N, -1, H / 2]) -> Gather indices [1, 5, 5] on axis 1 -> mean."""
    inits = {"w": W, "zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "two": np.array([2], np.int64), "four": np.array([4], np.int64),
             "half": np.array(2, np.int64), "minus1": np.array([-1], np.int64),
             "end32": np.array([32], np.int64), "idx": np.array([1, 5, 5], np.int64),
             "axis1": np.array([1], np.int64), "axes23": np.array([2, 3], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["s"])]
    if kind == "resize":
        nodes += [helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
                  helper.make_node("Slice", ["s", "two", "four"], ["hw"]),
                  helper.make_node("Div", ["hw", "half"], ["hw2"]),
                  helper.make_node("Concat", ["nc", "hw2"], ["sizes"], axis=0),
                  helper.make_node("Resize", ["c", "", "", "sizes"], ["small"], mode="linear"),
                  helper.make_node("ReduceMean", ["small", "axes23"], ["logits"], keepdims=0)]
    else:
        nodes += [helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
                  helper.make_node("Slice", ["s", "two", "four"], ["hw"]),
                  helper.make_node("Slice", ["hw", "zero", "one"], ["h"]),
                  helper.make_node("Div", ["h", "half"], ["h2"]),
                  helper.make_node("Concat", ["n", "minus1", "h2"], ["target"], axis=0),
                  helper.make_node("Reshape", ["c", "target"], ["r"])]
        if kind == "reshape-slice":
            nodes.append(helper.make_node("Slice", ["r", "zero", "end32", "axis1"], ["cut"]))
        else:
            nodes.append(helper.make_node("Gather", ["r", "idx"], ["cut"], axis=1))
        nodes.append(helper.make_node("ReduceMean", ["cut", "axis1"], ["logits"], keepdims=0))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    return m.make(nodes, [x], [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 4])], inits, opset=18)


def torch_reference(kind: str, x: np.ndarray, target: int) -> np.ndarray:
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    c = torch.nn.functional.conv2d(xt, torch.tensor(W, dtype=torch.float64), padding=1)
    if kind == "resize":
        y = torch.nn.functional.interpolate(c, size=(4, 4), mode="bilinear",
                                            align_corners=False).mean(dim=(2, 3))
    else:
        r = c.reshape(len(x), -1, 4)
        cut = r[:, :32] if kind == "reshape-slice" else r[:, [1, 5, 5]]
        y = cut.mean(dim=1)
    y[:, target].sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("kind", ["reshape-slice", "gather", "resize"])
def test_shapes_static_inference_cannot_resolve_come_from_a_run(kind, monkeypatch, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    model = computed_shapes_model(kind)
    result = Explainer(model, cache=tmp_path).attribute(x, "gradient", target=1)
    assert relative_error(result.maps, torch_reference(kind, x, 1)) < TOL
    # The batch stays dynamic: the same engine serves other batch sizes (IG runs 4 rows).
    explainer = Explainer(model, cache=tmp_path)
    ig = explainer.attribute(x[:1], "integrated-gradients", target=1, steps=4)
    assert ig.maps.shape == (1, 3, 8, 8)
    # A second process reads the probed shapes from the cache instead of running again.
    monkeypatch.setattr(probe, "probe", lambda *a, **k: pytest.fail("probed again"))
    again = Explainer(model, cache=tmp_path).attribute(x, "gradient", target=1)
    assert np.array_equal(again.maps, result.maps)


@pytest.mark.parametrize("kind", ["reshape-slice", "gather", "resize"])
def test_without_the_run_these_are_refused(kind, monkeypatch):
    """What the run fixes: static inference alone leaves the axis dynamic."""
    monkeypatch.setattr(probe, "probe", lambda *a, **k: {})
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(ModelError, match="dynamic|not static|unknown|rank"):
        Explainer(computed_shapes_model(kind), cache=False).attribute(x, target=1)


class ShiftedWindows(torch.nn.Module):
    """Swin's pattern: roll, window partition with H // ws, attention per window, merge, and a
    Resize to a size computed from the input's shape (CrossViT, HRNet)."""

    def __init__(self, ws: int = 4, c: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.ws = ws
        self.proj = torch.nn.Conv2d(3, c, 2, 2)
        self.qkv = torch.nn.Linear(c, 3 * c)
        self.fc = torch.nn.Linear(c, 5)

    def forward(self, x):
        x = self.proj(x)
        b, c, h, w = x.shape
        x = torch.roll(x.permute(0, 2, 3, 1), shifts=(-1, -1), dims=(1, 2))
        x = x.view(b, h // self.ws, self.ws, w // self.ws, self.ws, c).permute(
            0, 1, 3, 2, 4, 5).reshape(-1, self.ws * self.ws, c)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-2, -1) / c ** 0.5, -1) @ v
        a = a.view(b, h // self.ws, w // self.ws, self.ws, self.ws, c).permute(
            0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        a = torch.nn.functional.interpolate(a.permute(0, 3, 1, 2), size=(h // 2, w // 2),
                                            mode="bilinear", align_corners=False)
        return self.fc(a.mean(dim=(2, 3)))


def test_a_torchscript_export_with_dynamic_spatial_dims():
    """The TorchScript exporter with dynamic N, H, W: the Resize target was "dynamic axes"
    (('N', 8, 8, 8) -> ('unk__5', 8, 'unk__6', 'unk__7')) and the model was refused."""
    import io
    import warnings

    import onnx

    net = ShiftedWindows().eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(x),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    model = onnx.load_from_string(buffer.getvalue())
    reference = ShiftedWindows().eval().double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    reference(xt)[:, 3].sum().backward()
    result = Explainer(model, cache=False).attribute(x, "gradient", target=3)
    assert relative_error(result.maps, xt.grad.numpy()) < TOL


def pad_model():
    """Swin's window padding as torch exports it: pads = Cast(Concat(0, ..., (ws - W % ws) %
    ws)) computed from Shape(x) with a symbolic batch, through Slice (not Gather), so neither
    ONNX's data propagation nor our folding sees a constant; then a Pad."""
    inits = {"w": W, "zero": np.array([0], np.int64), "three": np.array([3], np.int64),
             "four": np.array([4], np.int64), "ws": np.array([3], np.int64),
             "zeros6": np.zeros(6, np.int64), "axes23": np.array([2, 3], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Slice", ["s", "three", "four"], ["width"]),
             helper.make_node("Mod", ["width", "ws"], ["rest"]),
             helper.make_node("Sub", ["ws", "rest"], ["gap"]),
             helper.make_node("Mod", ["gap", "ws"], ["pad_right"]),
             helper.make_node("Slice", ["zeros6", "zero", "three"], ["lead"]),
             helper.make_node("Concat", ["lead", "zero", "zero", "zero", "zero", "pad_right"],
                              ["pads8"], axis=0),
             helper.make_node("Cast", ["pads8"], ["pads"], to=TensorProto.INT64),
             helper.make_node("Pad", ["c", "pads"], ["padded"]),
             helper.make_node("ReduceMean", ["padded", "axes23"], ["logits"], keepdims=0)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    return m.make(nodes, [x], [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["batch", 4])], inits, opset=18)


def test_pads_computed_from_shapes_become_constants(monkeypatch):
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    c = torch.nn.functional.conv2d(xt, torch.tensor(W, dtype=torch.float64), padding=1)
    torch.nn.functional.pad(c, (0, 1)).mean(dim=(2, 3))[:, 2].sum().backward()
    result = Explainer(pad_model(), cache=False).attribute(x, "gradient", target=2)
    assert relative_error(result.maps, xt.grad.numpy()) < TOL
    monkeypatch.setattr(probe, "probe", lambda *a, **k: {})
    with pytest.raises(ModelError, match="computed at run time"):
        Explainer(pad_model(), cache=False).attribute(x, "gradient", target=2)


def test_a_slice_over_every_axis_keeps_the_symbolic_batch():
    """tf2onnx's Cropping2D: Slice starts [0, 1, 1, 0], ends INT32_MAX on every axis, the
    batch axis included: "Slice along dynamic axis 0" before."""
    big = np.iinfo(np.int32).max
    inits = {"starts": np.array([0, 1, 1, 0], np.int64), "ends": np.full(4, big, np.int64),
             "axes": np.array([0, 1, 2, 3], np.int64), "axes12": np.array([1, 2], np.int64)}
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["cropped"]),
             helper.make_node("ReduceSum", ["cropped", "axes12"], ["logits"], keepdims=0)]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__1", 5, 5, 3])
    model = m.make(nodes, [x_info], [helper.make_tensor_value_info(
        "logits", TensorProto.FLOAT, ["unk__1", 3])], inits)
    x = np.random.default_rng(3).standard_normal((2, 5, 5, 3)).astype(np.float32)
    result = Explainer(model, cache=False).attribute(x, "gradient", target=1)
    expected = np.zeros_like(x, dtype=np.float64)
    expected[:, 1:, 1:, 1] = 1.0
    assert np.array_equal(result.maps, expected)
