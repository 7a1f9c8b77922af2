"""The pathway gradient against an independent torch float64 implementation (sections 2-5)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from onnxpath.autodiff import SEED
from onnxpath.explainer import Explainer
from onnxpath.methods.pathway import critical_pathway, pathway_gradient
from onnxpath.pathways.network import (
    contributions,
    gate_values,
    integrated_contributions,
    masked_network,
)
from onnxpath.pathways.surgery import BLOCK_CHANNELS, gate_name, gate_relus

from .conftest import image
from .reference import (
    torch_contributions,
    torch_integrated,
    torch_pathway_gradient,
    torch_select,
)


def agreement(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    same = sum(int((a == b).sum()) for a, b in zip(ours, theirs, strict=True))
    return same / sum(a.size for a in theirs)


@pytest.mark.parametrize("prune", [70, 85, 90])
def test_pathway_gradient_matches_torch(case, prune):
    x = image(prune)
    engine = case.engine(x)
    c = int(engine.logits(x).argmax())
    result = case.explainer.attribute(x, method="pathway", target=c, prune_percent=prune)
    found = critical_pathway(engine, x, [c], prune_percent=prune)

    reference = torch_contributions(case.torch, x.astype(np.float64), c)
    assert [r.shape for r in reference] == [layer.shape for layer in found.layers]
    torch_masks = torch_select(reference, prune)
    assert agreement([m[0] for m in found.masks], torch_masks) >= 0.999
    expected = torch_pathway_gradient(case.torch, x.astype(np.float64), c, torch_masks)
    assert result.maps.shape == x.shape
    assert np.corrcoef(result.maps[0].ravel(), expected.ravel())[0, 1] >= 0.999
    assert result.extras[0]["kept_percent"] == pytest.approx(100 - prune, abs=0.1)


def test_default_layers_are_every_relu_family_activation(mobile):
    """MobileNetV2's ReLU6 (Clip) mixed with ReLU, LeakyReLU and PReLU: with no layer option
    every one of them is a pathway layer, and the masks on the Clips score as torch's do."""
    x = image(10)
    net = masked_network(mobile.engine(x))
    assert [layer.op_type for layer in net.layers] == \
        ["Clip", "Clip", "LeakyRelu", "Relu", "PRelu", "Clip"]
    _, signed, _ = contributions(net, x, [1])
    reference = torch_contributions(mobile.torch, x.astype(np.float64), 1)
    for ours, theirs in zip(signed, reference, strict=True):
        np.testing.assert_allclose(ours[0], theirs, atol=1e-5 * np.abs(theirs).max())


def test_contributions_are_signed_a_times_gradient(resnet):
    x = image(11)
    net = masked_network(resnet.engine(x))
    _, signed, _ = contributions(net, x, [3])
    reference = torch_contributions(resnet.torch, x.astype(np.float64), 3)
    for ours, theirs in zip(signed, reference, strict=True):
        np.testing.assert_allclose(ours[0], theirs, atol=1e-5 * np.abs(theirs).max())
    assert min(s.min() for s in signed) < 0 < max(s.max() for s in signed)


def test_two_sessions_serve_every_pathway_call_and_no_forward_pass_runs(resnet):
    x = image(12)
    explainer = Explainer(resnet.proto, cache=False)  # fresh: no session built before
    engine = explainer.engine(x.shape)
    explainer.attribute(x, method="pathway")
    explainer.attribute(x, method="pathway", target=1, prune_percent=50, per_layer=True)
    explainer.attribute(x, method="pathway", target=2)
    net = masked_network(engine)
    assert len(net.gated()._gradients) == 1  # the masked input gradient, Relu masks as gates
    assert not net.engine._gradients
    assert len(engine._sessions) == 2  # the tap graph, with a given seed and with argmax
    assert engine._forward is None and net.engine._forward is None


def test_relu_gates_give_the_mask_multiply_s_values(case):
    """The gated graph (Relu(z + g), g in {0, -inf}) against the masked graph (Relu(z) * m)."""
    x = image(17, n=2)
    net = masked_network(case.engine(x))
    rng = np.random.default_rng(0)
    masks = [rng.random((2, *layer.shape)) < 0.6 for layer in net.layers]
    seed = net.engine.seed([1, 3])
    gated, gated_logits = net.input_gradient(x, seed, masks)
    mul, mul_logits = net.input_gradient(x, seed, [m.astype(np.float32) for m in masks])
    assert any(not m.all() for m in masks) and np.abs(mul).max() > 0
    np.testing.assert_allclose(gated_logits, mul_logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gated, mul, rtol=1e-5, atol=1e-6 * np.abs(mul).max())


