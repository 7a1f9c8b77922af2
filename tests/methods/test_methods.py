"""Properties of the baseline methods that need no reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx_nets import conv_net

from onnxpath.autodiff import RULES as GRADIENT_RULES
from onnxpath.errors import UnsupportedOpError, UsageError
from onnxpath.explainer import Explainer
from onnxpath.methods import METHODS, effective_params
from onnxpath.methods._common import bilinear_resize, gaussian_blur, make_baseline
from onnxpath.methods.integrated_gradients import RULES, quadrature

FAST = {"integrated-gradients": {"steps": 8}, "smoothgrad": {"samples": 3},
        "occlusion": {"window": 4, "stride": 4}, "rise": {"masks": 40, "cells": 4}}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return Explainer(conv_net(tmp_path_factory.mktemp("net") / "net.onnx"))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_returns_input_shaped_finite_maps(net, x, name):
    result = net.attribute(x, name, **FAST.get(name, {}))
    # Layer methods (conductance, internal-influence) attribute at their layer, in its shape.
    shape = x.shape if result.wrt is None else (len(x), *result.extras[0]["layer_shape"])
    assert result.maps.shape == shape and result.maps.dtype == np.float32
    assert np.isfinite(result.maps).all()
    assert len(result.extras) == len(x)


@pytest.mark.parametrize("name", ["gradient", "integrated-gradients", "smoothgrad", "occlusion",
                                  "rise", "gradcam", "input-x-gradient", "guided-backprop"])
def test_fixed_batch_models_are_padded_not_refused(tmp_path, x, name):
    """Models exported without a dynamic batch take exactly one row per run."""
    fixed = Explainer(conv_net(tmp_path / "fixed.onnx", batch=1))
    dynamic = Explainer(conv_net(tmp_path / "dynamic.onnx"))
    options = {**FAST.get(name, {}), "internal_batch_size": 5}
    np.testing.assert_allclose(fixed.attribute(x, name, **options).maps,
                               dynamic.attribute(x, name, **options).maps, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_quadrature_weights(rule):
    alphas, weights = quadrature(rule, 10)
    assert len(alphas) == len(weights) == 10 and alphas.min() >= 0 and alphas.max() <= 1
    expected = 0.9 if rule == "riemann-trapezoid" else 1.0  # Captum's trapezoid sums to 1 - 1/n
    assert weights.sum() == pytest.approx(expected)


def test_integrated_gradients_does_not_depend_on_the_batch_size(net, x):
    runs = [net.attribute(x, "integrated-gradients", steps=12, internal_batch_size=b)
            for b in (1, 7, 100)]
    for other in runs[1:]:
        np.testing.assert_allclose(other.maps, runs[0].maps, rtol=1e-5, atol=1e-6)
    assert set(runs[0].extras[0]) >= {"delta", "f_x", "f_baseline"}


def test_integrated_gradients_completeness_improves_with_steps(net, x):
    deltas = [abs(net.attribute(x, "integrated-gradients", steps=s, rule="riemann-right",
                                baseline="uniform")
                  .extras[0]["delta"]) for s in (4, 64)]
    assert deltas[1] < deltas[0]


def test_baselines(x, tmp_path):
    assert not make_baseline("zero", x).any()
    blurred = make_baseline("blur", x)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    uniform = make_baseline("uniform", x, seed=1)
    assert uniform.min() >= x.min() and uniform.max() <= x.max()
    np.save(tmp_path / "b.npy", x[0])
    np.testing.assert_array_equal(make_baseline(tmp_path / "b.npy", x)[1], x[0])
    with pytest.raises(UsageError):
        make_baseline("nope", x)
    with pytest.raises(UsageError):
        make_baseline(np.zeros((5, 5)), x)
    assert np.allclose(gaussian_blur(np.ones((1, 1, 20, 20))), 1.0)


def test_bilinear_resize_matches_torch():
    maps = np.random.default_rng(0).standard_normal((2, 5, 7)).astype(np.float32)
    for size in [(32, 32), (11, 3), (5, 7)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size,
                                              mode="bilinear")[:, 0].numpy()
        np.testing.assert_allclose(bilinear_resize(maps, size), ref, rtol=1e-5, atol=1e-6)


def test_smoothgrad_is_deterministic_per_seed(net, x):
    def run(seed, batch):
        return net.attribute(x, "smoothgrad", samples=4, noise="20%", seed=seed,
                             internal_batch_size=batch).maps
    np.testing.assert_array_equal(run(1, 3), run(1, 3))
    np.testing.assert_allclose(run(1, 3), run(1, 100), rtol=1e-5, atol=1e-6)
    assert not np.allclose(run(1, 3), run(2, 3))


def test_smoothgrad_variants_relate(net, x):
    runs = {v: net.attribute(x, "smoothgrad", samples=4, variant=v).maps
            for v in ("mean", "square", "var")}
    np.testing.assert_allclose(runs["var"], runs["square"] - runs["mean"] ** 2, atol=1e-5)
    assert (runs["var"] >= -1e-6).all()


def test_rise_is_deterministic_and_gradcam_layer_errors(net, x):
    a = net.attribute(x, "rise", masks=30, seed=4).maps
    np.testing.assert_array_equal(a, net.attribute(x, "rise", masks=30, seed=4).maps)
    with pytest.raises(UsageError):
        net.attribute(x, "gradcam", layer="no_such_tensor")
    by_node = net.attribute(x, "gradcam", layer="relu")  # a node name means its output
    assert by_node.extras[0]["layer"] == "r"


def test_forward_only_methods_serve_models_without_gradient_rules(tmp_path, x, monkeypatch):
    """The engine builds gradient graphs lazily, so occlusion and RISE run on a model with a
    rule-less op (Sin, its rule taken away) on the logits path, and a gradient method falls
    back when asked."""
    monkeypatch.delitem(GRADIENT_RULES, "Sin")
    explainer = Explainer(conv_net(tmp_path / "sin.onnx", rule_less_op="Sin"))
    for name in ("occlusion", "rise"):
        assert np.isfinite(explainer.attribute(x, name, **FAST[name]).maps).all()
    with pytest.raises(UnsupportedOpError):
        explainer.attribute(x, "gradient")
    result = explainer.attribute(x, "integrated-gradients", fallback="occlusion",
                                 **FAST["occlusion"])
    assert result.method == "occlusion"
    assert result.extras[0]["fallback_from"] == "integrated-gradients"
    assert "Sin" in result.extras[0]["fallback_reason"]
    with pytest.raises(UsageError):
        explainer.attribute(x, "gradient", fallback="smoothgrad")


def test_no_fallback_when_gradients_exist(net, x):
    result = net.attribute(x, "gradient", fallback="occlusion")
    assert result.method == "gradient" and "fallback_from" not in result.extras[0]


def test_effective_params_fill_defaults():
    params = effective_params(METHODS["integrated-gradients"], {"steps": 7, "window": 3})
    assert params["steps"] == 7 and params["rule"] == "gausslegendre" and "window" not in params
