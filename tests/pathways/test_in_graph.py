"""The pathway in one graph (pathways/in_graph.py) against the host route: the same neurons
kept, the same maps, for given and predicted targets, at Ps that hit the zero rule and the
edges, on a plain ReLU VGG, a residual net and a ReLU6 (Clip-masked) MobileNet."""

import numpy as np
import pytest

from onnxpath.pathways import in_graph
from onnxpath.pathways.network import masked_network
from onnxpath.pathways.selection import percentile_threshold

from .conftest import image


def routed(case, x, monkeypatch, route: str, **options):
    monkeypatch.setenv("ONNXPATH_PATHWAY_IN_GRAPH", route)
    return case.explainer.attribute(x, "pathway", **options)


@pytest.mark.parametrize("prune", [0.0, 40.0, 85.0, 99.5, 100.0])
def test_one_graph_keeps_what_the_host_keeps(case, monkeypatch, prune):
    x = image(5, 3)
    for target in (None, [1, 3, 4]):
        host = routed(case, x, monkeypatch, "0", target=target, prune_percent=prune)
        one = routed(case, x, monkeypatch, "1", target=target, prune_percent=prune)
        kept_host = [e["kept_percent"] for e in host.extras]
        kept_one = [e["kept_percent"] for e in one.extras]
        scale = np.abs(host.maps).max() or 1.0
        error = np.abs(one.maps - host.maps).max() / scale
        print(f"P {prune} target {target}: kept {kept_host} vs {kept_one}; "
              f"max map difference {error:.2g} of the largest value")
        assert kept_one == kept_host
        assert error < 1e-5
        assert [e["output_change"] for e in one.extras] == pytest.approx(
            [e["output_change"] for e in host.extras], rel=1e-4, abs=1e-6)
    engine = case.engine(x)
    recipes = [key for key in engine._sessions if key[0] == "pathway-in-one-graph"]
    assert recipes, "the one-graph route was not taken"


def test_threshold_edge_is_the_hosts_percentile(resnet):
    """s_(lo) from the TopK edge against numpy's percentile on the same scores: keep s > t
    and keep s > s_(lo) pick the same neurons (the module's argument), ties included."""
    rng = np.random.default_rng(0)
    scores = np.abs(rng.standard_normal(1001)).astype(np.float32)
    scores[:400] = 0.0  # ties at zero
    scores[400:450] = scores[450]  # ties above zero
    ordered = np.sort(scores)
    for prune in (0.0, 10.0, 39.9, 40.0, 44.0, 45.0, 60.0, 85.0, 99.9, 100.0):
        k, largest = in_graph.kth_rank(scores.size, prune)
        edge = (np.sort(scores)[::-1][:k].min() if largest else ordered[:k].max())
        t = percentile_threshold(scores, prune)
        assert np.array_equal(scores > edge, scores > t), prune


def test_fixed_batch_and_other_selections_stay_on_the_host(resnet, resnet_fixed_batch):
    x = image(2, 2)
    net = masked_network(resnet.engine(x))
    assert in_graph.fits(net, x, "contribution", 85.0, False)
    assert not in_graph.fits(net, x, "integrated", 85.0, False)
    assert not in_graph.fits(net, x, "contribution", "auto:15", False)
    assert not in_graph.fits(net, x, "contribution", 85.0, True)
    fixed = masked_network(resnet_fixed_batch.engine(image(2, 1)))
    assert not in_graph.fits(fixed, image(2, 3), "contribution", 85.0, False)


def test_a_float16_model_keeps_all_but_the_neurons_at_the_threshold(monkeypatch):
    """A float16 model on the CPU: ONNX Runtime computes the contribution product in float32
    and, inside the one graph, hands it on without the float16 rounding a graph output gets,
    so a score can differ from the host route's in its last float16 bit and a neuron tied at
    the threshold can flip. Everything else is kept alike."""
    from pathlib import Path

    from onnxpath import Explainer

    model = Path(__file__).parents[1] / "exporters" / "corpus" / "float16_io_float16.onnx"
    explainer = Explainer(model, cache=False)
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    for prune in (50.0, 85.0):
        monkeypatch.setenv("ONNXPATH_PATHWAY_IN_GRAPH", "0")
        host = explainer.attribute(x, "pathway", prune_percent=prune)
        monkeypatch.setenv("ONNXPATH_PATHWAY_IN_GRAPH", "1")
        one = explainer.attribute(x, "pathway", prune_percent=prune)
        neurons = host.extras[0]["neurons"]
        flipped = [abs(a["kept_percent"] - b["kept_percent"]) / 100 * neurons
                   for a, b in zip(host.extras, one.extras, strict=True)]
        print(f"float16, P {prune}: neurons flipped per example {flipped} of {neurons}")
        assert max(flipped) <= 2
