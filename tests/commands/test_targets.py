"""check-grad's --target: a class index or a label, like pathway's; topK is one clear error."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
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


@pytest.fixture
def dynamic_model(tmp_path):
    """5 classes, input N×3×H×W: the class count is unknown until a run."""
    return save(classifier(dynamic=True), tmp_path / "dynamic.onnx")


@pytest.mark.parametrize("batch", ["1", "3"])
def test_top_k_past_the_classes_of_a_dynamic_model_is_one_error(capsys, tmp_path,
                                                                 dynamic_model, batch):
    """Checked before the run for fixed shapes (tests/cli/test_names.py); here the run itself
    stops at the first input, exit 2, one line, no result: never K quietly cut to 5."""
    for i in range(3):
        np.save(tmp_path / f"x{i}.npy", np.zeros((3, 16, 16), np.float32))
    code = main(["attribute", str(dynamic_model), *(str(tmp_path / f"x{i}.npy") for i in range(3)),
                 "-t", "top9", "-b", batch, "-q", "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip() == ("onnxpath: error: --target top9 asks for 9 classes; the "
                                    "model has 5")
    assert not list((tmp_path / "out").glob("*.npy"))


def test_top_k_up_to_the_classes_of_a_dynamic_model(capsys, tmp_path, dynamic_model):
    np.save(tmp_path / "x.npy", np.zeros((3, 16, 16), np.float32))
    assert main(["attribute", str(dynamic_model), str(tmp_path / "x.npy"), "-t", "top5",
                 "-q"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["target"] for line in lines) == [0, 1, 2, 3, 4]


def test_the_loop_never_cuts_top_k(tmp_path, dynamic_model):
    """Both ways the loop finds the K best classes: a stacked batch and one example alone."""
    from onnxpath.errors import UsageError
    from onnxpath.explainer import Explainer
    from onnxpath.run.job import Job
    from onnxpath.run.loop import RunLoop

    loop = RunLoop(Explainer(dynamic_model, cache=False), Job(top_k=6), print)
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(UsageError, match="--target top6 asks for 6 classes; the model has 5"):
        loop.attribute(x, "gradient")
    with pytest.raises(UsageError, match="the model has 5"):
        loop.targets(SimpleNamespace(inputs=x[:1]))
    loop.job.top_k = 5
    assert sorted(loop.targets(SimpleNamespace(inputs=x[:1]))) == [0, 1, 2, 3, 4]
