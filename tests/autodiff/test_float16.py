"""Float16 models with float32 inputs and outputs (onnxconverter-common's keep_io_types=True):
float32 input -> Cast(FLOAT16) -> float16 layers -> Cast(FLOAT) -> float32 output. Every
constant a rule emits must take the float type of the tensors it meets, not the output's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxpath import Explainer
from onnxpath.autodiff import SEED, grad_name, gradient_graph
from onnxpath.cli import main
from onnxpath.ort.sessions import make_session
from tests.oracle import export, reference_gradient, torch_gradient

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
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16  # a shape computed in float (attention's scale)
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


@pytest.mark.parametrize("widen", [False, True], ids=["model", "float32"])
@pytest.mark.parametrize("op_type, extra, attrs, reference", RULE_CASES[:4] + RULE_CASES[8:10],
                         ids=[c[0] for c in RULE_CASES[:4] + RULE_CASES[8:10]])
def test_rule_both_precisions(op_type, extra, attrs, reference, widen):
    """The same rules with the gradient computed in float32 (`widen`, the default) or in the
    model's float16: both within float16's tolerance of torch float64."""
    x = _x() * (np.float32(0.25) if op_type == "Softmax" else np.float32(1))
    graph = gradient_graph(cast_wrapped(op_type, {"x": x, **extra}, attrs), "y", ["x"],
                           widen=widen)
    x16 = x.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(5)
    _, seed, expected = reference_gradient(
        reference, {"x": x16, **extra}, ["x"],
        lambda shape: rng.standard_normal(shape).astype(np.float32))
    g = make_session(graph).run([grad_name("x")], {"x": x, SEED: seed})[0]
    error = relative_error(g, expected["x"])
    print(f"{op_type} {'float32' if widen else 'model'} gradient: relative L2 {error:.3g}")
    assert error <= F16_TOLERANCE


# --- norm / resize / Gelu / Reduce / Softmax / attention in float16, against float64 ------

def _family_model(name: str) -> tuple[onnx.ModelProto, Callable, dict[str, np.ndarray]]:
    """(float16 graph with float32 ends, the torch reference, its float16-rounded constants)."""
    rng = np.random.default_rng(7)
    half = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    if name == "LayerNormalization":
        scale, bias = half(rng.uniform(0.5, 1.5, 8)), half(rng.uniform(-0.5, 0.5, 8))
        model = cast_wrapped("LayerNormalization", {"x": np.zeros((2, 3, 8), np.float32),
                                                    "s": scale, "bb": bias},
                             {"axis": -1, "epsilon": 1e-5})
        return model, lambda x: F.layer_norm(x, (8,), torch.from_numpy(scale).double(),
                                             torch.from_numpy(bias).double(), 1e-5), {}
    if name == "Resize":
        scales = np.asarray([1, 1, 2, 2], np.float32)
        model = cast_wrapped("Resize", {"x": np.zeros((2, 3, 4, 4), np.float32),
                                        "roi": np.zeros(0, np.float32), "sc": scales},
                             {"mode": "linear"})
        _keep_float32(model, ["roi", "sc"])
        return model, lambda x: F.interpolate(x, scale_factor=2, mode="bilinear",
                                              align_corners=False), {}
    if name == "Gelu":
        model = cast_wrapped("Gelu", {"x": np.zeros((2, 3, 8), np.float32)})
        model.opset_import[0].version = 20
        return model, lambda x: F.gelu(x), {}
    if name in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2", "ReduceLogSumExp"):
        model = cast_wrapped(name, {"x": np.zeros((2, 3, 8), np.float32),
                                    "axes": np.asarray([-1], np.int64)}, {"keepdims": 1})
        model.opset_import[0].version = 18
        return model, {"ReduceMean": lambda x: x.mean(-1, keepdim=True),
                       "ReduceSum": lambda x: x.sum(-1, keepdim=True),
                       "ReduceMax": lambda x: x.amax(-1, keepdim=True),
                       "ReduceL2": lambda x: x.norm(dim=-1, keepdim=True),
                       "ReduceLogSumExp": lambda x: x.logsumexp(-1, keepdim=True)}[name], {}
    if name == "attention":  # softmax(x Wq (x Wk)^T / sqrt(d)) x Wv, one head
        wq, wk, wv = (half(rng.standard_normal((8, 8)) * 0.4) for _ in range(3))
        nodes = [helper.make_node("MatMul", ["x16", "wq"], ["q"]),
                 helper.make_node("MatMul", ["x16", "wk"], ["k"]),
                 helper.make_node("MatMul", ["x16", "wv"], ["v"]),
                 helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
                 helper.make_node("MatMul", ["q", "kt"], ["s"]),
                 helper.make_node("Mul", ["s", "scale"], ["ss"]),
                 helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
                 helper.make_node("MatMul", ["p", "v"], ["y16"])]
        model = cast_wrapped("Identity", {"x": np.zeros((2, 5, 8), np.float32)})
        graph = model.graph
        body = [graph.node[0], *nodes, graph.node[-1]]
        del graph.node[:]
        graph.node.extend(body)
        graph.initializer.extend(numpy_helper.from_array(a.astype(np.float16), n) for a, n in
                                 [(wq, "wq"), (wk, "wk"), (wv, "wv"),
                                  (np.asarray(8 ** -0.5, np.float32), "scale")])

        def attention(x):
            q, k, v = (x @ torch.from_numpy(w).double() for w in (wq, wk, wv))
            scale = float(np.float16(8 ** -0.5))
            return torch.softmax(q @ k.transpose(1, 2) * scale, -1) @ v
        return model, attention, {}
    raise KeyError(name)


def _keep_float32(model: onnx.ModelProto, names: list[str]) -> None:
    """Resize's roi and scales stay float32 in a float16 graph (the converter's block list)."""
    for i, init in enumerate(model.graph.initializer):
        if init.name in names:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float32), init.name))


FAMILIES = ["LayerNormalization", "Resize", "Gelu", "ReduceMean", "ReduceSum", "ReduceMax",
            "ReduceL2", "ReduceLogSumExp", "attention"]


@pytest.mark.parametrize("widen", [False, True], ids=["model", "float32"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_in_float16(family, widen):
    model, reference, _ = _family_model(family)
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    x = np.random.default_rng(11).uniform(-2, 2, shape).astype(np.float32)
    x16 = x.astype(np.float16).astype(np.float32)
    graph = gradient_graph(model, "y", ["x"], widen=widen)
    xt = torch.tensor(x16, dtype=torch.float64, requires_grad=True)
    y = reference(xt)
    seed = np.random.default_rng(12).standard_normal(tuple(y.shape)).astype(np.float32)
    (y * torch.from_numpy(seed).double()).sum().backward()
    out, g = make_session(graph).run(["y", grad_name("x")], {"x": x, SEED: seed})
    forward = relative_error(out, y.detach().numpy())
    error = relative_error(g, xt.grad.numpy())
    print(f"{family} ({'float32' if widen else 'model'} gradient): forward {forward:.3g}, "
          f"gradient relative L2 {error:.3g}")
    assert forward <= F16_TOLERANCE and error <= F16_TOLERANCE


# --- whole models: float16 ends, and the gradient's precision measured against float64 ------

class TinyTransformer(torch.nn.Module):
    """One encoder layer (attention, LayerNorm, Gelu) and a mean-pooled linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation="gelu",
                                                    batch_first=True)
        self.fc = torch.nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.enc(x).mean(1))


