"""Ops differentiated through a decomposition (rules/functions.py): a body that reads the
differentiated tensor only inside a subgraph is refused, never given a silent zero gradient."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from onnxpath.autodiff import gradient_graph
from onnxpath.autodiff.rules.functions import by_function_body
from onnxpath.errors import ModelError
from tests.oracle import graph_model, node_model


def test_a_body_reading_the_input_inside_an_if_is_refused():
    """onnx's AffineGrid body picks the 2-D or 3-D path with If, whose branches read theta from
    the outer scope; differentiated through that body, the walker must see the If on the path."""
    model = node_model("AffineGrid", {"theta": np.ones((1, 2, 3), np.float32),
                                      "size": np.asarray([1, 1, 3, 4], np.int64)}, opset=20)
    with pytest.raises(ModelError, match="If, which has no gradient rule") as refusal:
        gradient_graph(model, "y", ["theta"], overrides={"AffineGrid": by_function_body})
    print(refusal.value)
    assert "\n" not in str(refusal.value)


def test_a_body_onnx_cannot_expand_is_refused_in_one_line():
    """onnx's inliner cannot type an omitted optional input that comes before a given one
    (LinearAttention without past_state but with decay and beta)."""
    rng = np.random.default_rng(0)
    inputs = {"q": rng.standard_normal((1, 2, 4)).astype(np.float32),
              "k": rng.standard_normal((1, 2, 4)).astype(np.float32),
              "v": rng.standard_normal((1, 2, 4)).astype(np.float32), "state": None,
              "decay": -np.full((1, 2, 1), 0.2, np.float32),
              "beta": np.full((1, 2, 1), 0.5, np.float32)}
    node = helper.make_node("LinearAttention", [n if v is not None else "" for n, v in
                                                inputs.items()], ["y", "present"],
                            q_num_heads=1, kv_num_heads=1)
    model = graph_model([node], inputs, opset=28)
    with pytest.raises(ModelError, match="cannot expand its function body") as refusal:
        gradient_graph(model, "y", ["q", "k", "v"])
    print(refusal.value)
    assert "\n" not in str(refusal.value)
