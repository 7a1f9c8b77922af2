"""The tap run writes its scores into the previous call's arrays when no caller holds them
(network.MaskedNetwork.tap_run): the maps stay bitwise the same, and scores a caller kept are
never overwritten."""

import numpy as np

from onnxpath.pathways.network import contributions, masked_network


def test_reused_score_arrays_change_nothing(resnet):
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    explainer = resnet.explainer
    first = explainer.attribute(x, "pathway").maps
    net = masked_network(resnet.engine(x))
    before = [id(a) for a in next(iter(net._scores.values()))]
    second = explainer.attribute(x, "pathway").maps
    after = [id(a) for a in next(iter(net._scores.values()))]
    print(f"arrays reused: {before == after}; largest map difference "
          f"{np.abs(first - second).max():.3g}")
    assert before == after  # the second call wrote into the first call's arrays
    assert np.array_equal(first, second)

    _, held, _ = contributions(net, x, [1, 3])  # a caller keeps its scores
    kept = [a.copy() for a in held]
    third = explainer.attribute(x, "pathway").maps
    assert all(np.array_equal(a, b) for a, b in zip(held, kept, strict=True))
    assert np.array_equal(first, third)
    again = contributions(net, x, [1, 3])[1]
    assert all(np.array_equal(a, b) for a, b in zip(again, kept, strict=True))
    assert all(a is not b for a, b in zip(again, held, strict=True))
