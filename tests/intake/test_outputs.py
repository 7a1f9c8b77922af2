"""Which output is explained, and the logits behind it (issue #10 "Outputs"; #11 item 4)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxpath import Explainer
from onnxpath.cli import main
from onnxpath.errors import ModelError
from onnxpath.tools.inspect import inspect_model
from tests.intake import intake_models as m
from tests.oracle import relative_error

TOL = 1e-5  # float32 against a float64 reference on these tiny models


def cli(capsys, *args):
    code = main([*map(str, args)])
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines() if line.startswith("{")]
    return code, lines, out.err


def save(model: onnx.ModelProto, tmp_path, name: str = "model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_the_logits_output_is_chosen_over_a_first_feature_output():
    """Features first, probabilities second: today the features were explained."""
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    explainer = Explainer(m.mlp_two_outputs(), cache=False)
    result = explainer.attribute(x, "gradient")
    targets = result.targets
    expected = np.stack([m.mlp_reference(x[i:i + 1], int(t))[0] for i, t in enumerate(targets)])
    assert relative_error(result.maps, expected) < TOL
    assert result.class_logits.shape == (3, 5)
    # The logit is the Softmax input; the probability is its softmax.
    pre = np.maximum(x.astype(np.float64) @ m.MLP["w1"].T + m.MLP["b1"], 0)
    logits = pre @ m.MLP["w2"].T.astype(np.float64) + m.MLP["b2"]
    assert relative_error(result.class_logits, logits) < TOL
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert np.allclose(result.probs, probs[np.arange(3), targets], atol=1e-6)


def test_output_option_explains_the_named_output():
    x = np.random.default_rng(2).standard_normal((2, 6)).astype(np.float32)
    explainer = Explainer(m.mlp_two_outputs(), cache=False, output="features")
    result = explainer.attribute(x, "gradient", target=3)
    assert result.class_logits.shape == (2, 8)
    assert relative_error(result.maps, m.mlp_reference(x, 3, "features")) < TOL


def test_inspect_says_which_output_and_why(tmp_path, capsys):
    path = save(m.mlp_two_outputs(), tmp_path)
    report = inspect_model(path)
    assert report["output"]["name"] == "probs"
    assert "Softmax" in report["output"]["reason"] and "features" in report["output"]["reason"]
    assert report["logits"]["tensor"] == "logits"
    code = main(["inspect", str(path)])
    text = capsys.readouterr().out
    assert code == 0 and "explains   probs (classes): reached through Softmax" in text


@pytest.mark.parametrize("softmax,then", [(False, ()), (True, ()), (True, ("Flatten",)),
                                          (True, ("Cast", "Identity", "Flatten")),
                                          (True, ("Transpose",)), (False, ("Reshape0",))],
                         ids=["NxKx1x1", "softmax", "softmax-flatten", "softmax-cast-flatten",
                              "softmax-transpose", "no-softmax-squeezed"])
def test_logits_shaped_nxkx1x1_are_squeezed_and_traced_through_softmax(softmax, then):
    then = tuple(op for op in then if op != "Reshape0")
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4)).astype(np.float32)
    result = Explainer(m.conv_head(softmax, then), cache=False).attribute(x, "gradient",
                                                                           target=2)
    logits, grad = m.conv_head_reference(x, 2)
    assert result.class_logits.shape == (2, 5)
    assert relative_error(result.class_logits, logits) < TOL  # the pre-softmax logits
    assert relative_error(result.maps, grad) < TOL
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(result.probs, (shifted / shifted.sum(1, keepdims=True))[:, 2], atol=1e-6)


def test_a_one_column_output_is_a_regression(tmp_path, capsys):
    """N×1: target 0, prob null in the JSON line."""
    model = m.mlp_two_outputs()
    model.graph.output.pop()  # features only, then a one-column head
    from onnx import helper, numpy_helper
    model.graph.initializer.append(numpy_helper.from_array(m.MLP["w2"][:1], "w_reg"))
    model.graph.node.append(helper.make_node("Gemm", ["features", "w_reg"], ["value"],
                                             transB=1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("value", m.F, ["N", 1]))
    x = np.random.default_rng(4).standard_normal((1, 6)).astype(np.float32)
    np.save(tmp_path / "row.npy", x[0])
    code, lines, err = cli(capsys, "attribute", save(model, tmp_path), tmp_path / "row.npy")
    assert code == 0, err
    assert lines[0]["target"] == 0 and lines[0]["prob"] is None
    result = Explainer(model, cache=False).attribute(x)
    assert relative_error(result.maps, m.mlp_reference(x, 0)) < TOL


def test_zipmap_and_int64_label_outputs_are_skipped(tmp_path, capsys):
    """skl2onnx classifiers: `IndexError: tuple index out of range` before."""
    x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    for zipmap in (True, False):
        result = Explainer(m.zipmap_classifier(zipmap), cache=False).attribute(x, target=1)
        assert relative_error(result.maps, np.tile(m.linear_reference(1), (2, 1))) < TOL
    path = save(m.zipmap_classifier(True), tmp_path)
    report = inspect_model(path)
    assert report["output"]["name"] == "output_probability"
    assert "ZipMap" in report["output"]["reason"] and "label (int64)" in report["output"]["reason"]
    np.save(tmp_path / "row.npy", x[0])
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy")
    assert code == 0, err
    assert lines[0]["error"] is None and 0 < lines[0]["prob"] < 1


def test_output_option_refuses_a_non_float_output_in_one_line(tmp_path, capsys):
    path = save(m.zipmap_classifier(True), tmp_path)
    np.save(tmp_path / "row.npy", np.zeros(4, np.float32))
    code, _, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "--output", "label")
    assert code == 2 and "label" in err and "int64" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelError, match="no such output"):
        Explainer(m.zipmap_classifier(True), cache=False, output="nope").predict(
            np.zeros((1, 4), np.float32))


def test_tree_ensembles_run_forward_only_methods_and_gradients_refuse_with_the_fallback(
        tmp_path, capsys):
    path = save(m.tree_ensemble(), tmp_path)
    np.save(tmp_path / "row.npy", np.array([0.1, 0.9, 0.3, 0.2], np.float32))
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "-m",
                           "occlusion,rise")
    assert code == 0, err
    assert [r["error"] for r in lines] == [None, None]
    # Occluding feature 1 (0.9 -> 0) moves the sample to the other leaf: only it matters.
    occlusion = lines[0]
    assert occlusion["target"] == 2 and occlusion["prob"] == pytest.approx(0.6)
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "-o",
                           tmp_path / "out", "-m", "occlusion")
    saved = np.load(lines[0]["outputs"]["npy"])
    assert saved.shape == (4,) and saved[1] != 0 and (saved[[0, 2, 3]] == 0).all()
    code, _, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "-m", "gradient")
    assert code == 2 and "--fallback occlusion" in err and "TreeEnsembleClassifier" in err
    assert len(err.strip().splitlines()) == 1
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "-m", "gradient",
                           "--fallback", "occlusion")
    assert code == 0 and lines[0]["method"] == "occlusion"


def test_output_option_on_every_command(tmp_path, capsys):
    path = save(m.mlp_two_outputs(), tmp_path)
    x = np.random.default_rng(9).standard_normal(6).astype(np.float32)
    np.save(tmp_path / "row.npy", x)
    code, _, err = cli(capsys, "export", path, "-o", tmp_path / "g.onnx", "--output",
                       "features", "--json")
    assert code == 0, err
    exported = onnx.load(str(tmp_path / "g.onnx"))
    logits = next(o for o in exported.graph.output if o.name == "logits")
    assert logits.type.tensor_type.shape.dim[1].dim_value == 8
    code, _, err = cli(capsys, "check-grad", path, "--output", "features", "-i",
                       tmp_path / "row.npy", "-t", "2")
    assert code == 0, err
    code, lines, err = cli(capsys, "pathway", path, tmp_path / "row.npy", "--output", "features",
                           "--json", "-t", "1")
    assert code == 0, err
    assert lines[0]["target"] == 1
    code, _, err = cli(capsys, "inspect", path, "--output", "features", "--json")
    assert code == 0, err
    code, lines, err = cli(capsys, "attribute", path, tmp_path / "row.npy", "--output",
                           "features", "-t", "3", "-o", tmp_path / "out")
    assert code == 0, err
    assert relative_error(np.load(lines[0]["outputs"]["npy"])[None],
                          m.mlp_reference(x[None], 3, "features")) < TOL
