"""`onnxpath check-grad`: the gradient graph against finite differences; exit 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from command_models import classifier, save

from onnxpath.autodiff import RULES
from onnxpath.cli import main


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
    assert out.strip().splitlines()[-1].endswith("PASS")


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
