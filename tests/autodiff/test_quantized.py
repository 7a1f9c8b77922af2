"""Quantized models: QDQ and QOperator from onnxruntime.quantization.quantize_static, and
quantize_dynamic, built here from small torch models. They differentiate by straight-through
estimation at their own quantized forward pass (intake/quantized.py). Oracles:
- whole models: the straight-through float64 reference (tests/autodiff/quantized_reference.py,
  the same quantized graph run in torch float64 with fake quantization), cosine >= 0.95;
- single ops: float64 central differences of the dequantized function with every quantization
  step linearised (identity where in range, constant where saturated).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from PIL import Image

from onnxpath import Explainer
from onnxpath.engine.gradient import GradientEngine, one_hot
from onnxpath.intake.model import normalise
from onnxpath.intake.qdq import qdq_as_qoperator
from onnxpath.intake.quantized import quantized_as_float
from tests.autodiff.quantized_reference import (
    central_differences,
    deployed_integers,
    run,
    straight_through_function,
)
from tests.oracle import cosine, export, relative_error

COSINE_FLOOR = 0.95
SIZE = (3, 16, 16)
F = torch.nn.functional
logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" notes


class ReluCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        y = F.adaptive_avg_pool2d(torch.relu(self.conv2(y)), 1)
        return self.fc(y.flatten(1))


class Zoo(torch.nn.Module):
    """Every op the QOperator quantizer writes a QLinear op for: Conv, LeakyRelu, Sigmoid,
    Concat, Add, Mul, GlobalAveragePool, MatMul and Gemm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.left = torch.nn.Conv2d(8, 4, 3, padding=1)
        self.right = torch.nn.Conv2d(8, 4, 1)
        self.project = torch.nn.Parameter(torch.randn(8, 6) * 0.4)
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x):
        stem = torch.relu(self.stem(x))
        both = torch.cat([F.leaky_relu(self.left(stem), 0.1), torch.sigmoid(self.right(stem))],
                         1)
        mixed = (both + stem) * both
        pooled = F.adaptive_avg_pool2d(mixed, 1).flatten(1)
        return self.fc(torch.matmul(pooled, self.project))


class Samples(CalibrationDataReader):
    def __init__(self, count: int = 8):
        self.samples = iter([{"x": _input(seed=10 + i)} for i in range(count)])

    def get_next(self):
        return next(self.samples, None)


def _input(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *SIZE)).astype(np.float32)


VARIANTS = {
    "qdq": dict(quant_format=QuantFormat.QDQ),
    "qdq-int8-per-channel": dict(quant_format=QuantFormat.QDQ, per_channel=True,
                                 activation_type=QuantType.QInt8),
    "qdq-uint16": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt16),
    "qdq-contrib-uint16": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt16,
                               extra_options={"UseQDQContribOps": True}),
    "qoperator": dict(quant_format=QuantFormat.QOperator),
    "qoperator-per-channel": dict(quant_format=QuantFormat.QOperator, per_channel=True),
}
CASES = [("cnn", v) for v in [*VARIANTS, "dynamic"]] + [("zoo", v) for v in
                                                         ("qdq", "qoperator", "dynamic")]
# 16-bit activations (opset 21 QDQ, or com.microsoft's QuantizeLinear/DequantizeLinear): ONNX
# Runtime runs them as float ops, and so does onnxpath.


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized")
    paths = {}
    for name, module in (("cnn", ReluCNN()), ("zoo", Zoo())):
        source = folder / f"{name}.onnx"
        onnx.save(export(module, _input(), dynamic_batch=True), source)
        paths[(name, "float")] = source
        for variant in {v for n, v in CASES if n == name}:
            target = folder / f"{name}-{variant}.onnx"
            if variant == "dynamic":
                quantize_dynamic(source, target)
            else:
                quantize_static(source, target, Samples(), **VARIANTS[variant])
            paths[(name, variant)] = target
    return paths


def _engine_gradient(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray):
    info = normalise(model, x.shape)
    logits, grads, _ = GradientEngine(info).gradients(x, seed)
    return info, logits, grads[info.input_name]


