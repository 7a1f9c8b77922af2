"""The walker's contracts: unsupported ops fail at build time, weight gradients are never
emitted, unconnected inputs get zeros, and rule overrides replace exactly one op's rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from onnxpath.autodiff import RULES, SEED, grad_name, gradient_graph
from onnxpath.autodiff.walk import value_infos
from onnxpath.engine import gradient as engine_module
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UnsupportedOpError
from onnxpath.intake.model import normalise
from onnxpath.ort.sessions import make_session
from tests.oracle import check_graph, export, graph_gradient, graph_model, randn


def det_model(on_path: bool) -> onnx.ModelProto:
    """y = flatten(x) + det(x or a constant k)[:, None]."""
    nodes = [helper.make_node("Det", ["x" if on_path else "k"], ["d"], name="the_det"),
             helper.make_node("Unsqueeze", ["d", "axis"], ["d1"]),
             helper.make_node("Flatten", ["x"], ["s"]),
             helper.make_node("Add", ["s", "d1"], ["y"])]
    inputs = {"x": randn(2, 3, 3), "k": randn(2, 3, 3, seed=1),
              "axis": np.asarray([1], np.int64)}
    return graph_model(nodes, inputs, constants=["k"])


def test_op_without_rule_fails_at_build_time(monkeypatch):
    def no_session(*args, **kwargs):
        raise AssertionError("a session was created before the unsupported op was reported")

    monkeypatch.setattr(engine_module, "make_session", no_session)
    monkeypatch.delitem(RULES, "Det")  # every ONNX op has a rule: take one away
    info = normalise(det_model(on_path=True), (2, 3, 3))
    with pytest.raises(UnsupportedOpError) as caught:
        GradientEngine(info).gradients(randn(2, 3, 3), np.ones((2, 9), np.float32))
    assert caught.value.ops == [("Det", "the_det")]
    assert "Det" in str(caught.value) and "the_det" in str(caught.value)


def test_custom_domain_op_is_unsupported_even_if_named_like_a_known_op():
    node = helper.make_node("Relu", ["x"], ["y"], domain="com.example", name="fused_relu")
    model = graph_model([node], {"x": randn(2, 3)})
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError, match=r"Relu \(node 'fused_relu'\)"):
        gradient_graph(model, "y", ["x"])


def test_op_without_rule_off_the_path_is_fine():
    """Det of a constant reaches the output but does not depend on x: no rule needed."""
    x = randn(2, 3, 3)
    model = det_model(on_path=False)
    k = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "k"))
    det = torch.det(torch.tensor(k, dtype=torch.float64))[:, None]
    check_graph(model, {"x": x}, lambda t: t.reshape(2, 9) + det, {"x": x})


class SmallCNN(nn.Module):
    """Every weight shape is distinct from every activation shape, so a weight gradient would
    show up as a seed-dependent tensor shaped like a weight."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                                  nn.Conv2d(5, 7, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 4))

    def forward(self, x):
        return self.body(x)


