"""An all-zero map is never handed on silently: a model whose output reaches the input only
through an integer path (as a quantized model's does) gives a zero gradient, which is marked in
`extras` and warned about on stderr, while an ordinary map carries no mark."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxpath.cli import main
from onnxpath.explainer import AllZeroMapWarning, Explainer


def through_integers(path) -> None:
    """x (1×4) → Cast to int64 → Cast to float → MatMul → logits (1×3)."""
    weight = numpy_helper.from_array(
        np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "weight")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["ints"], to=TensorProto.INT64),
         helper.make_node("Cast", ["ints"], ["floats"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["floats", "weight"], ["logits"])],
        "through_integers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_zero_gradient_is_marked_and_warned(tmp_path):
    through_integers(tmp_path / "m.onnx")
    x = np.array([[1.5, 2.0, -3.0, 4.2]], dtype=np.float32)
    with pytest.warns(AllZeroMapWarning, match="1 of 1 maps are all zero"):
        result = Explainer(tmp_path / "m.onnx").attribute(x, method="gradient")
    assert not result.maps.any() and result.extras[0]["all_zero"] is True


def test_the_cli_says_so_on_stderr(tmp_path, capsys):
    through_integers(tmp_path / "m.onnx")
    np.save(tmp_path / "row.npy", np.array([1.5, 2.0, -3.0, 4.2], dtype=np.float32))
    code = main(["attribute", str(tmp_path / "m.onnx"), str(tmp_path / "row.npy"), "-q"])
    captured = capsys.readouterr()
    record = json.loads(captured.out.splitlines()[0])
    assert code == 0 and record["extras"]["all_zero"] is True
    assert any(line.startswith("onnxpath: warning: gradient: 1 of 1 maps are all zero")
               for line in captured.err.splitlines())


def test_an_ordinary_map_carries_no_mark(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["logits"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.ones((4, 3), np.float32), "weight")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "linear.onnx")
    result = Explainer(tmp_path / "linear.onnx").attribute(np.ones((1, 4), np.float32))
    assert "all_zero" not in result.extras[0]
