"""`onnxpath check-grad`: the gradient graph against finite differences; exit 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from command_models import classifier, save
from onnx import TensorProto, helper, numpy_helper

from onnxpath.autodiff import RULES
from onnxpath.cli import main
from onnxpath.explainer import Explainer
from onnxpath.tools.float64 import as_float64
from onnxpath.tools.gradcheck import Direction, GradCheck, check_gradient


def check_json(capsys, *args):
    code = main(["check-grad", *map(str, args), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


def test_correct_gradient_passes(capsys, model_path):
    code, result, err = check_json(capsys, model_path, "--directions", "6")
    assert code == 0, err
    assert result["passed"] and len(result["directions"]) == 6
    assert result["worst_relative_error"] < 1e-2, "float32 FD on a tiny net is far better"
    assert result["shape"] == [3, 16, 16] and result["input"].startswith("random")
    for d in result["directions"]:
        assert abs(d["numeric"] - d["analytic"]) <= 1e-2 * max(abs(d["analytic"]),
                                                               result["gradient_norm"])


def test_given_input_target_and_table_output(capsys, model_path, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32))
    code = main(["check-grad", str(model_path), "--input", str(x), "--target", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "target 2" in out and str(x) in out
    lines = out.strip().splitlines()
    assert lines[-1].endswith("PASS") and "directions agree with float64" in lines[-1]
    assert "piecewise nodes watched" in lines[1] and "float32 gradient is" in lines[2]
    assert lines[3].endswith("kinks") and all(line.split()[-1] in ("none", "steps")
                                             for line in lines[4:-1])


def test_a_wrong_rule_fails_with_exit_1(capsys, model_path, monkeypatch):
    monkeypatch.setitem(RULES, "Relu", lambda node, dy, b: [dy[0]])  # forgets the mask
    code, result, _ = check_json(capsys, model_path)
    assert code == 1 and not result["passed"]
    assert result["worst_relative_error"] > 0.1


def test_dynamic_model_at_a_given_size(capsys, tmp_path):
    path = save(classifier(dynamic=True), tmp_path / "dynamic.onnx")
    code, result, err = check_json(capsys, path, "--size", "20x12", "--directions", "3")
    assert code == 0, err
    assert result["shape"] == [3, 20, 12]


def test_model_without_a_rule_exits_2_with_one_line(tmp_path):
    path = save(classifier(custom_op=True), tmp_path / "custom.onnx")
    result = subprocess.run([sys.executable, "-m", "onnxpath", "check-grad", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Frobnicate" in lines[0]


def test_bad_options_are_usage_errors(capsys, model_path):
    assert main(["check-grad", str(model_path), "--directions", "0"]) == 2
    assert "--directions" in capsys.readouterr().err
    assert main(["check-grad", str(model_path), "--eps", "-1"]) == 2


# --- kinks, float64, and the shipped models ---

MODELS = Path(__file__).resolve().parents[2] / "models"
SHAPES, LITE0, DIGITS = (MODELS / "shapes_resnet.onnx", MODELS / "efficientnet_lite0.onnx",
                         MODELS / "digits_cnn.onnx")


def table_model(op: str = "Relu") -> onnx.ModelProto:
    """x (N×4) -> op -> Gemm (4×3): the smallest model with one elementwise op in it."""
    w = np.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0], [2.0, 0.1, 1.0], [-1.0, 3.0, 2.0]],
                 np.float32)
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["a"]), helper.make_node("Gemm", ["a", "w"], ["logits"])],
        "table", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def scaled(rule, factor):
    """A rule whose every input gradient is `factor` times too large."""
    def wrong(node, dy, b):
        return [None if g is None else b.op("Mul", g, b.scalar(factor))
                for g in rule(node, dy, b)]
    return wrong


def test_the_shipped_models_pass_in_float64_where_float32_differences_failed(capsys):
    """Float32 differences failed Lite0 on coffee.jpg (0.159) and the digits CNN on 2_0.png
    (0.31): kinks crossed, float32 rounding, and max-pool ties on the flat background."""
    code, result, err = check_json(capsys, LITE0, "--input", MODELS / "photos" / "coffee.jpg",
                                   "--directions", "3")
    assert code == 0, err
    assert result["precision"] == "float64" and result["tolerance"] == 1e-3
    assert result["worst_relative_error"] < 1e-5 and result["crossed_directions"] == 0
    assert result["watched_nodes"] == 33  # the ReLU6 Clips
    assert result["float32_gap"] < 1e-2
    code, result, err = check_json(capsys, DIGITS, "--input", MODELS / "digits" / "2_0.png",
                                   "--directions", "3")
    assert code == 0, err
    assert result["shift"] > 0 and result["kinks_at_x"] > 100, "x on max-pool ties: moved"
    assert result["worst_relative_error"] < 1e-4 and "from x" in result["verdict"]


@pytest.mark.parametrize("mutation", ["gemm x1.1", "conv x1.1", "add drops the skip"])
def test_a_wrong_rule_fails_on_the_demo_model(capsys, monkeypatch, mutation):
    """A gradient 10 % too large in one op (the one Gemm), in every Conv, or a residual Add
    that forgets its skip branch: each makes check-grad fail with exit 1."""
    if mutation == "gemm x1.1":
        monkeypatch.setitem(RULES, "Gemm", scaled(RULES["Gemm"], 1.1))
    elif mutation == "conv x1.1":
        monkeypatch.setitem(RULES, "Conv", scaled(RULES["Conv"], 1.1))
    else:
        add = RULES["Add"]
        monkeypatch.setitem(RULES, "Add", lambda node, dy, b: [add(node, dy, b)[0], None])
    code, result, _ = check_json(capsys, SHAPES, "--input", MODELS / "samples" / "star_0.png",
                                 "--directions", "4")
    assert code == 1 and not result["passed"] and result["precision"] == "float64"
    assert result["worst_relative_error"] > 0.05 and result["crossed_directions"] == 0
    assert "disagree" in result["verdict"] and result["verdict"].endswith("FAIL")
    if mutation == "gemm x1.1":  # the whole gradient 1.1 times too large: at most 0.1 / 1.1
        errors = [d["relative_error"] for d in result["directions"]]
        assert 0.09 < max(errors) < 0.1 / 1.1 + 1e-4


def test_a_step_that_crosses_a_kink_is_shrunk(capsys, tmp_path):
    """An element 2e-9 from Relu's kink: the first step crosses it, a smaller one does not."""
    path = save(table_model(), tmp_path / "relu.onnx")
    np.save(tmp_path / "x.npy", np.array([[1.0, -1.0, 0.5, 2e-9]], np.float32))
    code, result, err = check_json(capsys, path, "--input", tmp_path / "x.npy")
    assert code == 0, err
    assert result["crossed_directions"] == 0 and result["watched_nodes"] == 1
    assert any(d["tries"] > 1 for d in result["directions"])
    assert result["worst_relative_error"] < 1e-6


