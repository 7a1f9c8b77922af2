"""`onnxpath inspect`: a report before any run; exit 0 even with unsupported ops."""

from __future__ import annotations

import json
import subprocess
import sys

from command_models import classifier, save

from onnxpath.cli import main


def inspect_json(capsys, *args):
    code = main(["inspect", *map(str, args), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_report_lists_io_logits_preprocessing_layers_and_neurons(capsys, tmp_path):
    path = save(classifier(softmax=True), tmp_path / "net.onnx")
    code, report, err = inspect_json(capsys, path)
    assert code == 0, err
    assert report["inputs"] == [{"name": "x", "shape": ["N", 3, 16, 16], "dtype": "float32"}]
    assert report["outputs"][0]["name"] == "probs"
    assert report["logits"]["tensor"] == "logits" and report["logits"]["ends_in_softmax"]
    assert report["logits"]["softmax_node"] == "softmax"
    assert report["opset"] == 17 and report["producer"] == "onnxpath-tests"
    assert report["preprocess"]["preset"] == "none"
    layers = {a["name"]: a for a in report["activations"]}
    assert layers["relu1"]["op_type"] == "Relu" and layers["relu1"]["shape"] == [8, 16, 16]
    # ReLU6 (Clip with lower bound 0) is counted by default with the rest of the ReLU family.
    assert layers["relu6"]["op_type"] == "Clip" and layers["relu6"]["selected"]
    assert layers["relu6"]["relu_family"]
    assert report["layers"] == ["Relu", "Clip", "LeakyRelu", "PRelu"]
    assert report["neurons"] == 8 * 16 * 16 + 8 * 8 * 8
    assert report["neurons_all"] == 8 * 16 * 16 + 8 * 8 * 8
    assert report["unsupported"] == [] and report["problems"] == []


def test_layers_option_narrows_the_count(capsys, tmp_path):
    path = save(classifier(softmax=True), tmp_path / "net.onnx")
    code, report, err = inspect_json(capsys, path, "--layers", "Relu")
    assert code == 0, err
    assert not {a["name"]: a for a in report["activations"]}["relu6"]["selected"]
    assert report["neurons"] == 8 * 16 * 16


def test_layers_option_and_table_output(capsys, model_path):
    assert main(["inspect", str(model_path), "--layers", "Relu,Clip"]) == 0
    out = capsys.readouterr().out
    assert "relu1" in out and "Clip" in out and "2,560 in Relu,Clip layers" in out
    assert "every op on the differentiated path has a rule" in out


def test_dynamic_model_is_analysed_at_a_given_size(capsys, tmp_path):
    path = save(classifier(dynamic=True), tmp_path / "dynamic.onnx")
    code, report, _ = inspect_json(capsys, path, "--size", "32x24")
    assert code == 0 and report["analysed_shape"] == [1, 3, 32, 24]
    assert report["neurons"] == 8 * 32 * 24 + 8 * 16 * 12  # Relu and ReLU6 (Clip)


def test_custom_domain_op_is_listed_as_unsupported_and_exits_cleanly(tmp_path):
    path = save(classifier(custom_op=True), tmp_path / "custom.onnx")
    result = subprocess.run([sys.executable, "-m", "onnxpath", "inspect", str(path), "--json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unsupported"] == [{"op_type": "Frobnicate", "node": "frobnicate"}]
    assert report["ops"]["com.example.Frobnicate"] == 1
    table = subprocess.run([sys.executable, "-m", "onnxpath", "inspect", str(path)],
                           capture_output=True, text=True)
    assert table.returncode == 0 and "Frobnicate  node 'frobnicate'" in table.stdout


def test_external_data_model_is_inspected_without_reading_weights(capsys,
                                                                   external_model_path):
    code, report, _ = inspect_json(capsys, external_model_path)
    assert code == 0 and report["external_data"] == ["net.bin"]
    assert report["neurons"] == 8 * 16 * 16 + 8 * 8 * 8


def test_unreadable_model_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx\xff")
    result = subprocess.run([sys.executable, "-m", "onnxpath", "inspect", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
