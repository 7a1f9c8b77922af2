"""Layer conductance (Dhamdhere, Sundararajan & Yan 2018, "How important is a neuron?"), as
Captum's LayerConductance computes it.

The conductance of neuron j of a layer y is the share of the integrated gradients that flows
through it along the path x(alpha) = x' + alpha (x - x'):
    Cond_j = sum_i (x_i - x'_i) int_0^1 dF/dy_j dy_j/dx_i dalpha
           = int_0^1 dF/dy_j dy_j/dalpha dalpha.
Captum discretises dy_j/dalpha dalpha as the change of the layer between consecutive points of
the rule: with the n + 1 points alpha_0 < ... < alpha_n (Gauss-Legendre nodes by default),
    Cond_j = sum_{k<n} dF/dy_j(x(alpha_k)) * (y_j(x(alpha_{k+1})) - y_j(x(alpha_k))).
The map has the layer's shape. Summed over the layer it approaches f(x) - f(x') when every path
from the input passes through the layer; extras carry that delta as Captum defines it.

With `neuron`, the conductance of that one neuron is split over the input's features instead
(Captum's NeuronConductance): (x_i - x'_i) sum_k w_k dF/dy_j(x(alpha_k)) dy_j/dx_i(x(alpha_k)),
with the rule's n points and weights. Each row takes two passes: dF/dy_j from the layer's
gradient, which then scales the neuron's one-hot seed of d y_j / d x.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import (
    accumulate_rows,
    chunk_size,
    logits_rows,
    make_baseline,
    pick,
    row_chunks,
    single_pass,
)
from onnxpath.methods._layers import (
    Neuron,
    layer_and_neuron,
    layer_extras,
    layer_pass,
    layer_shape,
    path_rows,
    required_layer,
)
from onnxpath.methods.integrated_gradients import completeness, quadrature


@method("conductance")
def conductance(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                layer: str | None = None, steps: int = 50, rule: str = "gausslegendre",
                baseline="zero", internal_batch_size: int | None = 10,
                seed: int | None = 0, neuron=None) -> Attribution:
    """`layer` defaults to Grad-CAM's (the last 4-D map before global pooling)."""
    reference = make_baseline(baseline, x, seed)
    if neuron is not None:
        unit = layer_and_neuron(engine, layer, neuron)[1]
        return neuron_conductance(engine, x, reference, targets, unit,
                                  *quadrature(rule, int(steps)), internal_batch_size)
    name = required_layer(engine, layer, "conductance")
    alphas = quadrature(rule, int(steps) + 1)[0]
    span = x - reference
    rows_example = np.repeat(np.arange(len(x)), len(alphas))
    rows_alpha = np.tile(alphas, len(x)).astype(np.float32)

    def rows_x(part: slice) -> np.ndarray:
        ex = rows_example[part]
        return reference[ex] + rows_alpha[part].reshape(-1, *[1] * (x.ndim - 1)) * span[ex]

    total = np.zeros((len(x), *layer_shape(engine, name)), dtype=np.float64)
    carry = None  # the previous chunk's last row: (example, gradient, value)
    for part, grad, value in path_rows(engine, name, len(rows_example), internal_batch_size,
                                       rows_x, lambda part: engine.seed(
                                           targets[rows_example[part]]), values=True):
        examples = rows_example[part]
        if carry is not None:
            examples = np.r_[carry[0], examples]
            grad, value = np.concatenate([carry[1], grad]), np.concatenate([carry[2], value])
        same = examples[1:] == examples[:-1]  # consecutive steps of one example
        flow = grad[:-1][same].astype(np.float64) * (value[1:][same].astype(np.float64)
                                                     - value[:-1][same])
        if len(flow):
            accumulate_rows(total, examples[1:][same], flow)
        carry = (examples[-1:], grad[-1:], value[-1:])
    logits = logits_rows(engine, np.concatenate([x, reference]), internal_batch_size)
    extras = completeness(total, pick(logits, np.tile(targets, 2)))
    shape = total.shape[1:]
    return Attribution(total, [{**e, **layer_extras(name, shape, 1)[0]} for e in extras],
                       logits=logits[:len(x)])


def neuron_conductance(engine: GradientEngine, x: np.ndarray, reference: np.ndarray,
                       targets: np.ndarray, unit: Neuron, alphas: np.ndarray,
                       weights: np.ndarray, batch: int | None) -> Attribution:
    """The neuron's conductance per input feature (module docstring)."""
    span = x - reference
    rows_example = np.repeat(np.arange(len(x)), len(alphas))
    rows_alpha = np.tile(alphas, len(x)).astype(np.float32)
    rows_weight = np.tile(weights, len(x))
    total = np.zeros(x.shape, dtype=np.float64)
    for part in row_chunks(len(rows_example), chunk_size(engine, batch)):
        examples = rows_example[part]
        xs = reference[examples] + rows_alpha[part].reshape(-1, *[1] * (x.ndim - 1)) * \
            span[examples]
        _, grad, _ = layer_pass(engine, xs, engine.seed(targets[examples]), unit.layer,
                                values=False)
        through = grad.reshape(len(xs), -1)[:, unit.column] * rows_weight[part]  # w_k dF/dy_j
        seed = unit.seed(len(xs)) * through[:, None]
        grads = single_pass(unit.engine, xs, seed)[1][unit.engine.input_name]
        accumulate_rows(total, examples, grads)
    values = logits_rows(unit.engine, x, batch)[:, unit.column]
    return Attribution(span * total, unit.extras(values))