def seed_dependent(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of the gradient graph that (transitively) consume the seed."""
    tainted, nodes = {SEED}, []
    for node in model.graph.node:
        if any(i in tainted for i in node.input):
            tainted.update(node.output)
            nodes.append(node)
    return nodes


def weight_gradient_audit(grad_model: onnx.ModelProto, forward: onnx.ModelProto):
    weight_shapes = {tuple(i.dims) for i in forward.graph.initializer if len(i.dims) >= 2}
    infos = value_infos(grad_model)
    backward = seed_dependent(grad_model)
    shaped_like_weights = [o for n in backward for o in n.output
                           if tuple(infos.get(o, (0, ()))[1] or ()) in weight_shapes]
    linear = [n.op_type for n in backward if n.op_type in ("Conv", "ConvTranspose", "Gemm",
                                                           "MatMul")]
    return shaped_like_weights, linear


def rule_with_weight_gradient(node, dy, b):
    """The Conv rule plus a real dW computation (a weight-gradient implementation would emit
    it): the walker must drop it because nobody asked for the weight's gradient."""
    from onnxpath.autodiff.rules.conv import conv
    dw = b.op("Conv", b.op("Transpose", node.inputs[0], perm=[1, 0, 2, 3]),
              b.op("Transpose", dy[0], perm=[1, 0, 2, 3]), pads=node.attr("pads"),
              dilations=node.attr("strides"))
    grads = conv(node, dy, b) if not b.needs(node.inputs[1]) else None
    return [grads[0], b.op("Transpose", dw, perm=[1, 0, 2, 3]), None]


@pytest.mark.parametrize("override", [False, True], ids=["rules", "rule_emitting_dW"])
def test_no_weight_gradient_work_in_the_gradient_graph(override):
    torch.manual_seed(0)
    x = randn(2, 3, 8, 8)
    forward = export(SmallCNN().eval(), x)
    info = normalise(forward, x.shape)
    grad_model = GradientEngine(info).gradient_model(
        [info.input_name], overrides={"Conv": rule_with_weight_gradient} if override else None)
    shaped_like_weights, linear = weight_gradient_audit(grad_model, forward)
    assert shaped_like_weights == []
    # One input-gradient op per forward Conv/Gemm: a weight gradient would add a second.
    forward_linear = [n.op_type for n in forward.graph.node if n.op_type in ("Conv", "Gemm")]
    assert sorted(linear) == sorted(["Conv", "ConvTranspose", "Gemm"])
    assert len(linear) == len(forward_linear)


def test_weight_gradient_audit_catches_weight_gradients():
    """The audit above is falsifiable: asking for a Gemm weight's gradient trips it."""
    x = randn(2, 7)
    w = randn(7, 4, seed=1)
    model = graph_model([helper.make_node("Gemm", ["x", "w"], ["y"])], {"x": x, "w": w})
    grad_model = gradient_graph(model, "y", ["x", "w"])
    forward = graph_model([helper.make_node("Gemm", ["x", "w"], ["y"])], {"x": x, "w": w},
                          constants=["w"])
    shaped_like_weights, linear = weight_gradient_audit(grad_model, forward)
    assert shaped_like_weights and len(linear) == 2


def test_unconnected_input_gets_zero_gradient():
    x, z = randn(2, 3), randn(2, 3, seed=1)
    model = graph_model([helper.make_node("Relu", ["x"], ["y"]),
                         helper.make_node("Neg", ["z"], ["unused"])], {"x": x, "z": z})
    _, grads = graph_gradient(model, {"x": x, "z": z}, np.ones((2, 3), np.float32))
    assert np.array_equal(grads["z"], np.zeros((2, 3), np.float32))
    assert np.array_equal(grads["x"], (x > 0).astype(np.float32))


def test_override_swaps_one_rule():
    """Guided-backprop style: a Relu override that also zeroes negative upstream gradients."""
    def guided_relu(node, dy, b):
        gate = b.op("And", b.op("Greater", node.inputs[0], b.scalar(0.0)),
                    b.op("Greater", dy[0], b.scalar(0.0)))
        return [b.op("Where", gate, dy[0], b.scalar(0.0))]

    x = randn(2, 5)
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], {"x": x})
    seed = randn(2, 5, seed=2)
    guided = gradient_graph(model, "y", ["x"], overrides={"Relu": guided_relu})
    grad = make_session(guided).run([grad_name("x")], {"x": x, SEED: seed})[0]
    assert np.array_equal(grad, np.where((x > 0) & (seed > 0), seed, 0))


def if_model() -> onnx.ModelProto:
    """y = If(sum(x) > 0, then: x * 2, else: -x): the branches read x from the outer scope."""
    then_graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", 1, None)],
                                   [numpy_helper.from_array(np.asarray(2.0, np.float32), "two")])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", 1, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_graph,
                              else_branch=else_graph)]
    return graph_model(nodes, {"x": randn(2, 3), "zero": np.asarray(0.0, np.float32)},
                       constants=["zero"])


