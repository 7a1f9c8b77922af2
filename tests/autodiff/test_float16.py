"""Float16 models with float32 inputs and outputs (onnxconverter-common's keep_io_types=True):
float32 input -> Cast(FLOAT16) -> float16 layers -> Cast(FLOAT) -> float32 output. Every
constant a rule emits must take the float type of the tensors it meets, not the output's.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxpath import Explainer
from onnxpath.autodiff import SEED, grad_name, gradient_graph
from onnxpath.ort.sessions import make_session
from tests.oracle import export, reference_gradient

F16_TOLERANCE = 2e-2  # relative L2 error: float16 keeps about 3 significant digits


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| / ||expected||, in float64."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def to_float16_keep_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """A small stand-in for convert_float_to_float16(model, keep_io_types=True): every float
    initializer becomes float16, a Cast to float16 follows each float32 input and a Cast back to
    float32 precedes each output."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init).astype(np.float16)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
    for node in graph.node:
        for a in node.attribute:
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t)
                                                     .astype(np.float16), a.t.name))
    casts_in = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{value.name}/fp16"
        for node in graph.node:
            node.input[:] = [inner if i == value.name else i for i in node.input]
        casts_in.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT16))
    casts_out = []
    for value in graph.output:
        inner = f"{value.name}/fp16"
        for node in graph.node:
            node.output[:] = [inner if o == value.name else o for o in node.output]
        casts_out.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return model


def hand_built(pool: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(float32 model, its keep_io float16 twin): Conv + Relu + pool + Gemm, built by hand."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    bias = (rng.standard_normal(4) * 0.1).astype(np.float32)
    size = 4 * (3 * 3 if pool == "MaxPool" else 1)
    fc = (rng.standard_normal((5, size)) * 0.3).astype(np.float32)
    fc_b = (rng.standard_normal(5) * 0.1).astype(np.float32)
    pool_node = helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]) \
        if pool == "MaxPool" else helper.make_node("GlobalAveragePool", ["r"], ["p"])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), pool_node,
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w, "w"), (bias, "b"), (fc, "fc"), (fc_b, "fc_b")]]
    graph = helper.make_graph(
        nodes, "f32", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits)
    f32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    f32.ir_version = 8
    # The float16 twin written directly, as the converter writes it.
    half = [numpy_helper.from_array(a.astype(np.float16), n) for a, n in
            [(w, "w"), (bias, "b"), (fc, "fc"), (fc_b, "fc_b")]]
    f16_nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
                 *[onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes],
                 helper.make_node("Cast", ["logits16"], ["logits"], to=TensorProto.FLOAT)]
    f16_nodes[1].input[0] = "x16"
    f16_nodes[-2].output[0] = "logits16"
    graph16 = helper.make_graph(f16_nodes, "f16", list(graph.input), list(graph.output), half)
    f16 = helper.make_model(graph16, opset_imports=[helper.make_opsetid("", 17)])
    f16.ir_version = 8
    return f32, f16


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        y = torch.nn.functional.leaky_relu(torch.clamp(y, 0.0, 6.0), 0.1)
        return self.fc(torch.sigmoid(y).flatten(1) - 0.5)


def torch_converted() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    x = np.zeros((1, 3, 8, 8), np.float32)
    f32 = export(SmallNet(), x, dynamic_batch=True)
    return f32, to_float16_keep_io(f32)


MODELS = {"maxpool": lambda: hand_built("MaxPool"),
          "gap": lambda: hand_built("GlobalAveragePool"),
          "torch": torch_converted}
SHAPES = {"maxpool": (2, 3, 6, 6), "gap": (2, 3, 6, 6), "torch": (2, 3, 8, 8)}


@pytest.mark.parametrize("case", list(MODELS))
def test_gradient_graph_loads_and_runs(case):
    f32, f16 = MODELS[case]()
    onnx.checker.check_model(f16)
    x = np.random.default_rng(1).standard_normal(SHAPES[case]).astype(np.float32)
    seed = np.random.default_rng(2).standard_normal((x.shape[0], 5)).astype(np.float32)
    grads = {}
    for name, model in (("f32", f32), ("f16", f16)):
        graph = gradient_graph(model, "logits", ["x"])
        session = make_session(graph)
        _, g = session.run(["logits", grad_name("x")], {"x": x, SEED: seed})
        assert g.dtype == np.float32 and g.shape == x.shape
        grads[name] = g
    assert relative_error(grads["f16"], grads["f32"]) <= F16_TOLERANCE


@pytest.mark.parametrize("case", list(MODELS))
def test_explainer_matches_float32(case, tmp_path):
    f32, f16 = MODELS[case]()
    x = np.random.default_rng(3).standard_normal(SHAPES[case]).astype(np.float32)
    maps = {}
    for name, model in (("f32", f32), ("f16", f16)):
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        explainer = Explainer(path, cache=False)
        target = [0, 3]
        maps[name] = np.asarray(explainer.attribute(x, method="gradient", target=target).maps)
    error = relative_error(maps["f16"], maps["f32"])
    assert error <= F16_TOLERANCE, f"float16 gradient map relative L2 error {error:.3g}"


