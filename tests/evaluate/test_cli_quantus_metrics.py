"""`onnxpath evaluate --metrics` with the Captum and Quantus metrics: names, the group, the
sample-count flags, and what reaches the table, CSV and JSON."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from eval_models import conv_bn_model
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxpath.cli import main
from onnxpath.evaluate.map_metrics import MAP_METRICS

SMALL = ["--faithfulness-runs", "8", "--faithfulness-subset", "40", "--sensitivity-samples",
         "3", "--lipschitz-samples", "3", "--infidelity-samples", "4", "--sanity-steps", "2",
         "-q"]


@pytest.fixture
def inputs(tmp_path):
    model = tmp_path / "convbn.onnx"
    onnx.save(conv_bn_model(), model)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{name}.png")
    return model, tmp_path / "a.png", tmp_path / "b.png"


def table_model() -> onnx.ModelProto:
    """rows (N, 6) -> Relu(rows @ w1 + b1) @ w2: a small churn-like classifier."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (6, 8)), ("b1", (8,)), ("w2", (8, 2)))]
    nodes = [helper.make_node("MatMul", ["rows", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="fc1_bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["logits"], name="fc2")]
    graph = helper.make_graph(
        nodes, "table", [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(capsys, *args):
    code = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_group_scores_every_library_metric_for_every_method(capsys, inputs, tmp_path):
    model, a, b = inputs
    code, stdout, err = run(capsys, model, a, b, "-m", "gradient,input-x-gradient",
                            "--metrics", "captum-quantus", "--json", *SMALL)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["images"] == 2
    for method in ("gradient", "input-x-gradient"):
        summary = report["summary"][method]
        assert list(summary) == list(MAP_METRICS)
        assert all(entry["n"] == 2 and entry["mean"] is not None for entry in summary.values())
    assert report["settings"]["faithfulness_runs"] == 8
    assert report["settings"]["monotonicity_step"] is None
    assert report["mprt_layers"] == {"1": "fc", "3": "conv"}
    curves = {(c["metric"], c["method"]) for c in report["curves"]}
    assert ("mprt", "gradient") in curves and ("monotonicity", "gradient") in curves
    # Monotonicity: 3 × 16 features per step by default, one image row: 16 steps.
    assert len(next(c for c in report["curves"] if c["metric"] == "monotonicity")["x"]) == 16


def test_named_metrics_print_one_table_column_each(capsys, inputs):
    model, a, b = inputs
    code, stdout, err = run(capsys, model, a, b, "-m", "gradient", "--metrics",
                            "sparseness,complexity,infidelity", "--infidelity-normalize",
                            "--monotonicity-step", "8", *SMALL)
    assert code == 0, err
    header = stdout.splitlines()[0].split()
    assert header == ["method", "sparseness", "↑", "complexity", "↓", "infidelity", "↓"]


def test_the_same_seed_gives_the_same_scores_and_another_seed_other_ones(capsys, inputs):
    model, a, b = inputs

    def scores(seed):
        code, stdout, err = run(capsys, model, a, b, "-m", "gradient", "--metrics",
                                "faithfulness-correlation,max-sensitivity", "--json", "--seed",
                                seed, *SMALL)
        assert code == 0, err
        return json.loads(stdout)["summary"]["gradient"]

    first, again, other = scores(1), scores(1), scores(2)
    assert first == again
    assert first["faithfulness-correlation"]["mean"] != other["faithfulness-correlation"]["mean"]


@pytest.mark.parametrize("args, message", [
    (["--metrics", "infidelty"], "unknown metric 'infidelty'"),
    (["--metrics", "monotonicity", "--monotonicity-step", "0"],
     "--monotonicity-step must be at least 1"),
    (["--metrics", "max-sensitivity", "--sensitivity-radius", "0"],
     "--sensitivity-radius must be above 0"),
    (["--metrics", "faithfulness-correlation", "--faithfulness-subset", "768"],
     "subset size 768 must be between 1 and the 768 features"),
])
def test_mistakes_are_one_line_usage_errors(capsys, inputs, args, message):
    model, a, _ = inputs
    code, stdout, err = run(capsys, model, a, "-m", "gradient", "-q", *args)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_table_rows_get_the_library_metrics_and_the_pixel_protocols_refuse(capsys, tmp_path):
    model = tmp_path / "table.onnx"
    onnx.save(table_model(), model)
    rows = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    for i, row in enumerate(rows):
        np.save(tmp_path / f"row{i}.npy", row)
    files = [tmp_path / f"row{i}.npy" for i in range(3)]
    code, stdout, err = run(capsys, model, *files, "-m", "gradient", "--metrics",
                            "captum-quantus", "--json", *SMALL, "--faithfulness-subset", "2")
    assert code == 0, err
    report = json.loads(stdout)
    assert list(report["summary"]["gradient"]) == list(MAP_METRICS)
    assert report["mprt_layers"] == {"1": "fc2", "2": "fc1"}
    # One feature per step where the input is not an image (Quantus's features_in_step).
    assert len(next(c for c in report["curves"] if c["metric"] == "monotonicity")["x"]) == 6
    code, _, err = run(capsys, model, *files, "-m", "gradient", "--metrics", "lerf", "-q")
    assert code == 2 and "lerf: image inputs (N, C, H, W) only" in err
