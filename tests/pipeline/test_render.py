"""Rendering: reductions, scale rules, colormaps, alpha, the raw .npy and the .npz bundle."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pipeline_models import run_cli

from onnxpath.io.outputs import Bundle
from onnxpath.io.render import colour, normalise, overlay, reduce_channels, scale_of


def test_reductions():
    a = np.array([[[1.0]], [[-3.0]], [[2.0]]])
    assert reduce_channels(a, "max-abs")[0, 0] == -3.0
    assert reduce_channels(a, "sum")[0, 0] == 0.0
    assert reduce_channels(a, "abs-sum")[0, 0] == 6.0
    assert reduce_channels(a, "l2")[0, 0] == pytest.approx(np.sqrt(14))


def test_scale_rules():
    mag = np.arange(1, 101, dtype=np.float64)
    assert scale_of(mag, "percentile") == pytest.approx(np.percentile(mag, 99))
    assert scale_of(mag, "minmax") == 100
    # Captum's _cumulative_sum_threshold(values, 98): the value where the cumulative sum of
    # the sorted magnitudes first reaches 98% of the total.
    cumulative = np.cumsum(mag)
    expected = mag[np.where(cumulative >= cumulative[-1] * 0.98)[0][0]]
    assert scale_of(mag, "outlier") == expected
    heat = np.array([[-4.0, 2.0], [1.0, 0.0]])
    assert normalise(heat, how="minmax", signed=True)[0, 0] == -1.0
    assert normalise(heat, how="minmax")[0, 0] == 1.0


@pytest.mark.parametrize("colormap", ["jet", "magma", "bwr"])
def test_colormaps_are_rgb_in_range(colormap):
    heat = np.linspace(-1, 1, 64).reshape(8, 8)
    rgb = colour(heat, colormap, "minmax")
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_bwr_is_white_at_zero_blue_below_red_above():
    rgb = colour(np.array([[-1.0, 0.0, 1.0]]), "bwr", "minmax")[0]
    assert rgb[1].min() > 0.9  # white
    assert rgb[0, 2] > rgb[0, 0] and rgb[2, 0] > rgb[2, 2]


def test_alpha_blends_over_gray():
    image = np.full((4, 4, 3), 255, np.uint8)
    heat = np.ones((4, 4))
    opaque = np.asarray(overlay(image, heat, alpha=1.0, how="minmax"))
    clear = np.asarray(overlay(image, heat, alpha=0.0, how="minmax"))
    assert (clear == 255).all() and not (opaque == 255).all()


def test_cli_render_options_and_bundle(capsys, tmp_path, model, images):
    out, bundle = tmp_path / "out", tmp_path / "maps.npz"
    code, lines, err = run_cli(capsys, model, *images, "-o", out, "--npz", bundle,
                               "--colormap", "bwr", "--reduce", "sum", "--normalise", "outlier",
                               "--alpha", "0.8", "-m", "gradient,input-x-gradient")
    assert code == 0, err
    with np.load(bundle) as maps:
        assert sorted(maps) == sorted(f"img{i}.{m}" for i in range(3)
                                      for m in ("gradient", "input-x-gradient"))
        for line in lines:
            assert line["outputs"]["npz"] == str(bundle)
            np.testing.assert_array_equal(maps[line["outputs"]["npz_key"]],
                                          np.load(line["outputs"]["npy"]))
    assert Image.open(lines[0]["outputs"]["png"]).size == (16, 16)
    code, _, err = run_cli(capsys, model, *images, "--colormap", "rainbow")
    assert code == 2 and "--colormap" in err


def test_bundle_is_complete_or_absent(tmp_path):
    bundle = Bundle(tmp_path / "b.npz")
    assert bundle.close() is None and not (tmp_path / "b.npz").exists()
    bundle = Bundle(tmp_path / "b.npz")
    bundle.add("a", np.ones((2, 2)))
    assert not (tmp_path / "b.npz").exists(), "the final name appears only on close"
    bundle.close()
    assert list(np.load(tmp_path / "b.npz")) == ["a"]
    assert not list(tmp_path.glob(".*part"))