def test_a_kink_that_every_direction_crosses_is_said_not_passed(tmp_path):
    """x exactly at a Relu kink: with a float32 model no step avoids it. The check reports
    every direction as crossed and fails as inconclusive rather than pass."""
    x = np.array([[1.0, -1.0, 0.5, 0.0]], np.float32)
    result = check_gradient(Explainer(table_model(), cache=False), x, directions=4,
                            float64=False)
    assert result.crossed == 4 and not result.passed and result.precision == "float32"
    assert all(d.switched_elements == 1 and d.switched_nodes == 1 for d in result.directions)
    assert all(d.step == result.steps[-1] for d in result.directions), "shrunk to the floor"
    report = result.report("relu.onnx", "x.npy").splitlines()
    assert all(line.endswith("crossed a kink (1 element of 1 node switched)")
               for line in report[3:-1])
    assert "all 4 directions crossed a kink" in report[-1] and report[-1].endswith("FAIL")
    assert result.to_json()["worst_relative_error"] is None
    # In float64 the check moves off the kink and passes, and says so.
    moved = check_gradient(Explainer(table_model(), cache=False), x, directions=4)
    assert moved.passed and moved.shift > 0 and moved.kinks_at_x == 1
    assert "x lies on a kink" in moved.report("relu.onnx", "x.npy")


def test_directions_that_cross_are_left_out_of_the_verdict():
    d = [Direction(1.0, 1.0, 1e-7, 1e-9), Direction(1.0, 1.3, 0.23, 1e-11, 5, 2, 3)]
    result = GradCheck(0, 1.0, (4,), 1e-3, (1e-9, 1e-11), 1e-3, 1.0, directions=d)
    assert result.passed and result.worst_relative_error == 1e-7 and result.crossed == 1
    assert "1 of 2 directions agree" in result.verdict
    assert "1 crossed a kink even at the smallest step and is left out" in result.verdict
    result.directions[0] = Direction(1.0, 1.2, 0.17, 1e-9)
    assert not result.passed and "direction 1;" in result.verdict


