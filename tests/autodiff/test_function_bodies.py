"""Ops differentiated through a decomposition (rules/functions.py): a body that reads the
differentiated tensor only inside a subgraph is refused, never given a silent zero gradient."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpath.autodiff import gradient_graph
from onnxpath.autodiff.rules.functions import by_function_body
from onnxpath.errors import ModelError
from tests.oracle import node_model


def test_a_body_reading_the_input_inside_an_if_is_refused():
    """onnx's AffineGrid body picks the 2-D or 3-D path with If, whose branches read theta from
    the outer scope; differentiated through that body, the walker must see the If on the path."""
    model = node_model("AffineGrid", {"theta": np.ones((1, 2, 3), np.float32),
                                      "size": np.asarray([1, 1, 3, 4], np.int64)}, opset=20)
    with pytest.raises(ModelError, match="If, which has no gradient rule") as refusal:
        gradient_graph(model, "y", ["theta"], overrides={"AffineGrid": by_function_body})
    print(refusal.value)
    assert "\n" not in str(refusal.value)