@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_gradient_matches_the_straight_through_reference(models, name, variant):
    model = onnx.load(models[(name, variant)])
    ops = {n.op_type for n in model.graph.node}
    x = _input(batch=2, seed=3)
    seed = one_hot([0, 3], 5)
    info, logits, grad = _engine_gradient(model, x, seed)
    deployed = ort.InferenceSession(str(models[(name, variant)])).run(None, {"x": x})[0]
    forward_gap = float(np.abs(logits - deployed).max())
    # The reference at the quantized forward pass: the integers ONNX Runtime computed.
    output, leaf = run(model, x, deployed_integers(models[(name, variant)], x))
    (output * torch.from_numpy(seed.astype(np.float64))).sum().backward()
    reference = leaf.grad.numpy()
    similarity = cosine(grad, reference)
    error = relative_error(grad, reference)
    print(f"{name}-{variant}: cosine {similarity:.7f}, max relative error {error:.3g}, "
          f"forward gap to the deployed model {forward_gap:.3g}; ops {sorted(ops)}")
    assert forward_gap <= 1e-5, "the rewritten forward pass is not the deployed model's"
    assert np.any(grad != 0) and np.all(np.isfinite(grad))
    assert similarity >= COSINE_FLOOR  # the acceptance line
    assert similarity >= 0.9999 and error <= 1e-4  # both deterministic: float32 precision


@pytest.mark.parametrize("variant", ["qdq", "qdq-int8-per-channel", "qoperator"])
def test_the_quantizer_clamp_is_the_relu(models, variant):
    """The quantizer removed (QDQ) or fused (QOperator) both ReLUs; each comes back as a Relu
    in front of the quantizer whose zero point is the bottom of its range, and guided
    backprop, which hooks ReLUs, then differs from the plain gradient."""
    model = onnx.load(models[("cnn", variant)])
    assert "Relu" not in {n.op_type for n in model.graph.node}
    info = normalise(model, (1, *SIZE))
    assert sum(n.op_type == "Relu" for n in info.proto.graph.node) == 2
    explainer = Explainer(models[("cnn", variant)], cache=False)
    x = _input(seed=5)
    plain = explainer.attribute(x, method="gradient", target=[1]).maps
    guided = explainer.attribute(x, method="guided_backprop", target=[1]).maps
    assert np.any(guided != 0) and not np.allclose(plain, guided)


