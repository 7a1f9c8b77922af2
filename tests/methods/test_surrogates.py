"""LIME and KernelSHAP against the `lime` and `shap` packages, given the same samples or
coalitions and the same kernel. Both oracles see the model only through a classifier function
over masks (or images), built on onnxpath's own forward pass: the comparison is of the
sampling, the kernels and the regressions."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_nets import conv_net

from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.methods._common import softmax
from onnxpath.methods._features import fill_values, grid, partition
from onnxpath.methods.kernel_shap import coalitions, constrained_wls
from onnxpath.methods.lime import cosine_distance, lime_masks

lime_image = pytest.importorskip("lime.lime_image")
lime_base = pytest.importorskip("lime.lime_base")
shap = pytest.importorskip("shap")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = conv_net(tmp_path_factory.mktemp("surrogates") / "conv.onnx", size=16)
    explainer = Explainer(path, cache=False)
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    return explainer, x, int(explainer.predict(x).argmax())


def per_feature(maps: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A spread map summed back over each feature: the method's coefficients."""
    full = np.broadcast_to(ids, maps.shape)
    return np.bincount(full.ravel(), maps.ravel().astype(np.float64))


def agree(name: str, ours: np.ndarray, theirs: np.ndarray, tol: float = 1e-6) -> None:
    pearson = np.corrcoef(ours, theirs)[0, 1]
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"\n[oracle] {name:36s} pearson={pearson:.10f} max_rel={error:.2e}")
    assert pearson >= 0.99
    assert error <= tol, f"{name}: max relative error {error}"


def probabilities(explainer, images_hwc: np.ndarray) -> np.ndarray:
    nchw = np.transpose(images_hwc, (0, 3, 1, 2)).astype(np.float32)
    return softmax(explainer.predict(nchw).astype(np.float64))


@pytest.mark.parametrize("hide", [0.0, None])
def test_lime_matches_lime_image(net, hide):
    explainer, x, target = net
    ids = grid(x.shape[1:], 4)
    result = explainer.attribute(x, "lime", target, samples=300, segments="grid:4",
                                 baseline="zero" if hide == 0.0 else "mean")
    reference = lime_image.LimeImageExplainer(kernel_width=0.25, feature_selection="none",
                                              random_state=0)
    explanation = reference.explain_instance(
        np.transpose(x[0], (1, 2, 0)).astype(np.float64),
        lambda images: probabilities(explainer, images), labels=(target,), top_labels=None,
        hide_color=hide, num_features=16, num_samples=300, segmentation_fn=lambda _: ids[0],
        batch_size=50, random_seed=0)
    theirs = np.zeros(16)
    for feature, coef in explanation.local_exp[target]:
        theirs[feature] = coef
    agree(f"lime image hide={hide}", per_feature(result.maps[0], ids), theirs)
    assert result.extras[0]["intercept"] == pytest.approx(explanation.intercept[target],
                                                          rel=1e-6)


def test_lime_table_kernel_matches_lime_base(tmp_path):
    """Every element its own feature: `lime`'s tabular width 0.75·√M, fed the same masks."""
    explainer, path = tabular_model(tmp_path)
    x = np.random.default_rng(3).standard_normal((1, 12)).astype(np.float32)
    target = int(explainer.predict(x).argmax())
    result = explainer.attribute(x, "lime", target, samples=400, segments="each")
    masks = lime_masks(400, 12, 0)
    labels = softmax(explainer.predict(np.where(masks > 0, x, 0).astype(np.float32))
                     .astype(np.float64))
    width = 0.75 * np.sqrt(12)
    base = lime_base.LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / width ** 2)), random_state=0)
    _, explanation, _, _ = base.explain_instance_with_data(
        masks, labels, cosine_distance(masks), target, 12, feature_selection="none")
    theirs = np.zeros(12)
    for feature, coef in explanation:
        theirs[feature] = coef
    agree("lime table", result.maps[0].astype(np.float64), theirs)
    assert result.extras[0]["kernel_width"] == pytest.approx(width)


def tabular_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((12, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 3])], initializer=inits)
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return Explainer(path, cache=False), path


def mask_function(explainer, x, ids, target):
    def f(z):
        rows = np.where(z[:, ids[0]][:, None] > 0.5, x, 0).astype(np.float32)
        return softmax(explainer.predict(rows).astype(np.float64))[:, target]
    return f


