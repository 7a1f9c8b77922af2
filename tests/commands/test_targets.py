"""check-grad's --target: a class index or a label, like pathway's; topK is one clear error."""

from __future__ import annotations

import json

import pytest
from command_models import classifier, save

from onnxpath.cli import main


@pytest.fixture
def labelled(tmp_path):
    model = classifier()
    model.metadata_props.add(key="onnxpath.labels",
                             value=json.dumps(["ant", "bee", "cat", "dog", "eel"]))
    return save(model, tmp_path / "labelled.onnx")


def test_check_grad_takes_a_label(capsys, labelled):
    code = main(["check-grad", str(labelled), "--target", "Cat", "--directions", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["target"] == 2


@pytest.mark.parametrize("target, message", [
    ("top2", "--target top2: check-grad explains one class; give a class index or label"),
    ("wolf", "--target 'wolf' is neither a class index nor a known label"),
    ("-1", "--target must be a class index >= 0, got -1"),
])
def test_check_grad_target_mistakes(capsys, labelled, target, message):
    assert main(["check-grad", str(labelled), "--target", target, "--directions", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
