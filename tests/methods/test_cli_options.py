"""The baseline methods through `onnxpath attribute`: options, extras, fallback, figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_nets import conv_net
from PIL import Image

from onnxpath.cli import main


def run_cli(capsys, *args):
    code = main(["attribute", *map(str, args)])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line], captured.err


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "cat.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_several_methods_share_one_call_and_draw_one_figure(capsys, tmp_path, png):
    model, out = conv_net(tmp_path / "net.onnx"), tmp_path / "out"
    code, lines, err = run_cli(capsys, model, png, "-m", "gradient,integrated-gradients,gradcam",
                               "--steps", "8", "--rule", "riemann-middle", "--side-by-side",
                               "--size", "16x16", "-o", out)
    assert code == 0, err
    assert [line["method"] for line in lines] == ["gradient", "integrated-gradients", "gradcam"]
    ig = lines[1]
    assert ig["params"]["steps"] == 8 and ig["params"]["rule"] == "riemann-middle"
    assert ig["params"]["baseline"] == "zero"  # defaults are reported too
    assert set(ig["extras"]) >= {"delta", "f_x", "f_baseline"}
    assert lines[2]["extras"]["layer"] == "r"
    figure = Image.open(lines[0]["outputs"]["side_by_side"])
    assert figure.width > 3 * figure.height  # input + three panels in one row
    assert all(line["outputs"]["side_by_side"] == str(figure.filename) for line in lines)


def test_side_by_side_needs_out(capsys, tmp_path, png):
    code, _, err = run_cli(capsys, conv_net(tmp_path / "net.onnx"), png, "--side-by-side")
    assert code == 2 and "--out" in err


def test_method_options_reach_the_methods(capsys, tmp_path, png):
    model = conv_net(tmp_path / "net.onnx")
    code, lines, err = run_cli(capsys, model, png, "--size", "16x16", "-m",
                               "smoothgrad,occlusion,rise", "--samples", "2", "--noise", "10%",
                               "--variant", "var", "--window", "4x8", "--stride", "4",
                               "--rise-masks", "20", "--cells", "3", "--seed", "5")
    assert code == 0, err
    sg, occ, rise = lines
    assert sg["params"]["samples"] == 2 and sg["params"]["variant"] == "var"
    assert sg["params"]["noise"] == "10%" and sg["params"]["seed"] == 5
    assert occ["params"]["window"] == "4x8" and occ["extras"]["windows"] == 4 * 3
    assert rise["params"]["masks"] == 20 and rise["params"]["seed"] == 5


def test_fallback_to_a_forward_only_method(capsys, tmp_path, png):
    model = conv_net(tmp_path / "sin.onnx", rule_less_op="Sin")
    code, _, err = run_cli(capsys, model, png, "--size", "16x16")
    assert code == 2 and "Sin" in err
    code, lines, err = run_cli(capsys, model, png, "--size", "16x16", "--fallback", "occlusion",
                               "--window", "4", "--stride", "4", "-o", tmp_path / "out")
    assert code == 0, err
    assert "falls back to occlusion" in err
    assert lines[0]["method"] == "occlusion"
    assert lines[0]["extras"]["fallback_from"] == "gradient"
    assert lines[0]["outputs"]["npy"].endswith("cat.occlusion.npy")


def test_bad_method_options_are_usage_errors(capsys, tmp_path, png):
    model = conv_net(tmp_path / "net.onnx")
    for args in (["-m", "integrated-gradients", "--rule", "simpson"],
                 ["-m", "smoothgrad", "--variant", "max"],
                 ["-m", "gradcam", "--layer", "nowhere"],
                 ["--fallback", "gradient"]):
        code, lines, err = run_cli(capsys, model, png, "--size", "16x16", *args)
        assert code == 2, args
        assert err.startswith("onnxpath: error:") and "Traceback" not in err
