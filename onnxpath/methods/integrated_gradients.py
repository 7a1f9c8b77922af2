"""Integrated gradients (Sundararajan et al. 2017), with Captum's quadrature rules.

A_i = (x_i - x'_i) * sum_k w_k * d f(x' + a_k (x - x')) / d x_i. The (example, step) pairs are
flattened into rows and run `internal_batch_size` rows at a time, so memory stays bounded
whatever `steps` is. Each row's quadrature weight w_k rides in the gradient seed, so the
weighting costs no extra pass.

With `layer`, the path runs at that inner tensor (Captum's LayerIntegratedGradients): the
layer's activations a(x) and a(x') for the example and its baseline are interpolated,
a(x') + alpha (a(x) - a(x')), and fed in place of the layer while every branch that bypasses it
still reads x; A = (a(x) - a(x')) * sum_k w_k d f / d a, with the layer's shape. With `layer`
and `neuron`, one element of the layer is explained instead of a logit (Captum's
NeuronIntegratedGradients).
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import (
    _pad,
    accumulate_rows,
    fixed_batch,
    logits_rows,
    make_baseline,
    pick,
    row_chunks,
    weighted_gradients,
)
from onnxpath.methods._layers import (
    layer_and_neuron,
    layer_extras,
    layer_input_engine,
    layer_values,
    path_rows,
)

RULES = ("gausslegendre", "riemann-left", "riemann-right", "riemann-middle", "riemann-trapezoid")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) exactly as Captum's approximation methods define them. Captum's
    "trapezoid" halves the end weights of an n-point grid with step 1/n (weights sum to
    1 - 1/n); we keep that so the numbers match."""
    rule = rule.replace("_", "-")
    if rule not in RULES:
        raise UsageError(f"unknown --rule '{rule}'; choose from {', '.join(RULES)}")
    if steps < (1 if rule == "gausslegendre" else 2):
        raise UsageError(f"--steps must be at least {1 if rule == 'gausslegendre' else 2} "
                         f"for {rule}, got {steps}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1 + nodes), 0.5 * weights
    n = steps
    weights = np.full(n, 1.0 / n)
    alphas = {
        "riemann-left": np.linspace(0, 1 - 1 / n, n),
        "riemann-right": np.linspace(1 / n, 1, n),
        "riemann-middle": np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n),
        "riemann-trapezoid": np.linspace(0, 1, n),
    }[rule]
    if rule == "riemann-trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    return alphas, weights


@method("integrated-gradients")
def integrated_gradients(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                         steps: int = 50, rule: str = "gausslegendre", baseline="zero",
                         internal_batch_size: int | None = 10,
                         seed: int | None = 0, layer: str | None = None,
                         neuron=None) -> Attribution:
    """Signed IG maps; extras carry the completeness delta sum(A) - (f(x) - f(x'))."""
    alphas, weights = quadrature(rule, int(steps))
    reference = make_baseline(baseline, x, seed)
    layer, unit = layer_and_neuron(engine, layer, neuron)
    if layer is not None:
        return layer_integrated_gradients(engine, x, reference, targets, layer, alphas,
                                          weights, internal_batch_size)
    explained = engine if unit is None else unit.engine  # a neuron: the flattened layer
    goals = targets if unit is None else unit.targets(len(x))
    span = x - reference
    rows_example = np.repeat(np.arange(len(x)), len(alphas))
    rows_alpha = np.tile(alphas, len(x)).astype(np.float64 if x.dtype == np.float64  # float64
                                                else np.float32)  # models run in float64
    rows_weight = np.tile(weights, len(x))

    def rows_x(part: slice) -> np.ndarray:
        ex = rows_example[part]
        return reference[ex] + rows_alpha[part].reshape(-1, *[1] * (x.ndim - 1)) * span[ex]

    path_integral = weighted_gradients(explained, rows_x, rows_example, rows_weight, goals,
                                       x.shape, internal_batch_size)
    maps = span * path_integral
    logits = logits_rows(explained, np.concatenate([x, reference]), internal_batch_size)
    extras = completeness(maps, pick(logits, np.tile(goals, 2)))
    if unit is not None:  # the logits were the layer's: the explainer runs the model itself
        return Attribution(maps, [{**e, **u} for e, u in
                                  zip(extras, unit.extras([e["f_x"] for e in extras]),
                                      strict=True)])
    return Attribution(maps, extras, logits=logits[:len(x)])  # x's run serves the prediction


def completeness(maps: np.ndarray, ends: np.ndarray) -> list[dict]:
    """Per example: sum(A) - (f(x) - f(x')), and the two ends (f(x) first, then f(x'))."""
    sums = maps.reshape(len(maps), -1).sum(axis=1)
    f_x, f_ref = ends[:len(maps)], ends[len(maps):]
    return [{"delta": float(s - (a - b)), "f_x": float(a), "f_baseline": float(b)}
            for s, a, b in zip(sums, f_x, f_ref, strict=True)]


def layer_integrated_gradients(engine: GradientEngine, x: np.ndarray, reference: np.ndarray,
                               targets: np.ndarray, layer: str, alphas: np.ndarray,
                               weights: np.ndarray, batch: int | None) -> Attribution:
    """IG along the straight path between the layer's activations for the baseline and the
    example. The delta compares sum(A) with the ends of that path: f(x), and f with the layer
    at its baseline activation (other branches still at x), which is f(x') only when every
    path from the input passes through the layer."""
    at_x, at_ref = (layer_values(engine, v, layer, batch) for v in (x, reference))
    span = at_x - at_ref
    cut = layer_input_engine(engine, layer)
    rows_example = np.repeat(np.arange(len(x)), len(alphas))
    rows_alpha = np.tile(alphas, len(x)).astype(np.float32)
    rows_weight = np.tile(weights, len(x)).astype(np.float32)

    def rows_feed(part: slice) -> np.ndarray:
        ex = rows_example[part]
        return at_ref[ex] + rows_alpha[part].reshape(-1, *[1] * (span.ndim - 1)) * span[ex]

    def rows_seed(part: slice) -> np.ndarray:
        return cut.seed(targets[rows_example[part]]) * rows_weight[part, None]

    integral = np.zeros(span.shape, dtype=np.float64)
    for part, grad, _ in path_rows(cut, layer, len(rows_example), batch,
                                   lambda part: x[rows_example[part]], rows_seed, rows_feed):
        accumulate_rows(integral, rows_example[part], grad)
    maps = span * integral
    logits = np.concatenate([fed_logits(cut, x, values, layer, batch)
                             for values in (at_x, at_ref)])
    extras = completeness(maps, pick(logits, np.tile(targets, 2)))
    return Attribution(maps, [{**e, **layer_extras(layer, span.shape[1:], 1)[0]}
                              for e in extras], logits=logits[:len(x)])


def fed_logits(engine: GradientEngine, x: np.ndarray, values: np.ndarray, layer: str,
               batch: int | None) -> np.ndarray:
    """The logits of a model whose `layer` is an input, fed `values` there, `batch` rows per
    run (padded to a fixed model batch)."""
    fixed = fixed_batch(engine)
    parts = []
    for part in row_chunks(len(x), fixed or batch):
        rows = part.stop - part.start
        parts.append(engine.logits(_pad(x[part], fixed or 0),
                                   {layer: _pad(values[part], fixed or 0)})[:rows])
    return np.concatenate(parts)
