"""Segmentation outputs N×K×H×W and `--target-index` (issue #11 item 4): the region-summed
gradient against a float64 torch reference of a small torch segmentation net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from onnxpath import Explainer
from tests.intake.test_outputs import TOL, cli, save
from tests.oracle import export, relative_error

CLASSES = 4


class TinySegmenter(torch.nn.Module):
    """Conv -> ReLU -> strided Conv -> ReLU -> 1×1 Conv to 4 classes -> bilinear upsampling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(8, CLASSES, 1)

    def forward(self, x):
        y = self.head(torch.relu(self.c2(torch.relu(self.c1(x)))))
        return torch.nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear",
                                               align_corners=False)


@pytest.fixture(scope="module")
def net_and_model():
    net = TinySegmenter().eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    return net, export(net, x)


def reference(net, x: np.ndarray, cls: int, region: np.ndarray | None = None):
    """(class logits summed over the region, their gradient), torch float64. The default
    region is the pixels predicted as `cls`."""
    reference = net.double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = reference(xt)
    mask = (y.argmax(dim=1) == cls).double() if region is None else \
        torch.tensor(region, dtype=torch.float64)[None]
    total = (y[:, cls] * mask).sum()
    total.backward()
    net.float()
    return float(total.detach()), xt.grad.numpy()


def test_region_of_the_predicted_pixels(net_and_model):
    net, model = net_and_model
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    explainer = Explainer(model, cache=False)
    for cls in range(CLASSES):
        result = explainer.attribute(x, "gradient", target=cls)
        value, grad = reference(net, x, cls)
        assert result.kind == "region" and np.isnan(result.probs).all()
        assert result.logits[0] == pytest.approx(value, rel=1e-5, abs=1e-5)
        if np.abs(grad).max() > 0:
            assert relative_error(result.maps, grad) < TOL


def test_region_from_a_mask_png(net_and_model, tmp_path, capsys):
    net, model = net_and_model
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    region = np.zeros((8, 8), bool)
    region[2:6, 1:5] = True
    Image.fromarray((region * 255).astype(np.uint8)).resize((32, 32), Image.NEAREST).save(
        tmp_path / "mask.png")
    from onnxpath.cli._common import read_region
    explainer = Explainer(model, cache=False, region=read_region(tmp_path / "mask.png"))
    result = explainer.attribute(x, "gradient", target=1)
    value, grad = reference(net, x, 1, region)
    assert result.logits[0] == pytest.approx(value, rel=1e-5)
    assert relative_error(result.maps, grad) < TOL
    path = save(model, tmp_path)
    np.save(tmp_path / "x.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "x.npy", "--region",
                           tmp_path / "mask.png", "-t", "1", "-o", tmp_path / "out")
    assert code == 0, err
    assert lines[0]["prob"] is None and lines[0]["logit"] == pytest.approx(value, rel=1e-5)
    assert relative_error(np.load(lines[0]["outputs"]["npy"])[None], grad) < TOL


def test_target_index_picks_one_output_element(net_and_model, tmp_path, capsys):
    net, model = net_and_model
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = net.double()(xt)
    y[0, 2, 5, 3].backward()
    net.float()
    result = Explainer(model, cache=False, target_index=(2, 5, 3)).attribute(x)
    assert result.kind == "elements" and int(result.targets[0]) == 2 * 64 + 5 * 8 + 3
    assert result.logits[0] == pytest.approx(float(y[0, 2, 5, 3].detach()), rel=1e-5)
    assert relative_error(result.maps, xt.grad.numpy()) < TOL
    path = save(model, tmp_path)
    np.save(tmp_path / "x.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "x.npy", "--target-index",
                           "9,0,0")
    assert code == 2 and "out of range" in err and len(err.strip().splitlines()) == 1
