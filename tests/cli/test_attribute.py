"""`onnxpath attribute`: JSON lines, output files, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_models import conv_classifier

from onnxpath import Explainer
from onnxpath.cli import main


def run_cli(capsys, *args):
    code = main(["attribute", *map(str, args)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def test_image_and_npy_inputs_write_raw_maps_and_overlays(capsys, tiny_model, sample_png,
                                                            sample_npy, tmp_path):
    out = tmp_path / "out"
    code, lines, err = run_cli(capsys, tiny_model, sample_png, sample_npy, "--out", out)
    assert code == 0, err
    assert [line["input"] for line in lines] == [str(sample_png), str(sample_npy)]
    for line in lines:
        assert line["error"] is None
        assert line["method"] == "gradient"
        assert 0 <= line["target"] < 4
        assert 0.0 < line["prob"] <= 1.0
        assert set(line) >= {"input", "method", "target", "label", "logit", "prob", "outputs",
                             "params", "time_ms", "error"}
    assert set(lines[0]["outputs"]) == {"npy", "png"}
    assert set(lines[1]["outputs"]) == {"npy"}  # a tensor input has no picture to overlay
    raw = np.load(lines[1]["outputs"]["npy"])
    assert raw.dtype == np.float32 and raw.shape == (3, 32, 32)
    x = np.load(sample_npy)
    expected = Explainer(tiny_model).attribute(x, method="gradient")
    np.testing.assert_allclose(raw, expected.maps[0], rtol=1e-5, atol=1e-7)
    assert (raw < 0).any() and (raw > 0).any(), "the raw map is signed"
    assert lines[1]["target"] == int(expected.targets[0])


def test_explicit_target_and_pre_softmax_logit(capsys, tiny_model, sample_npy):
    code, lines, _ = run_cli(capsys, tiny_model, sample_npy, "--target", "2")
    assert code == 0 and lines[0]["target"] == 2
    explainer = Explainer(tiny_model)
    logits = explainer.predict(np.load(sample_npy))
    assert lines[0]["logit"] == pytest.approx(float(logits[0, 2]), rel=1e-5)


def test_bad_items_get_error_lines_and_the_batch_goes_on(capsys, tiny_model, sample_npy,
                                                         tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 8, 8), np.float32))
    code, lines, err = run_cli(capsys, tiny_model, broken, tmp_path / "missing.jpg", wrong,
                               sample_npy, "--out", tmp_path / "out")
    assert code == 1
    assert [line["error"] is None for line in lines] == [False, False, False, True]
    assert "cannot read" in lines[0]["error"] and "not found" in lines[1]["error"]
    assert "shape" in lines[2]["error"]
    assert sorted(p.name for p in (tmp_path / "out").glob("[!.]*")) == ["tensor.gradient.npy"]
    assert "Traceback" not in err


@pytest.mark.parametrize("problem", ["missing", "corrupt", "no-rule"])
def test_model_errors_are_one_line_with_exit_code_2(tmp_path, sample_npy, problem):
    if problem == "missing":
        model = tmp_path / "nope.onnx"
    elif problem == "corrupt":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(b"this is not a protobuf at all \xff\xfe")
    else:
        model = conv_classifier(tmp_path, extra_op="Sin")
    # Every ONNX op has a rule, so the no-rule case runs the CLI with Sin's rule taken away.
    prelude = "from onnxpath.autodiff import RULES; RULES.pop('Sin'); " if problem == "no-rule" \
        else ""
    command = f"import sys; {prelude}from onnxpath.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", command, "attribute", str(model),
                             str(sample_npy), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxpath: error:"), result.stderr
    assert not (tmp_path / "out").exists()
    if problem == "no-rule":
        assert "Sin" in lines[0] and "odd_node" in lines[0]


def test_debug_shows_the_traceback(tmp_path, sample_npy):
    result = subprocess.run([sys.executable, "-m", "onnxpath", "attribute",
                             str(tmp_path / "nope.onnx"), str(sample_npy), "--debug"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_method_is_a_usage_error(capsys, tiny_model, sample_npy):
    code, lines, err = run_cli(capsys, tiny_model, sample_npy, "--method", "telepathy")
    assert code == 2 and lines == [] and "unknown method" in err


def test_same_stem_in_two_folders_does_not_collide(capsys, tiny_model, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", np.ones((3, 32, 32), np.float32))
    code, lines, _ = run_cli(capsys, tiny_model, tmp_path / "a" / "x.npy",
                             tmp_path / "b" / "x.npy", "--out", tmp_path / "out")
    assert code == 0
    written = {line["outputs"]["npy"] for line in lines}
    assert len(written) == 2 and all((tmp_path / "out").joinpath(p).exists() for p in written)


@pytest.mark.parametrize("args", [["attribute", "--bogus"], ["attribute"],
                                  ["attribute", "m.onnx", "x.png", "--steps", "many"]])
def test_usage_errors_exit_2_without_traceback(args):
    result = subprocess.run([sys.executable, "-m", "onnxpath", *args], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Error" in result.stderr


def test_target_index_with_top_k_is_one_error(tmp_path, capsys):
    """--target-index names one output element; --target topK would rank elements and write
    their maps over each other: the pair is refused in one line."""
    from onnxpath.cli import main

    model = Path(__file__).resolve().parents[2] / "models" / "shapes_resnet.onnx"
    image = model.parent / "samples" / "star_0.png"
    code = main(["attribute", str(model), str(image), "--target-index", "3", "--target",
                 "top2", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--target-index" in err[0]
    assert not any((tmp_path / "out").glob("*.npy"))