def test_qdq_groups_become_the_ops_onnx_runtime_runs(models):
    """DequantizeLinear → Conv/Gemm → QuantizeLinear runs in ONNX Runtime as one QLinearConv /
    QGemm, integers accumulated exactly: the rewrite must round where it does."""
    model = qdq_as_qoperator(onnx.load(models[("cnn", "qdq")]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QLinearConv") == 2 and ops.count("QGemm") == 1
    assert "Conv" not in ops and "Gemm" not in ops


def test_an_unknown_quantized_op_is_said_not_silent():
    nodes = [*QUANTIZE_X, Q("QLinearUnknown", ["xq", "xs", "xz"], ["yq"], **MS),
             *DEQUANTIZE_Y]
    model = _op_model(nodes, {**X_PARAMS, **Y_PARAMS}, (1, 4))
    with pytest.warns(UserWarning, match="QLinearUnknown has no float rewrite"):
        quantized_as_float(model)


def test_pathway_on_a_quantized_relu_cnn(models):
    x = _input(batch=2, seed=4)
    results = {v: Explainer(models[("cnn", v)], cache=False).attribute(
        x, method="pathway", target=[0, 3]) for v in ("float", "qdq", "qoperator")}
    for variant in ("qdq", "qoperator"):
        result = results[variant]
        assert np.any(result.maps != 0) and np.all(np.isfinite(result.maps))
        assert not any(e.get("all_zero") for e in result.extras)
        assert [e["layers"] for e in result.extras] == \
            [e["layers"] for e in results["float"].extras]
        similarity = cosine(result.maps, results["float"].maps)
        print(f"pathway {variant}: cosine to the float model's pathway map {similarity:.4f}")
        assert similarity >= 0.5  # the same network, quantized: the same evidence, roughly


def test_cli_gradient_and_pathway(models, tmp_path, capsys):
    from onnxpath.cli import main
    image = tmp_path / "img.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((20, 18, 3)) * 255).astype(np.uint8)).save(image)
    report = []
    for method, variant in (("gradient", "qdq"), ("gradient", "qoperator"),
                            ("gradient", "dynamic"), ("pathway", "qdq")):
        out = tmp_path / f"{method}-{variant}"
        code = main(["attribute", str(models[("cnn", variant)]), str(image), "-m", method,
                     "--out", str(out)])
        captured = capsys.readouterr()
        line = json.loads(captured.out.splitlines()[0])
        assert code == 0 and line["error"] is None, captured.err
        assert "zero" not in captured.err.lower(), captured.err
        raw = np.load(line["outputs"]["npy"])
        report.append(f"CLI -m {method} on {variant}: |map| max {np.abs(raw).max():.3g}")
        assert np.any(raw != 0)
    print("\n".join(report))


# --- one op at a time ------------------------------------------------------------------------

def _init(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _op_model(nodes: list, initializers: dict, shape: tuple, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init(k, v) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


U8, I8, I32 = np.uint8, np.int8, np.int32
Q = helper.make_node
RNG = np.random.default_rng(7)
W_CONV = RNG.integers(-90, 90, (4, 3, 3, 3)).astype(I8)
W_MAT = RNG.integers(-90, 90, (6, 4)).astype(I8)
QUANTIZE_X = [Q("QuantizeLinear", ["x", "xs", "xz"], ["xq"])]
X_PARAMS = {"xs": np.float32(0.04), "xz": U8(120)}
DEQUANTIZE_Y = [Q("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
Y_PARAMS = {"ys": np.float32(0.05), "yz": U8(110)}
MS = {"domain": "com.microsoft"}

OP_CASES = {
    "QuantizeLinear+DequantizeLinear": (
        [Q("QuantizeLinear", ["x", "xs", "xz"], ["q"]), Q("DequantizeLinear", ["q", "xs", "xz"],
                                                          ["y"])],
        X_PARAMS, (2, 3, 4, 4)),
    "QuantizeLinear+DequantizeLinear int8 per-axis": (
        [Q("QuantizeLinear", ["x", "cs", "cz"], ["q"], axis=1),
         Q("DequantizeLinear", ["q", "cs", "cz"], ["y"], axis=1)],
        {"cs": np.float32([0.02, 0.03, 0.01]), "cz": I8([-20, 0, 30])}, (2, 3, 4, 4)),
    "QLinearConv": (
        [*QUANTIZE_X, Q("QLinearConv", ["xq", "xs", "xz", "w", "wcs", "wcz", "ys", "yz", "b"],
                        ["yq"], pads=[1, 1, 1, 1], strides=[1, 2]), *DEQUANTIZE_Y],
        {**X_PARAMS, "w": W_CONV, "wcs": np.float32([0.004, 0.006, 0.005, 0.003]),
         "wcz": I8([0, 0, 0, 0]), "b": I32([300, -200, 0, 100]), **Y_PARAMS}, (1, 3, 5, 5)),
    "QLinearMatMul": (
        [*QUANTIZE_X, Q("QLinearMatMul", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                        ["yq"]), *DEQUANTIZE_Y],
        {**X_PARAMS, "w": W_MAT, "ws": np.float32(0.01), "wz": I8(3), **Y_PARAMS}, (3, 6)),
    "QGemm": (
        [*QUANTIZE_X, Q("QGemm", ["xq", "xs", "xz", "w", "ws", "wz", "b", "ys", "yz"], ["yq"],
                        transB=1, alpha=0.5, **MS), *DEQUANTIZE_Y],
        {**X_PARAMS, "w": W_MAT.T.copy(), "ws": np.float32([0.01, 0.02, 0.01, 0.015]),
         "wz": I8([0, 0, 0, 0]), "b": I32([40, -30, 0, 10]), **Y_PARAMS}, (3, 6)),
    "QGemm float output": (
        [*QUANTIZE_X, Q("QGemm", ["xq", "xs", "xz", "w", "ws", "wz"], ["y"], **MS)],
        {**X_PARAMS, "w": W_MAT, "ws": np.float32(0.01), "wz": I8(0)}, (3, 6)),
    "QLinearAdd": (
        [*QUANTIZE_X, Q("QuantizeLinear", ["x", "s2", "z2"], ["x2"]),
         Q("QLinearAdd", ["xq", "xs", "xz", "x2", "s2", "z2", "ys", "yz"], ["yq"], **MS),
         *DEQUANTIZE_Y],
        {**X_PARAMS, "s2": np.float32(0.02), "z2": U8(128), **Y_PARAMS}, (2, 3, 4, 4)),
    "QLinearMul": (
        [*QUANTIZE_X, Q("QuantizeLinear", ["x", "s2", "z2"], ["x2"]),
         Q("QLinearMul", ["xq", "xs", "xz", "x2", "s2", "z2", "ys", "yz"], ["yq"], **MS),
         *DEQUANTIZE_Y],
        {**X_PARAMS, "s2": np.float32(0.02), "z2": U8(128), "ys": np.float32(0.02),
         "yz": U8(100)}, (2, 3, 4, 4)),
    "QLinearGlobalAveragePool": (
        [*QUANTIZE_X, Q("QLinearGlobalAveragePool", ["xq", "xs", "xz", "ys", "yz"], ["yq"],
                        **MS), *DEQUANTIZE_Y],
        {**X_PARAMS, "ys": np.float32(0.01), "yz": U8(128)}, (2, 3, 4, 4)),
    "QLinearSigmoid": (
        [*QUANTIZE_X, Q("QLinearSigmoid", ["xq", "xs", "xz", "ys", "yz"], ["yq"], **MS),
         *DEQUANTIZE_Y],
        {**X_PARAMS, "ys": np.float32(1 / 256), "yz": U8(0)}, (2, 3, 4, 4)),
    "QLinearLeakyRelu": (
        [*QUANTIZE_X, Q("QLinearLeakyRelu", ["xq", "xs", "xz", "ys", "yz"], ["yq"], alpha=0.2,
                        **MS), *DEQUANTIZE_Y],
        {**X_PARAMS, "ys": np.float32(0.03), "yz": U8(60)}, (2, 3, 4, 4)),
    "QLinearConcat": (
        [*QUANTIZE_X, Q("QuantizeLinear", ["x", "s2", "z2"], ["x2"]),
         Q("QLinearConcat", ["ys", "yz", "xq", "xs", "xz", "x2", "s2", "z2"], ["yq"], axis=1,
           **MS), *DEQUANTIZE_Y],
        {**X_PARAMS, "s2": np.float32(0.02), "z2": U8(128), **Y_PARAMS}, (2, 3, 4, 4)),
    "DynamicQuantizeLinear": (
        [Q("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
         Q("DequantizeLinear", ["q", "s", "z"], ["y"])], {}, (2, 3, 4, 4)),
    "MatMulInteger": (
        [Q("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
         Q("MatMulInteger", ["q", "w", "z", "wz"], ["acc"]),
         Q("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
         Q("Mul", ["s", "ws"], ["scale"]), Q("Mul", ["accf", "scale"], ["y"])],
        {"w": W_MAT, "ws": np.float32(0.01), "wz": I8(2)}, (3, 6)),
    "ConvInteger": (
        [Q("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
         Q("ConvInteger", ["q", "w", "z"], ["acc"], pads=[1, 1, 1, 1]),
         Q("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
         Q("Mul", ["s", "ws"], ["scale"]), Q("Mul", ["accf", "scale"], ["y"])],
        {"w": W_CONV, "ws": np.float32(0.005)}, (1, 3, 5, 5)),
}


@pytest.mark.parametrize("case", list(OP_CASES))
def test_single_op_against_central_differences(case):
    nodes, params, shape = OP_CASES[case]
    model = _op_model(nodes, params, shape)
    # Wide enough that some values saturate, where the straight-through gradient is 0.
    x = (np.random.default_rng(11).standard_normal(shape) * 3.0).astype(np.float32)
    function = straight_through_function(model, x)
    y = function(x)
    seed = np.random.default_rng(12).standard_normal(y.shape)
    expected = central_differences(function, x, seed)
    info = normalise(model, x.shape)
    logits, grads, _ = GradientEngine(info).gradients(x, seed.astype(np.float32))
    grad = grads[info.input_name]
    error = relative_error(grad, expected)
    forward = relative_error(logits, y)
    saturated = float(np.mean(expected == 0))
    print(f"{case}: max relative error {error:.3g} (forward {forward:.3g}; "
          f"{saturated:.0%} of the gradient is 0)")
    assert forward <= 1e-5
    assert np.any(expected != 0)
    assert error <= 1e-4, f"{case}: gradient max relative error {error:.3g}"
