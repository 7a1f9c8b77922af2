"""Sensitivity-n: on a linear model with zero fill, gradient x input is exactly additive."""

import numpy as np
from eval_models import linear_model, model_forward

from onnxpath.evaluate.sensitivity import output_drops, sensitivity_n, subsets


def test_subsets_have_the_asked_size_and_are_seeded():
    chosen = subsets(100, (1, 7, 50), 6, seed=3)
    assert chosen.shape == (3, 6, 100)
    assert (chosen.sum(-1) == np.array([1, 7, 50])[:, None]).all()
    np.testing.assert_array_equal(chosen, subsets(100, (1, 7, 50), 6, seed=3))


def test_gradient_times_input_of_a_linear_model_scores_one():
    rng = np.random.default_rng(0)
    shape = (3, 6, 6)
    weights = rng.standard_normal((108, 4)).astype(np.float32)
    forward = model_forward(linear_model(weights, shape))
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    targets = forward(x).argmax(1)
    drops = output_drops(forward, x, targets, ns=(1, 4, 12), samples=16)
    exact = np.stack([(weights[:, t].reshape(shape) * x[i]).sum(0)
                      for i, t in enumerate(targets)])
    np.testing.assert_allclose(sensitivity_n(exact, drops, (1, 4, 12)), 1.0, atol=1e-5)
    noise = rng.standard_normal(exact.shape)
    assert np.nanmean(sensitivity_n(noise, drops, (1, 4, 12))) < 0.5
