"""The pathway gradient against an independent torch float64 implementation (sections 2-5)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpath.methods.pathway import critical_pathway, pathway_gradient
from onnxpath.pathways import contributions, integrated_contributions, masked_network

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


def test_scoring_and_gradient_share_one_session(resnet):
    x = image(12)
    engine = resnet.engine(x)
    resnet.explainer.attribute(x, method="pathway")
    resnet.explainer.attribute(x, method="pathway", prune_percent=50, per_layer=True)
    net = masked_network(engine)
    assert len(net.engine._gradients) == 1


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
