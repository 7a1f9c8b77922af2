"""insert_masks / bake_pathway: identity at masks = 1, exact baking, layer choice and warnings."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxpath.errors import ModelError
from onnxpath.methods.pathway import critical_pathway
from onnxpath.pathways.network import masked_network
from onnxpath.pathways.surgery import LocalLinearityWarning, bake_pathway, insert_masks

from .conftest import image


def run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_all_ones_masks_leave_the_logits_unchanged(case):
    x = image(0, n=2)
    engine = case.engine(x)
    net = masked_network(engine)
    original = run(case.proto, {"x": x})
    masked = net.logits(x, net.ones(2))
    family = {"Relu", "Clip", "LeakyRelu", "PRelu"}
    assert len(net.layers) == sum(n.op_type in family for n in case.proto.graph.node)
    np.testing.assert_allclose(masked, original, rtol=0, atol=1e-6)


def test_baked_pathway_reproduces_the_masked_network(case):
    x = image(1)
    engine = case.engine(x)
    found = critical_pathway(engine, x, [2], prune_percent=80)
    net = found.network
    baked = bake_pathway(net.engine.info.proto, net.layers, [m[0] for m in found.masks])
    assert [i.name for i in baked.graph.input] == ["x"]
    onnx.checker.check_model(baked)
    masked = net.logits(x, found.masks)
    np.testing.assert_allclose(run(baked, {"x": x}), masked, rtol=0, atol=1e-4)
    assert np.abs(masked - run(case.proto, {"x": x})).max() > 1e-3  # the pathway matters


def test_masks_have_the_input_batch_dim(vgg, resnet_fixed_batch):
    proto, layers = insert_masks(vgg.explainer.engine((1, 3, 32, 32)).info.proto)
    mask = next(i for i in proto.graph.input if i.name == layers[0].mask)
    assert mask.type.tensor_type.shape.dim[0].dim_param == "N"
    proto, layers = insert_masks(resnet_fixed_batch.engine(image(0)).info.proto)
    mask = next(i for i in proto.graph.input if i.name == layers[0].mask)
    assert mask.type.tensor_type.shape.dim[0].dim_value == 1


def activation_model(op_type: str, **attrs) -> onnx.ModelProto:
    """x -> Conv -> <op> -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node(op_type, ["c"], ["a"], name="act", **attrs),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op_type", ["LeakyRelu", "Relu"])
def test_piecewise_linear_activations_do_not_warn(op_type):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, layers = insert_masks(activation_model(op_type), op_types=(op_type,))
    assert [layer.op_type for layer in layers] == [op_type]


@pytest.mark.parametrize("op_type", ["HardSwish", "Sigmoid"])
def test_opting_in_a_non_piecewise_linear_activation_warns(op_type):
    model = activation_model(op_type)
    with pytest.warns(LocalLinearityWarning, match="not piecewise linear"):
        masked, layers = insert_masks(model, op_types=("Relu", op_type))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ones = {layers[0].mask: np.ones((1, *layers[0].shape), np.float32)}
    np.testing.assert_allclose(run(masked, {"x": x, **ones}), run(model, {"x": x}), atol=1e-6)


def test_name_regex_restricts_the_layers(resnet):
    proto = resnet.engine(image(0)).info.proto
    _, every = insert_masks(proto)
    _, some = insert_masks(proto, name_regex="blocks.1")
    assert 0 < len(some) < len(every)
    assert all("blocks.1" in layer.node or "blocks.1" in layer.tensor for layer in some)
    with pytest.raises(ModelError, match="no Relu/Clip/LeakyRelu/PRelu node matching"):
        insert_masks(proto, name_regex="no-such-layer")


def clip_model(opset: int, lower: float | None, upper: float | None,
               as_constant_node: bool = False) -> onnx.ModelProto:
    """activation_model with a Clip whose bounds are attributes (opset < 11), initializers or
    Constant nodes (opset >= 11)."""
    model = activation_model("Relu")
    graph = model.graph
    act = next(n for n in graph.node if n.name == "act")
    del act.input[1:]
    act.op_type = "Clip"
    gemm = next(n for n in graph.node if n.op_type == "Gemm")  # C is required before opset 11
    gemm.input.append("fc_bias")
    graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.float32), "fc_bias"))
    if opset < 11:
        bounds = {"min": lower, "max": upper}
        act.attribute.extend(helper.make_attribute(k, v) for k, v in bounds.items()
                             if v is not None)
    else:
        for name, value in (("lo", lower), ("hi", upper)):
            if value is None:
                act.input.append("")
                continue
            tensor = numpy_helper.from_array(np.asarray(value, np.float32), name)
            if as_constant_node:
                graph.node.insert(0, helper.make_node("Constant", [], [name], value=tensor))
            else:
                graph.initializer.append(tensor)
            act.input.append(name)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", opset))
    return model


CLIPS = [
    # id, opset, lower, upper, constant node, ReLU-like
    ("relu6_attrs_opset10", 10, 0.0, 6.0, False, True),
    ("relu_attr_min_only_opset7", 7, 0.0, None, False, True),
    ("hardtanh_attrs_opset10", 10, -1.0, 1.0, False, False),
    ("no_min_attr_opset10", 10, None, 6.0, False, False),
    ("relu6_initializers_opset13", 13, 0.0, 6.0, False, True),
    ("relu6_constant_nodes_opset17", 17, 0.0, 6.0, True, True),
    ("relu_min_only_opset17", 17, 0.0, None, False, True),
    ("hardtanh_opset17", 17, -1.0, 1.0, True, False),
    ("max_only_opset17", 17, None, 6.0, False, False),
]


@pytest.mark.parametrize("opset,lower,upper,constant,relu_like", [c[1:] for c in CLIPS],
                         ids=[c[0] for c in CLIPS])
def test_clip_is_a_default_layer_when_its_lower_bound_is_zero(opset, lower, upper, constant,
                                                              relu_like):
    model = clip_model(opset, lower, upper, constant)
    onnx.checker.check_model(model)
    if not relu_like:
        with pytest.raises(ModelError, match="lower bound is 0"):
            insert_masks(model)
        return
    masked, layers = insert_masks(model)
    assert [layer.op_type for layer in layers] == ["Clip"]
    x = 3 * np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ones = {layers[0].mask: np.ones((1, *layers[0].shape), np.float32)}
    np.testing.assert_allclose(run(masked, {"x": x, **ones}), run(model, {"x": x}), atol=1e-5)
