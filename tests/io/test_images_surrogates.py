"""LIME and KernelSHAP on an image model through `onnxpath attribute`: grid and SLIC segments,
maps the shape of the input, KernelSHAP's map summing to f(x) − f(baseline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxpath.methods.slic import slic
from tests.io.io_helpers import run_cli
from tests.methods.onnx_nets import conv_net


@pytest.mark.parametrize("segments", ["grid:4", "slic:12"])
def test_surrogates_on_an_image(capsys, tmp_path, segments):
    model = conv_net(tmp_path / "conv.onnx", size=24)
    x = np.random.default_rng(0).random((1, 3, 24, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    from onnxpath.cli import main
    code = main(["attribute", str(model), str(tmp_path / "x.npy"), "-m", "lime,kernel-shap",
                 "--segments", segments, "--samples", "200", "-o", str(tmp_path / "out"),
                 "--no-cache", "-q"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [line["error"] for line in lines] == [None, None]
    shap_map = np.load(lines[1]["outputs"]["npy"])
    assert shap_map.shape == (3, 24, 24)
    extras = lines[1]["extras"]
    assert shap_map.sum() == pytest.approx(extras["f_x"] - extras["f_baseline"], abs=1e-4)


def test_slic_follows_colour_edges():
    """Two flat halves of different colour: no superpixel straddles the edge."""
    image = np.zeros((3, 32, 32))
    image[:, :, 16:] = 1.0
    labels = slic(image, 8)
    left, right = set(labels[:, :16].ravel()), set(labels[:, 16:].ravel())
    assert not left & right and len(left | right) >= 4


def test_unknown_segments_is_a_usage_error(capsys, tmp_path):
    model = conv_net(tmp_path / "conv.onnx", size=24)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 24, 24), np.float32))
    code, _, err = run_cli(capsys, model, tmp_path / "x.npy", "-m", "lime", "--segments", "hex")
    assert code in (1, 2) and "--segments" in (err + capsys.readouterr().out)
    assert "Traceback" not in err