def test_a_model_without_float64_kernels_checks_in_float32_and_says_why(capsys, tmp_path):
    path = save(table_model("Erf"), tmp_path / "erf.onnx")
    code, result, err = check_json(capsys, path, "--directions", "3")
    assert code == 0, err
    assert result["precision"] == "float32" and "float64 Erf" in result["precision_note"]
    assert result["tolerance"] == 0.1 and result["float32_gap"] is None


@pytest.mark.parametrize("op, xs, ws, attrs", [
    ("Conv", [2, 4, 9, 9], [6, 2, 3, 3], {"pads": [0, 1, 2, 1], "strides": [2, 2], "group": 2}),
    ("Conv", [1, 4, 10, 11], [4, 1, 5, 5], {"auto_pad": "SAME_UPPER", "strides": [2, 2],
                                             "group": 4}),
    ("Conv", [1, 4, 10, 11], [4, 1, 3, 3], {"pads": [2, 1, 0, 3], "strides": [2, 1],
                                             "dilations": [2, 3], "group": 4}),
    ("Conv", [1, 3, 17], [5, 3, 4], {"strides": [3], "pads": [2, 1]}),
    ("ConvTranspose", [1, 4, 5, 6], [4, 2, 3, 3], {"strides": [2, 3], "pads": [0, 1, 1, 0],
                                                    "group": 2, "dilations": [2, 1]}),
    ("ConvTranspose", [1, 4, 5, 5], [4, 1, 5, 5], {"strides": [2, 2], "pads": [2, 2, 2, 2],
                                                    "group": 4, "output_padding": [1, 0]}),
    ("ConvTranspose", [1, 4, 5, 5], [4, 3, 3, 3], {"output_shape": [10, 11],
                                                    "strides": [2, 2]}),
])
def test_the_float64_rewrites_compute_what_onnx_runtime_does(op, xs, ws, attrs):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0] if op == "Conv" else ws[1] * attrs.get("group", 1))
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(b.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal(xs).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           for m in (model, as_float64(model))]
    y32, y64 = run[0].run(None, {"x": x})[0], run[1].run(None, {"x": x.astype(np.float64)})[0]
    assert y64.dtype == np.float64 and y64.shape == y32.shape
    assert np.abs(y64 - y32).max() <= 1e-5 * np.abs(y32).max()


def test_an_input_image_is_read_with_the_preprocessing_flags(capsys, tmp_path):
    """check-grad --input photo.png reads the image as attribute does: the same preprocessing
    flags, the same tensor (checked here against that tensor saved as .npy)."""
    from PIL import Image

    from onnxpath.cli.jobs import recipe_from
    from onnxpath.cli.options import PREPROCESSING
    from onnxpath.io.image import load_input

    model = save(classifier(dynamic=True), tmp_path / "dynamic.onnx")
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(3).random((30, 40, 3)) * 255).astype(np.uint8)) \
        .save(photo)
    flags = ["--preset", "none", "--size", "12x20", "--mean", "0.5,0.4,0.3", "--std",
             "0.2,0.2,0.2", "--bgr"]
    code, from_image, err = check_json(capsys, model, "-i", photo, "-k", "2", *flags)
    assert code == 0, err
    assert from_image["shape"] == [3, 12, 20]
    o = {f.name: None for f in PREPROCESSING}
    o.update(preset="none", size="12x20", mean="0.5,0.4,0.3", std="0.2,0.2,0.2", bgr=True)
    explainer = Explainer(model, cache=False)
    x, _ = load_input(photo, explainer.input_shape, recipe_from(SimpleNamespace(**o), explainer))
    np.save(tmp_path / "x.npy", x)
    code, from_npy, err = check_json(capsys, model, "-i", tmp_path / "x.npy", "-k", "2")
    assert code == 0, err
    assert from_image["gradient_norm"] == pytest.approx(from_npy["gradient_norm"], rel=1e-6)
    assert from_image["logit"] == pytest.approx(from_npy["logit"], rel=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--mean", "0.5"], "--mean reads an image: give --input IMAGE (the random input is "
                        "already in model space"),
    (["--preset", "imagenet", "--rgb"], "--preset, --bgr/--rgb read an image"),
    (["--size", "8x8"], "--size 8x8 does not match the model input 16x16"),
    (["--tolerance", "0"], "--tolerance must be positive, got 0"),
])
def test_image_flags_without_an_image_are_one_line_errors(capsys, model_path, args, message):
    code = main(["check-grad", str(model_path), "-k", "2", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