@pytest.mark.parametrize("case", list(MODELS))
def test_pathway_matches_float32(case, tmp_path):
    """Masks are fed in the activations' float16, scores ranked in float32; the pathway map
    follows the float32 model's (a float16 score tie could flip a neuron: compared loosely)."""
    f32, f16 = MODELS[case]()
    x = np.random.default_rng(3).standard_normal(SHAPES[case]).astype(np.float32)
    results = {}
    for name, model in (("f32", f32), ("f16", f16)):
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        results[name] = Explainer(path, cache=False).attribute(x, method="pathway",
                                                               target=[0, 3])
    assert np.all(np.isfinite(results["f16"].maps)) and np.any(results["f16"].maps)
    assert [e["layers"] for e in results["f16"].extras] == \
        [e["layers"] for e in results["f32"].extras]
    error = relative_error(results["f16"].maps, results["f32"].maps)
    assert error <= 5 * F16_TOLERANCE, f"float16 pathway map relative L2 error {error:.3g}"


# --- one op family at a time: float16 inside, float32 at the ends ---------------------------

def cast_wrapped(op_type: str, inputs: dict[str, np.ndarray], attrs: dict | None = None,
                 extra: list[onnx.NodeProto] = ()) -> onnx.ModelProto:
    """x (float32) -> Cast(float16) -> op(x16, *float16 initializers) -> Cast(float32) -> y."""
    names = list(inputs)
    x = inputs[names[0]]
    node = helper.make_node(op_type, ["x16", *names[1:]], ["y16"], **(attrs or {}))
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16), node, *extra,
             helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(v.astype(np.float16) if v.dtype.kind == "f" else v, n)
             for n, v in list(inputs.items())[1:]]
    graph = helper.make_graph(nodes, "case",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _x(shape=(2, 3, 4, 4), seed=0):
    # Away from the kinks at 0 and 6, where float16 rounding could flip a gate.
    x = np.random.default_rng(seed).uniform(-4, 8, shape)
    x = np.where(np.abs(x) < 0.1, 0.5, x)
    return np.where(np.abs(x - 6) < 0.1, 5.5, x).astype(np.float32)


def _scalar(value):
    return np.asarray(value, np.float32)


F = torch.nn.functional
RULE_CASES = [
    ("Relu", {}, {}, torch.relu),
    ("LeakyRelu", {}, {"alpha": 0.1}, lambda x: F.leaky_relu(x, 0.1)),
    ("Clip", {"lo": _scalar(0.0), "hi": _scalar(6.0)}, {}, lambda x, lo, hi: x.clamp(0, 6)),
    ("Sigmoid", {}, {}, torch.sigmoid),
    ("Tanh", {}, {}, torch.tanh),
    ("Elu", {}, {"alpha": 1.0}, F.elu),
    ("HardSigmoid", {}, {"alpha": 1 / 6, "beta": 0.5}, F.hardsigmoid),
    ("HardSwish", {}, {}, F.hardswish),
    ("Softmax", {}, {"axis": 1}, lambda x: torch.softmax(x, 1)),
    ("MaxPool", {}, {"kernel_shape": [2, 2], "strides": [2, 2]}, lambda x: F.max_pool2d(x, 2)),
    ("AveragePool", {}, {"kernel_shape": [2, 2], "strides": [2, 2]},
     lambda x: F.avg_pool2d(x, 2)),
    ("GlobalAveragePool", {}, {}, lambda x: F.adaptive_avg_pool2d(x, 1)),
    ("GlobalMaxPool", {}, {}, lambda x: F.adaptive_max_pool2d(x, 1)),
]


@pytest.mark.parametrize("op_type, extra, attrs, reference", RULE_CASES,
                         ids=[c[0] for c in RULE_CASES])
def test_rule_in_float16(op_type, extra, attrs, reference):
    x = _x()
    if op_type == "Softmax":  # logits of a moderate spread: no class saturates
        x = x * np.float32(0.25)
    model = cast_wrapped(op_type, {"x": x, **extra}, attrs)
    graph = gradient_graph(model, "y", ["x"])
    session = make_session(graph)
    # The reference sees the float16-rounded input, as the model does after its Cast.
    x16 = x.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(5)
    expected_y, seed, expected = reference_gradient(
        reference, {"x": x16, **extra}, ["x"],
        lambda shape: rng.standard_normal(shape).astype(np.float32))
    y, g = session.run(["y", grad_name("x")], {"x": x, SEED: seed})
    assert g.dtype == np.float32
    assert relative_error(y, expected_y) <= F16_TOLERANCE, "forward differs"
    error = relative_error(g, expected["x"])
    assert error <= F16_TOLERANCE, f"{op_type}: float16 relative error {error:.3g}"
