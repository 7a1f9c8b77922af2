"""The JSON line of one explained element of a multi-dim output (issue "Trust ..."): `target`
and `top` name classes with their labels, `target_index` says which element, never a flat
index into the flattened output ("class 2719")."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.intake.test_outputs import cli, save
from tests.intake.test_segmentation import CLASSES, TinySegmenter
from tests.oracle import export

LABELS = ["sky", "road", "car", "tree"]


@pytest.fixture(scope="module")
def segmenter():
    net = TinySegmenter().eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    return net, export(net, x)


def files(tmp_path, model, x):
    path = save(model, tmp_path)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return path, tmp_path / "x.npy", tmp_path / "labels.txt"


def test_target_index_names_the_class_and_the_element(segmenter, tmp_path, capsys):
    net, model = segmenter
    x = np.random.default_rng(3).standard_normal((3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        y = net(torch.tensor(x[None])).numpy()[0]  # K×H×W
    path, x_path, labels = files(tmp_path, model, x)
    code, lines, err = cli(capsys, "attribute", path, x_path, "--target-index", "2,5,3",
                           "--labels", labels, "-o", tmp_path / "out", "-q")
    assert code == 0, err
    line = lines[0]
    assert line["target"] == 2 and line["label"] == "car"
    assert line["target_index"] == [2, 5, 3]
    assert line["logit"] == pytest.approx(float(y[2, 5, 3]), rel=1e-5, abs=1e-6)
    # top: the classes at that pixel, best first, with their labels
    order = np.argsort(-y[:, 5, 3], kind="stable")
    assert [t["class"] for t in line["top"]] == order.tolist()
    assert [t["label"] for t in line["top"]] == [LABELS[k] for k in order]
    assert [t["logit"] for t in line["top"]] == pytest.approx(y[order, 5, 3].tolist(),
                                                              rel=1e-5, abs=1e-6)
    assert all(t["prob"] is None for t in line["top"]) and line["prob"] is None


def test_a_region_line_names_classes_and_has_no_element(segmenter, tmp_path, capsys):
    _, model = segmenter
    x = np.random.default_rng(4).standard_normal((3, 8, 8)).astype(np.float32)
    path, x_path, labels = files(tmp_path, model, x)
    code, lines, err = cli(capsys, "attribute", path, x_path, "--labels", labels, "-q")
    assert code == 0, err
    line = lines[0]
    assert 0 <= line["target"] < CLASSES and line["label"] == LABELS[line["target"]]
    assert all(0 <= t["class"] < CLASSES for t in line["top"])
    assert "target_index" not in line


def sequence_scorer() -> onnx.ModelProto:
    """x (N×5×3) -> MatMul -> N×5×4 scores: one row of class scores per time step."""
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5, 4])],
        [onnx.numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_sequence_of_scores_names_the_class_at_its_step(tmp_path, capsys):
    model = sequence_scorer()
    x = np.random.default_rng(5).standard_normal((5, 3)).astype(np.float32)
    scores = x @ onnx.numpy_helper.to_array(model.graph.initializer[0])
    path, x_path, labels = files(tmp_path, model, x)
    code, lines, err = cli(capsys, "attribute", path, x_path, "--labels", labels, "-q")
    assert code == 0, err
    line = lines[0]
    t, k = np.unravel_index(int(scores.argmax()), scores.shape)
    assert line["target_index"] == [t, k] and line["target"] == k
    assert line["label"] == LABELS[k]
    assert [e["class"] for e in line["top"]] == np.argsort(-scores[t], kind="stable").tolist()
    code, lines, err = cli(capsys, "attribute", path, x_path, "--target-index", "1,2", "-q")
    assert code == 0, err
    assert lines[0]["target_index"] == [1, 2] and lines[0]["target"] == 2
    assert lines[0]["logit"] == pytest.approx(float(scores[1, 2]), rel=1e-5)