def test_blocked_gates_give_the_plain_gates_maps(case, request):
    """The CPU's gates, copied into the blocked layout by a unit depthwise convolution where a
    convolution's channels fill whole blocks (and moved onto the shortcut of a residual sum),
    against plain gates: the same logits and maps, up to the rounding of ONNX Runtime's fused
    sums."""
    x = image(23, n=2)
    net = masked_network(case.engine(x))
    rng = np.random.default_rng(1)
    masks = [rng.random((2, *layer.shape)) < 0.6 for layer in net.layers]
    seed = net.engine.seed([2, 4])
    results, copies = [], []
    for blocked in (False, True):
        proto = gate_relus(net.engine.info.proto, net.layers, blocked)
        copies.append(sum(n.output[0].endswith("/onnxpath_blocked") for n in proto.graph.node))
        adds = {i for n in proto.graph.node if n.op_type == "Add" for i in n.input}
        regrouped = sum(n.name.startswith("onnxpath_gate_node/") and n.output[0] in adds
                        for n in proto.graph.node)
        engine = net.engine.rewritten(replace(net.engine.info, proto=proto))
        feeds = {gate_name(layer.tensor) if layer.op_type == "Relu" else layer.mask:
                 gate_values(m) if layer.op_type == "Relu" else m.astype(np.float32)
                 for layer, m in zip(net.layers, masks, strict=True)}
        logits, grads, _ = engine.gradients(x, seed, wrt=[net.input_name], feeds=feeds)
        results.append((logits, grads[net.input_name]))
    residual = request.node.callspec.params["case"] == "resnet"  # (the one with residual sums)
    assert regrouped > 0 if residual else regrouped == 0
    relus = [layer for layer in net.layers if layer.op_type == "Relu"]
    full_blocks = [layer for layer in relus if layer.shape[0] % BLOCK_CHANNELS == 0]
    assert copies[0] == 0 and 0 < copies[1] <= len(full_blocks) < len(net.layers)
    scale = np.abs(results[0][1]).max()
    assert scale > 0
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5, atol=1e-6 * scale)


def test_the_scoring_graph_has_no_mask_inputs_and_reports_the_prediction(resnet):
    x = image(16, n=2)
    engine = resnet.engine(x)
    net = masked_network(engine)
    logits, signed, _ = contributions(net, x, None)
    np.testing.assert_allclose(logits, engine.logits(x), rtol=1e-5, atol=1e-5)
    _, given, _ = contributions(net, x, logits.argmax(axis=1))
    for a, b in zip(signed, given, strict=True):
        np.testing.assert_array_equal(a, b)
    for session in engine._sessions.values():  # no mask among the scoring graph's inputs
        assert {i.name for i in session.get_inputs()} <= {engine.input_name, SEED}
    result = resnet.explainer.attribute(x, method="pathway")
    np.testing.assert_array_equal(result.targets, logits.argmax(axis=1))


def test_a_batch_equals_its_examples_one_by_one(vgg):
    x = image(13, n=3)
    batch = vgg.explainer.attribute(x, method="pathway", target=[0, 1, 2])
    for i in range(3):
        one = vgg.explainer.attribute(x[i:i + 1], method="pathway", target=i)
        np.testing.assert_allclose(batch.maps[i], one.maps[0], atol=1e-6)
        assert batch.extras[i] == pytest.approx(one.extras[0])


def test_fixed_batch_models_run_example_by_example(resnet_fixed_batch, resnet):
    x = image(14, n=2)
    fixed = resnet_fixed_batch.explainer.attribute(x, method="pathway", selection="integrated")
    dynamic = resnet.explainer.attribute(x, method="pathway", selection="integrated")
    np.testing.assert_allclose(fixed.maps, dynamic.maps, atol=1e-6)


def test_integrated_variant_matches_torch(vgg):
    x = image(15)
    c = 2
    net = masked_network(vgg.engine(x))
    ours = integrated_contributions(net, x, [c])
    theirs = torch_integrated(vgg.torch, x.astype(np.float64), c)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a[0], b, atol=1e-5 * np.abs(b).max())
    found = critical_pathway(vgg.engine(x), x, [c], selection="integrated")
    assert agreement([m[0] for m in found.masks], torch_select(theirs, 85)) >= 0.999
    maps, _ = pathway_gradient(found, x, [c])
    plain = critical_pathway(vgg.engine(x), x, [c])
    assert not all((a == b).all() for a, b in zip(found.masks, plain.masks, strict=True))
    assert np.isfinite(maps).all()
