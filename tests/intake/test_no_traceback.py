"""Never a traceback (issue #10 item 5), and the housekeeping items (item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpath import explainer as explainer_module
from onnxpath.cli import main
from onnxpath.cli.evaluate import parse_options
from onnxpath.methods import METHODS
from tests.intake import intake_models as m
from tests.intake.test_outputs import cli, save


@pytest.fixture
def model_and_rows(tmp_path):
    path = save(m.mlp_two_outputs(), tmp_path)
    rows = []
    for k in range(3):
        rows.append(tmp_path / f"row{k}.npy")
        np.save(rows[-1], np.full(6, float(k), np.float32))
    return path, rows


def test_an_unexpected_error_before_processing_is_one_line_and_exit_2(model_and_rows,
                                                                      monkeypatch, capsys):
    path, rows = model_and_rows

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(explainer_module, "normalise", broken)
    code, lines, err = cli(capsys, "attribute", path, *rows)
    assert code == 2 and lines == []
    (line,) = err.strip().splitlines()
    assert str(path) in line and "KeyError" in line and "rerun with --debug" in line
    assert "while checking the gradient rules" in line or "while normalising" in line
    with pytest.raises(KeyError):
        main(["attribute", str(path), str(rows[0]), "--debug"])


def test_an_unexpected_error_inside_a_batch_is_an_error_line_and_exit_1(model_and_rows,
                                                                        monkeypatch, capsys):
    path, rows = model_and_rows
    gradient = METHODS["gradient"]

    def flaky(engine, x, targets, **kwargs):
        if (x == 1.0).all(axis=1).any():
            raise IndexError("tuple index out of range")
        return gradient(engine, x, targets, **kwargs)

    for attr in ("needs_gradients", "picks_target"):
        setattr(flaky, attr, getattr(gradient, attr))
    monkeypatch.setitem(METHODS, "gradient", flaky)
    code, lines, err = cli(capsys, "attribute", path, *rows, "-b", "3")
    assert code == 1 and "Traceback" not in err
    assert [r["error"] is None for r in lines] == [True, False, True]
    assert "IndexError" in lines[1]["error"] and "rerun with --debug" in lines[1]["error"]


def test_evaluate_shares_the_preprocessing_flags(capsys):
    code = main(["evaluate", "--help"])
    help_text = capsys.readouterr().out
    assert code == 0
    for flag in ("--scale", "--resize", "--crop", "--bgr", "--layout", "--gray",
                 "--preprocess", "--output"):
        assert flag in help_text


def test_option_lists():
    """`-o layers=Clip` was split into characters; `-o key=a,b` is a list."""
    assert parse_options(["layers=Clip"]) == {"layers": ["Clip"]}
    assert parse_options(["layers=Relu,Clip"]) == {"layers": ["Relu", "Clip"]}
    assert parse_options(["prune_percent=70", "baseline=blur"]) == {"prune_percent": 70,
                                                                   "baseline": "blur"}
    assert parse_options(["window=2,3"]) == {"window": [2, 3]}