def _rounded(module: torch.nn.Module) -> torch.nn.Module:
    """The module with float16-rounded weights: the function its float16 export computes."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module.eval()


def float16_ends(model: onnx.ModelProto, inputs: bool, outputs: bool) -> onnx.ModelProto:
    """The keep_io twin with its float32 ends removed: float16 inputs and/or outputs."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    ends = {v.name for v in graph.input if inputs} | {v.name for v in graph.output if outputs}
    drop = [n for n in graph.node if n.op_type == "Cast" and
            (n.input[0] in ends or n.output[0] in ends)]
    renames = {n.output[0]: n.input[0] for n in drop if n.input[0] in ends}
    renames.update({n.input[0]: n.output[0] for n in drop if n.output[0] in ends})
    kept = [n for n in graph.node if n not in drop]
    for node in kept:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    del graph.node[:]
    graph.node.extend(kept)
    for value in [*graph.input, *graph.output]:
        if value.name in ends:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


WHOLE = {"cnn": (SmallNet, (3, 3, 8, 8)), "transformer": (TinyTransformer, (3, 6, 16))}


@pytest.mark.parametrize("ends", ["f32-in-f32-out", "f16-in-f16-out", "f32-in-f16-out"])
@pytest.mark.parametrize("case", list(WHOLE))
def test_float16_models_against_float64(case, ends, tmp_path):
    """Explainer on the float16 model, the gradient computed in float32 (default) and in the
    model's float16, against torch float64 on the same float16-rounded weights and input."""
    make, shape = WHOLE[case]
    module = _rounded(make())
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    x16 = x.astype(np.float16).astype(np.float32)
    model = to_float16_keep_io(export(module, x, dynamic_batch=True))
    model = float16_ends(model, inputs=ends.startswith("f16"), outputs=ends.endswith("f16-out"))
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    target = [0, 3, 4]
    seed = np.zeros((len(x), 5), np.float32)
    seed[np.arange(len(x)), target] = 1
    _, expected = torch_gradient(module, x16, seed)
    errors = {}
    for precision in ("float32", "model"):
        for t in (target, None):  # None: the predicted class, picked inside the graph
            explainer = Explainer(path, cache=False, precision=precision)
            result = explainer.attribute(x, method="gradient", target=t)
            if t is None:
                continue
            errors[precision] = relative_error(result.maps, expected)
    print(f"{case} {ends}: relative L2 to float64, float32 gradient {errors['float32']:.3g}, "
          f"float16 gradient {errors['model']:.3g}")
    assert errors["float32"] <= F16_TOLERANCE and errors["model"] <= F16_TOLERANCE
    assert errors["float32"] <= errors["model"]


