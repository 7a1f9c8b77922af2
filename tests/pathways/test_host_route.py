"""The pathway method's host route (tap run, selection into prune marks, gated gradient)
against the general one (`critical_pathway`'s keep masks, then `pathway_gradient`)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxpath.methods.pathway import critical_pathway, pathway_gradient
from onnxpath.pathways import host_route
from onnxpath.pathways.network import masked_network

from .conftest import image


@pytest.mark.parametrize("targets", [None, [2, 0]])
def test_host_route_gives_the_general_routes_maps(case, targets, monkeypatch):
    """Maps, kept neurons and masked logits equal the general route's exactly, for Relu
    layers (gates) and the others (masks) alike, with and without targets; a second batch
    through the same reused buffers gives its own maps."""
    taken = []
    run = host_route.run_on_host
    monkeypatch.setattr(host_route, "run_on_host",
                        lambda *args: taken.append(1) or run(*args))
    for seed in (20, 21):
        x = image(seed, n=2)
        engine = case.engine(x)
        result = case.explainer.attribute(x, method="pathway", target=targets,
                                          prune_percent=80)
        found = critical_pathway(engine, x, targets, prune_percent=80)
        maps, _ = pathway_gradient(found, x)
        np.testing.assert_array_equal(result.maps, maps)
        for i in range(2):
            assert result.extras[i]["kept_percent"] == pytest.approx(
                100 * found.kept_fraction(i), abs=1e-9)
        net = masked_network(engine)
        _, logits, masked_logits, kept = host_route.run_on_host(net, x, targets, 80.0)
        np.testing.assert_array_equal(logits, found.logits)
        np.testing.assert_array_equal(masked_logits, pathway_gradient(found, x)[1])
        assert kept.tolist() == [sum(int(m[i].sum()) for m in found.masks) for i in range(2)]
    assert len(taken) == 4  # 2 here, 2 by the method: it took the host route


def test_general_route_where_the_host_route_does_not_fit():
    assert host_route.fits("contribution", 85.0, False)
    assert not host_route.fits("integrated", 85.0, False)
    assert not host_route.fits("contribution", 85.0, True)
    assert not host_route.fits("contribution", "auto:15", False)
