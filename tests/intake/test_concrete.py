"""Node-by-node inference at the actual shapes (intake/concrete.py) against the ONNX Runtime
probe it spares: the same shapes and shape-derived values, on the probe's own hard cases and
on a torch ViT (class token Expand through Where, heads through Div), with no run at all."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

from onnxpath import Explainer
from onnxpath.intake import probe
from onnxpath.intake.model import batch_name, data_inputs, fix_input_shape
from tests.intake.test_probe import ShiftedWindows, computed_shapes_model, pad_model
from tests.oracle import relative_error


class TinyViT(torch.nn.Module):
    """torchvision's ViT layout at toy size: patches, a class token expanded to the batch,
    heads split with view(b, n, heads, -1), a LayerNorm and a linear head."""

    def __init__(self, dim: int = 16, heads: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.heads = heads
        self.patch = torch.nn.Conv2d(3, dim, 4, 4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, 5)

    def forward(self, x):
        p = self.patch(x)
        b, c = p.shape[0], p.shape[1]
        tokens = p.reshape(b, c, -1).permute(0, 2, 1)
        tokens = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1)
        n = tokens.shape[1]
        q, k, v = self.qkv(tokens).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5, -1) @ v
        tokens = tokens + a.transpose(1, 2).reshape(b, n, c)
        return self.head(self.norm(tokens)[:, 0])


def exported(net: torch.nn.Module, x: np.ndarray, axes: dict) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(x),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": axes, "logits": {0: axes[0]}})
    return onnx.load_from_string(buffer.getvalue())


def probed(model: onnx.ModelProto, x: np.ndarray) -> dict:
    """probe.probe as the intake calls it, on the model with x's shape fixed."""
    name = data_inputs(model)[0].name
    model = fix_input_shape(model, x.shape, name)
    return probe.probe(model, model.graph.output[0].name, {name: x.shape},
                       batch_name(model, name))


class KnowsNothing:
    def __init__(self, *_):
        self.shapes, self.values = {}, {}


def cases():
    rng = np.random.default_rng(0)
    small = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    vit_x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    swin_x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    return {"reshape-slice": (computed_shapes_model("reshape-slice"), small),
            "gather": (computed_shapes_model("gather"), small),
            "resize": (computed_shapes_model("resize"), small),
            "pads": (pad_model(), small[:2]),
            "torch-vit": (exported(TinyViT().eval(), vit_x, {0: "N"}), vit_x),
            "swin-windows": (exported(ShiftedWindows().eval(), swin_x,
                                      {0: "N", 2: "H", 3: "W"}), swin_x)}


@pytest.mark.parametrize("name", list(cases()))
def test_node_by_node_inference_answers_what_the_run_answered(name, monkeypatch):
    model, x = cases()[name]
    with monkeypatch.context() as patch:  # the run alone, as before
        patch.setattr(probe, "Concrete", KnowsNothing)
        by_run = probed(model, x)
    with monkeypatch.context() as patch:  # no run allowed
        patch.setattr(probe, "probe_session", lambda *a, **k: pytest.fail("the model ran"))
        by_inference = probed(model, x)
    print(f"{name}: {len(by_run.get('shapes', {}))} shapes, "
          f"{len(by_run.get('values', {}))} values, all found without a run")
    assert by_run and by_inference == by_run


def test_a_torch_vit_explained_without_a_probe_run(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    model = exported(TinyViT().eval(), x, {0: "N"})
    monkeypatch.setattr(probe, "probe_session", lambda *a, **k: pytest.fail("the model ran"))
    explainer = Explainer(model, cache=False)
    result = explainer.attribute(x, "gradient", target=2)
    reference = TinyViT().eval().double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    reference(xt)[:, 2].sum().backward()
    error = relative_error(result.maps, xt.grad.numpy())
    print(f"torch ViT, gradient against torch float64: {error:.2g}")
    assert error < 1e-5
    # the batch stayed symbolic: three rows run on the same engine
    assert explainer.attribute(np.concatenate([x, x[:1]]), "gradient",
                               target=2).maps.shape == (3, 3, 16, 16)