def test_control_flow_reading_the_path_is_refused_not_cut():
    """The If's only declared input is a bool, but its branches read x: dropping it would give
    a silently wrong (zero) gradient."""
    with pytest.raises(UnsupportedOpError, match=r"If \(node 'branch'\)"):
        gradient_graph(if_model(), "y", ["x"])


def test_shape_arithmetic_and_constant_if_fold_away():
    """normalise() folds Shape-derived values (here an If on a static dim, as torch's
    LocalResponseNorm export has) so the graph differentiates."""
    then_graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", 1, None)],
                                   [numpy_helper.from_array(np.asarray(2.0, np.float32), "two")])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", 1, None)])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["width"], axis=0),
             helper.make_node("Div", ["width", "three"], ["third"]),
             helper.make_node("Equal", ["third", "one"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_graph,
                              else_branch=else_graph)]
    inputs = {"x": randn(2, 3), "one": np.asarray(1, np.int64),
              "three": np.asarray(3, np.int64)}
    model = graph_model(nodes, inputs)
    info = normalise(model, (2, 3))
    assert [n.op_type for n in info.proto.graph.node if n.op_type != "Constant"] == \
        ["Mul", "Identity"]
    _, grads, _ = GradientEngine(info).gradients(inputs["x"], np.ones((2, 3), np.float32))
    assert np.array_equal(grads["x"], np.full((2, 3), 2.0, np.float32))


def test_non_float_ops_on_the_path_need_no_rule():
    """Shape, Size, Range, ConstantOfShape, comparisons, Not, And, NonZero and ArgMax read x
    but give ints or bools: the walker routes no gradient through them, and Where's condition
    gets none."""
    x = randn(2, 5)
    f32 = 1  # TensorProto.FLOAT
    one = helper.make_tensor("one", f32, [1], [1.0])
    nodes = [
        helper.make_node("Less", ["x", "low"], ["below"]),
        helper.make_node("Not", ["below"], ["above_low"]),
        helper.make_node("Less", ["x", "high"], ["below_high"]),
        helper.make_node("And", ["above_low", "below_high"], ["cond"]),
        helper.make_node("Where", ["cond", "x", "zero"], ["gated"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=one),
        helper.make_node("Mul", ["gated", "ones"], ["a"]),
        helper.make_node("Size", ["x"], ["size"]),
        helper.make_node("Cast", ["size"], ["size_f"], to=f32),
        helper.make_node("Mul", ["x", "size_f"], ["b"]),
        helper.make_node("Range", ["start", "size", "step"], ["range"]),
        helper.make_node("Cast", ["range"], ["range_f"], to=f32),
        helper.make_node("ReduceSum", ["range_f"], ["range_sum"], keepdims=0),
        helper.make_node("NonZero", ["cond"], ["nz"]),
        helper.make_node("Shape", ["nz"], ["nz_shape"], start=1),
        helper.make_node("Cast", ["nz_shape"], ["count"], to=f32),
        helper.make_node("ArgMax", ["x"], ["arg"], axis=1, keepdims=1),
        helper.make_node("Cast", ["arg"], ["arg_f"], to=f32),
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("Equal", ["positive", "below"], ["same"]),
        helper.make_node("Cast", ["same"], ["same_f"], to=f32),
        helper.make_node("Sum", ["a", "b", "range_sum", "count", "arg_f", "same_f"], ["y"]),
    ]
    scalars = {"low": np.asarray(-0.5, np.float32), "high": np.asarray(1.0, np.float32),
               "zero": np.asarray(0.0, np.float32), "start": np.asarray(0, np.int64),
               "step": np.asarray(1, np.int64)}
    model = graph_model(nodes, {"x": x, **scalars}, constants=list(scalars))

    def reference(t):
        cond = (t >= -0.5) & (t < 1.0)
        fixed = 45.0 + cond.sum() + t.argmax(1, keepdim=True) + ((t > 0) == (t < -0.5))
        return torch.where(cond, t, 0.0) + 10 * t + fixed.double()

    check_graph(model, {"x": x}, reference, {"x": x})
