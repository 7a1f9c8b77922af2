"""Section 6: the cross-entropy gradient of the gates, and gates that keep the class."""

from __future__ import annotations

import numpy as np
import torch

from onnxpath.methods.pathway import critical_pathway
from onnxpath.pathways.learned_gates import cross_entropy_engine, learned_gates
from onnxpath.pathways.network import masked_network, probabilities

from .conftest import image
from .reference import ReluMasks


def test_cross_entropy_gradient_matches_torch(vgg):
    x = image(21)
    net = masked_network(vgg.engine(x))
    rng = np.random.default_rng(0)
    gates = [rng.random((1, *layer.shape)).astype(np.float32) for layer in net.layers]
    target = probabilities(net.logits(x, net.ones(1))).astype(np.float32)
    engine = cross_entropy_engine(net)
    _, grads, _ = engine.gradients(x, target, wrt=net.mask_names, feeds=net.feeds(gates))

    hooks = ReluMasks(vgg.torch)
    masks = [torch.tensor(g, dtype=torch.float64, requires_grad=True) for g in gates]
    logits = hooks.run(torch.tensor(x, dtype=torch.float64), masks)
    loss = -(torch.tensor(target, dtype=torch.float64) * logits.log_softmax(1)).sum()
    expected = torch.autograd.grad(loss, masks)
    for name, e in zip(net.mask_names, expected, strict=True):
        np.testing.assert_allclose(grads[name], e.numpy(), atol=1e-5 * e.abs().max().item())


def test_learned_selection_keeps_the_class(resnet):
    x = image(22)
    engine = resnet.engine(x)
    original = engine.logits(x)
    c = int(original.argmax())
    net = masked_network(engine)
    gates = learned_gates(net, x, original, iterations=300)
    assert all(((g >= 0) & (g <= 100)).all() for g in gates)
    assert int(net.logits(x, gates).argmax()) == c
    assert sum(float(g.sum()) for g in gates) < 0.8 * net.neurons  # L1 pulled them down

    found = critical_pathway(engine, x, [c], selection="learned",  # the default 1000 steps
                             prune_percent=70)
    # gates that only the L1 term moved decay in lockstep: their ties at t are pruned
    assert 0.2 < found.kept_fraction() <= 0.3
    assert int(net.logits(x, found.masks).argmax()) == c


def test_uniform_gate_init_returns_class_keeping_gates(vgg):
    x = image(23)
    engine = vgg.engine(x)
    original = engine.logits(x)
    net = masked_network(engine)
    gates = learned_gates(net, x, original, iterations=100, init="uniform")
    assert int(net.logits(x, gates).argmax()) == int(original.argmax())
