"""Cascading randomisation of an ONNX graph's parameters, and the maps it must decorrelate."""

import numpy as np
import pytest
from eval_models import conv_bn_model, linear_model
from onnx import numpy_helper

from onnxpath import Explainer
from onnxpath.evaluate import Settings, evaluate
from onnxpath.evaluate.sanity import cascade, cascade_steps, compare, parametric_layers


def weights(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_parametric_layers_find_weights_biases_and_batchnorm_parameters():
    layers = parametric_layers(conv_bn_model())
    assert [(l.node, l.op_type) for l in layers] == [
        ("conv", "Conv"), ("bn", "BatchNormalization"), ("fc", "Gemm")]
    assert layers[0].initializers == ["conv_w", "conv_b"]
    assert layers[1].initializers == ["bn_scale", "bn_bias"]  # running stats stay
    bias = linear_model(np.ones((12, 2)), (3, 2, 2), bias=np.zeros(2))
    assert parametric_layers(bias)[0].initializers == ["w", "b"]  # MatMul + Add bias


def test_cascade_randomises_from_the_output_backwards_cumulatively():
    model = conv_bn_model()
    before = weights(model)
    steps = list(cascade(model, seed=1))
    assert [(count, layer.node) for count, layer, _ in steps] == [(1, "fc"), (2, "bn"),
                                                                   (3, "conv")]
    changed = [{k for k, v in weights(m).items() if not np.array_equal(v, before[k])}
               for _, _, m in steps]
    assert changed == [{"fc_w", "fc_b"}, {"fc_w", "fc_b", "bn_scale", "bn_bias"},
                       {"fc_w", "fc_b", "bn_scale", "bn_bias", "conv_w", "conv_b"}]
    final = weights(steps[-1][2])
    assert final["conv_w"].std() == pytest.approx(0.1, rel=0.3)
    np.testing.assert_array_equal(final["bn_var"], before["bn_var"])
    # Evaluating fewer steps draws the same weights for the steps it keeps.
    (_, _, last), = list(cascade(model, steps=1, seed=1))
    np.testing.assert_array_equal(weights(last)["conv_w"], final["conv_w"])


def test_cascade_steps_spread_evenly_and_keep_both_ends():
    assert cascade_steps(10, None) == list(range(1, 11))
    assert cascade_steps(10, 4) == [1, 4, 7, 10]
    assert cascade_steps(3, 8) == [1, 2, 3]


def test_identical_maps_score_one_on_every_measure():
    heat = np.random.default_rng(0).standard_normal((32, 32))
    assert all(v == pytest.approx(1.0) for v in compare(heat, 3 * heat).values())


def test_a_randomised_linear_model_gives_uncorrelated_gradient_maps():
    rng = np.random.default_rng(0)
    shape = (3, 32, 32)
    model = linear_model(rng.standard_normal((3 * 32 * 32, 4)).astype(np.float32), shape)
    explainer = Explainer(model)
    x = rng.standard_normal((4, *shape)).astype(np.float32)
    report = evaluate(explainer, x, ["gradient"], ["sanity"], Settings())
    last = report.score("gradient", "sanity-last").values
    assert np.abs(last).max() < 0.15
    spearman = next(s for s in report.series if s.measure == "spearman")
    assert np.abs(spearman.values).max() < 0.15