def test_kernel_shap_exact_when_enumerated(net):
    """M = 9 and a budget above 2^M − 2: both enumerate every coalition (exact Shapley)."""
    explainer, x, target = net
    ids = grid(x.shape[1:], 3)
    result = explainer.attribute(x, "kernel-shap", target, samples=1000, segments="grid:3")
    reference = shap.KernelExplainer(mask_function(explainer, x, ids, target), np.zeros((1, 9)))
    theirs = reference.shap_values(np.ones((1, 9)), nsamples=1000, l1_reg=False, silent=True)
    ours = per_feature(result.maps[0], ids)
    agree("kernel-shap enumerated", ours, np.asarray(theirs)[0])
    extras = result.extras[0]
    assert ours.sum() == pytest.approx(extras["f_x"] - extras["f_baseline"], abs=1e-6)
    assert extras["samples"] == 2 ** 9 - 2


def test_kernel_shap_on_shaps_coalitions(net):
    """M = 25, 500 sampled coalitions: our constrained solve on shap's own coalitions, kernel
    weights and evaluations gives shap's values."""
    explainer, x, target = net
    ids = grid(x.shape[1:], 5)
    f = mask_function(explainer, x, ids, target)
    reference = shap.KernelExplainer(f, np.zeros((1, 25)))
    np.random.seed(0)
    theirs = np.asarray(reference.shap_values(np.ones((1, 25)), nsamples=500, l1_reg=False,
                                              silent=True))[0]
    f_x, f_base = f(np.ones((1, 25)))[0], f(np.zeros((1, 25)))[0]
    ours = constrained_wls(reference.maskMatrix, reference.kernelWeights, reference.ey[:, 0],
                           f_x, f_base)
    agree("kernel-shap shap's coalitions", ours, theirs)


def test_kernel_shap_sampling_agrees_with_shap(net):
    """Own sampling against shap's, both at 4000 coalitions of M = 16: two estimates of the
    same Shapley values."""
    explainer, x, target = net
    ids = grid(x.shape[1:], 4)
    result = explainer.attribute(x, "kernel-shap", target, samples=4000, segments="grid:4")
    np.random.seed(0)
    reference = shap.KernelExplainer(mask_function(explainer, x, ids, target), np.zeros((1, 16)))
    theirs = np.asarray(reference.shap_values(np.ones((1, 16)), nsamples=4000, l1_reg=False,
                                              silent=True))[0]
    agree("kernel-shap own sampling", per_feature(result.maps[0], ids), theirs, tol=0.1)


def test_coalitions_weights_follow_the_shapley_kernel():
    masks, weights = coalitions(6, 10 ** 6, 0)
    assert len(masks) == 2 ** 6 - 2 and len(np.unique(masks, axis=0)) == len(masks)
    sizes = masks.sum(axis=1).astype(int)
    from math import comb
    kernel = np.array([5 / (comb(6, s) * s * (6 - s)) for s in sizes])
    np.testing.assert_allclose(weights / weights.sum(), kernel / kernel.sum(), rtol=1e-12)


def test_partitions_and_mean_fill():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    ids = partition("grid:2", x)
    assert ids.shape == (1, 4, 4) and ids.max() == 3
    fill = fill_values("mean", x, ids, 0)
    np.testing.assert_allclose(fill[0, :2, :2], x[0, :2, :2].mean())
    np.testing.assert_allclose(fill[1, 2:, 2:], x[1, 2:, 2:].mean())
    assert partition("rows", np.zeros((5, 3))).shape == (5, 1)
    assert partition("windows:4", np.zeros((2, 16))).max() == 3
    assert partition("slic:6", np.random.default_rng(0).random((3, 24, 24))).max() >= 3
    # An explicit count the input cannot hold is refused, never clamped; defaults shrink.
    with pytest.raises(UsageError, match="at most 4"):
        partition("grid:5", x)
    with pytest.raises(UsageError, match="at most 16"):
        partition("windows:17", np.zeros((2, 16)))
    assert partition("windows", np.zeros((2, 16))).max() == 15
    with pytest.raises(UsageError):
        partition("hexagons", x)
    with pytest.raises(UsageError):
        partition(np.zeros((3, 3), dtype=int), x)
