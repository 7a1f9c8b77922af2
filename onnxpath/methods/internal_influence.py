"""Internal influence (Leino et al. 2018, "Influence-directed explanations for deep
convolutional networks"), as Captum's InternalInfluence computes it.

The influence of a neuron j of a layer y is its gradient integrated along the straight path
from the baseline to the input, x(alpha) = x' + alpha (x - x'):
    Infl_j = int_0^1 dF/dy_j (x(alpha)) dalpha ~ sum_k w_k dF/dy_j (x(alpha_k)),
with IG's quadrature rules (Gauss-Legendre by default). Unlike integrated gradients it is not
multiplied by any difference, so it has no completeness property. The map has the layer's
shape. Each row's quadrature weight rides in the gradient seed.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import accumulate_rows, make_baseline
from onnxpath.methods._layers import layer_extras, layer_shape, path_rows, required_layer
from onnxpath.methods.integrated_gradients import quadrature


@method("internal-influence")
def internal_influence(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                       layer: str | None = None, steps: int = 50,
                       rule: str = "gausslegendre", baseline="zero",
                       internal_batch_size: int | None = 10,
                       seed: int | None = 0) -> Attribution:
    """`layer` defaults to Grad-CAM's (the last 4-D map before global pooling)."""
    name = required_layer(engine, layer, "internal-influence")
    alphas, weights = quadrature(rule, int(steps))
    reference = make_baseline(baseline, x, seed)
    span = x - reference
    rows_example = np.repeat(np.arange(len(x)), len(alphas))
    rows_alpha = np.tile(alphas, len(x)).astype(np.float32)
    rows_weight = np.tile(weights, len(x)).astype(np.float32)

    def rows_x(part: slice) -> np.ndarray:
        ex = rows_example[part]
        return reference[ex] + rows_alpha[part].reshape(-1, *[1] * (x.ndim - 1)) * span[ex]

    def rows_seed(part: slice) -> np.ndarray:
        return engine.seed(targets[rows_example[part]]) * rows_weight[part, None]

    total = np.zeros((len(x), *layer_shape(engine, name)), dtype=np.float64)
    for part, grad, _ in path_rows(engine, name, len(rows_example), internal_batch_size,
                                   rows_x, rows_seed):
        accumulate_rows(total, rows_example[part], grad)
    return Attribution(total, layer_extras(name, total.shape[1:], len(x)))
