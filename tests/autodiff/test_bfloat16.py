"""bfloat16 models. ONNX Runtime's CPU provider has no bfloat16 arithmetic (Add, MatMul, Conv,
Relu... fail to load) and numpy's bfloat16 cannot be fed to a session, so intake/bfloat16.py
runs them as the provider runs float16 ones: weights exactly as stored, arithmetic in float32.
The gradient then matches torch float64 on the same bfloat16-rounded weights and input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxpath import Explainer
from onnxpath.errors import ModelError
from onnxpath.intake.bfloat16 import bfloat16_as_float32, uses_bfloat16
from onnxpath.ort.sessions import make_session
from tests.autodiff.test_float16 import SmallNet, TinyTransformer
from tests.oracle import export, torch_gradient

ml_dtypes = pytest.importorskip("ml_dtypes")


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def to_bfloat16(model: onnx.ModelProto, keep_io: bool) -> onnx.ModelProto:
    """Every float weight in bfloat16, the graph computing in bfloat16; float32 ends (a Cast
    after each input, before each output) when `keep_io`, else bfloat16 ends."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init).astype(ml_dtypes.bfloat16)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
    for node in graph.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.BFLOAT16
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(
                    ml_dtypes.bfloat16), a.t.name))
    del graph.value_info[:]
    if not keep_io:
        for value in [*graph.input, *graph.output]:
            value.type.tensor_type.elem_type = TensorProto.BFLOAT16
        return model
    first, last = [], []
    for value in graph.input:
        inner = f"{value.name}/bf16"
        for node in graph.node:
            node.input[:] = [inner if i == value.name else i for i in node.input]
        first.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.BFLOAT16))
    for value in graph.output:
        inner = f"{value.name}/bf16"
        for node in graph.node:
            node.output[:] = [inner if o == value.name else o for o in node.output]
        last.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
    nodes = [*first, *graph.node, *last]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _rounded(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.bfloat16().float())
    return module.eval()


CASES = {"cnn": (SmallNet, (3, 3, 8, 8)), "transformer": (TinyTransformer, (3, 6, 16))}


@pytest.mark.parametrize("keep_io", [True, False], ids=["f32-ends", "bf16-ends"])
@pytest.mark.parametrize("case", list(CASES))
def test_bfloat16_model_against_float64(case, keep_io, tmp_path):
    make, shape = CASES[case]
    module = _rounded(make())
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    x_bf = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    model = to_bfloat16(export(module, x, dynamic_batch=True), keep_io)
    assert uses_bfloat16(model)
    with pytest.raises(ModelError):  # what ONNX Runtime's CPU provider says of it as it is
        make_session(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    target = [0, 3, 4]
    seed = np.zeros((len(x), 5), np.float32)
    seed[np.arange(len(x)), target] = 1
    _, expected = torch_gradient(module, x_bf, seed)
    explainer = Explainer(path, cache=False)
    predicted = explainer.attribute(x_bf, method="gradient", target=None)
    assert np.all(np.isfinite(predicted.maps)) and np.any(predicted.maps)
    error = relative_error(explainer.attribute(x_bf, target=target).maps, expected)
    print(f"bfloat16 {case} ({'float32' if keep_io else 'bfloat16'} ends): relative L2 to "
          f"float64 {error:.3g}")
    # float32 arithmetic on the bfloat16 weights: float32's own error, and (transformer) the
    # attention scale 1/sqrt(d), a bfloat16 constant in the graph, exact in torch
    assert error <= 5e-5


def test_float_models_are_left_alone():
    x = np.zeros((1, 3, 8, 8), np.float32)
    model = export(SmallNet(), x)
    assert not uses_bfloat16(model)
    assert bfloat16_as_float32(model) is model