@pytest.mark.parametrize("widen", [False, True], ids=["model", "float32"])
def test_added_constants_take_the_computed_type(widen):
    """Every float constant the gradient graph adds is float16 where the gradient is computed
    in float16, float32 where it is widened: never the type of the graph's ends."""
    x = np.zeros((2, 3, 8, 8), np.float32)
    model = float16_ends(to_float16_keep_io(export(_rounded(SmallNet()), x, dynamic_batch=True)),
                         inputs=True, outputs=True)
    graph = gradient_graph(model, model.graph.output[0].name, [model.graph.input[0].name],
                           widen=widen)
    added = [i for i in graph.graph.initializer if i.name.startswith("onnxpath_grad/") and
             i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)]
    assert added
    wanted = TensorProto.FLOAT if widen else TensorProto.FLOAT16
    assert {i.data_type for i in added} == {wanted}
    make_session(graph)  # ONNX Runtime checks every node's types agree


EFFICIENTNET = Path(__file__).resolve().parents[2] / "models" / "efficientnet_lite0.onnx"


def test_efficientnet_lite0_in_float16(tmp_path):
    """The shipped EfficientNet-Lite0 converted to float16 (float32 ends, as onnxconverter-common
    writes it), against the float32 graph on the same float16-rounded weights (float32's own
    error is ~1e-6 of the map): the float32 gradient (default) and the float16 one."""
    model = onnx.load(EFFICIENTNET)
    f16 = to_float16_keep_io(model)
    reference = onnx.load(EFFICIENTNET)
    for i, init in enumerate(reference.graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            rounded = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            reference.graph.initializer[i].CopyFrom(numpy_helper.from_array(rounded, init.name))
    onnx.save(f16, tmp_path / "f16.onnx")
    onnx.save(reference, tmp_path / "ref.onnx")
    x = np.random.default_rng(0).uniform(-2, 2, (2, 3, 224, 224)).astype(np.float16) \
        .astype(np.float32)
    expected = Explainer(tmp_path / "ref.onnx", cache=False).attribute(x, target=[948, 1]).maps
    errors = {}
    for precision in ("float32", "model"):
        explainer = Explainer(tmp_path / "f16.onnx", cache=False, precision=precision)
        errors[precision] = relative_error(explainer.attribute(x, target=[948, 1]).maps,
                                           expected)
    print(f"EfficientNet-Lite0 float16: relative L2 to the float32 reference, float32 gradient "
          f"{errors['float32']:.3g}, float16 gradient {errors['model']:.3g}")
    assert errors["float32"] <= F16_TOLERANCE and errors["model"] <= F16_TOLERANCE
    assert errors["float32"] <= errors["model"]


def test_precision_flag(tmp_path, capsys):
    f32, f16 = hand_built("GlobalAveragePool")
    onnx.save(f16, tmp_path / "f16.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((3, 6, 6))
            .astype(np.float32))
    maps = {}
    for precision in ("float32", "model"):
        code = main(["attribute", str(tmp_path / "f16.onnx"), str(tmp_path / "x.npy"), "-q",
                     "--no-cache", "--precision", precision, "--out", str(tmp_path / precision)])
        assert code == 0, capsys.readouterr().err
        line = json.loads(capsys.readouterr().out.splitlines()[0])
        maps[precision] = np.load(line["outputs"]["npy"])
    assert relative_error(maps["model"], maps["float32"]) <= F16_TOLERANCE
    assert main(["attribute", str(tmp_path / "f16.onnx"), str(tmp_path / "x.npy"), "-q",
                 "--precision", "half"]) != 0
    assert "unknown precision 'half'" in capsys.readouterr().err
    explainer = Explainer(tmp_path / "f16.onnx", cache=False, precision="model")
    assert Explainer(tmp_path / "f16.onnx", cache=False,
                     **explainer.intake_options()).precision == "model"


def test_check_grad_on_float16_ends(tmp_path, capsys):
    """check-grad feeds each session its declared float type: a float16 input is fed float16."""
    _, f16 = hand_built("GlobalAveragePool")
    model = float16_ends(f16, inputs=True, outputs=True)
    onnx.save(model, tmp_path / "f16.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((3, 6, 6))
            .astype(np.float32))
    code = main(["check-grad", str(tmp_path / "f16.onnx"), "--input", str(tmp_path / "x.npy")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "PASS" in out.out
