"""The baseline methods through `onnxpath attribute`: options, extras, fallback, figures; method
names and option keys as users type them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_nets import conv_net
from PIL import Image

from onnxpath.autodiff import RULES as GRADIENT_RULES
from onnxpath.cli import main
from onnxpath.errors import UsageError
from onnxpath.methods import (
    METHODS,
    check_options,
    effective_params,
    resolve_method,
    resolve_methods,
)
from onnxpath.methods.occlusion import pair


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


def test_fallback_to_a_forward_only_method(capsys, tmp_path, png, monkeypatch):
    monkeypatch.delitem(GRADIENT_RULES, "Sin")  # every ONNX op has a rule: take one away
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


@pytest.mark.parametrize("name, registered", [
    ("saliency", "gradient"), ("Saliency", "gradient"), ("input_x_gradient", "input-x-gradient"),
    ("InputXGradient", "input-x-gradient"), ("integrated_gradients", "integrated-gradients"),
    ("guided_backprop", "guided-backprop"), ("deconvolution", "deconvnet"),
    ("Occlusion", "occlusion"), ("lime", "lime"), ("kernel_shap", "kernel-shap"),
    ("KernelShap", "kernel-shap"), ("layer_gradcam", "gradcam"), ("LayerGradCam", "gradcam"),
    ("noise_tunnel", "smoothgrad"), ("pathway", "pathway"),
])
def test_method_names_resolve_to_registered_ones(name, registered):
    assert resolve_method(name) == registered


@pytest.mark.parametrize("name, hint", [("gradiant", "gradient"), ("smothgrad", "smoothgrad"),
                                        ("integrated_gradint", "integrated-gradients"),
                                        ("gradcm", "gradcam")])
def test_near_misses_get_the_closest_name(name, hint):
    with pytest.raises(UsageError, match=f"unknown method '{name}'; did you mean '{hint}'\\?"):
        resolve_method(name)
    with pytest.raises(UsageError, match="choose from ") as refused:
        resolve_method("xyzzy")
    assert all(name in str(refused.value) for name in METHODS)


def test_aliases_imply_their_options():
    assert resolve_methods("saliency, pathway") == (["gradient", "pathway"], {"absolute": True})
    assert resolve_methods(["gradient"]) == (["gradient"], {})
    with pytest.raises(UsageError, match="would reach 'gradient' too"):
        resolve_methods("saliency,gradient")
    with pytest.raises(UsageError, match="no method given"):
        resolve_methods(" , ")


def test_unknown_option_keys_name_the_valid_ones():
    check_options(["pathway", "gradient"], {"prune_percent": 70, "absolute": True})
    with pytest.raises(UsageError, match=r"'prune' for pathway; did you mean 'prune_percent'\?"):
        check_options(["pathway"], {"prune": 50})
    with pytest.raises(UsageError, match=r"'stpes' for integrated-gradients; did you mean "
                                         r"'steps'\? \(valid: .*rule, seed, steps\)"):
        check_options(["integrated-gradients"], {"stpes": 8})


def test_pathway_params_report_the_effective_prune_percent():
    assert effective_params(METHODS["pathway"], {})["prune_percent"] == 85
    assert effective_params(METHODS["pathway"], {"keep": 25})["prune_percent"] == 75
    assert effective_params(METHODS["pathway"], {"prune_percent": 60})["prune_percent"] == 60
    assert "prune_percent" not in effective_params(METHODS["gradient"], {"prune_percent": 60})


@pytest.mark.parametrize("value, shown", [("0", "'0'"), ("4x0", "'4x0'"), ((2, 0), "'2x0'"),
                                          (0, "'0'")])
def test_window_messages_show_the_value_given(value, shown):
    with pytest.raises(UsageError, match=f"--window takes positive N or HxW, got {shown}$"):
        pair(value, "window")
