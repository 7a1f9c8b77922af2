"""Shapley value sampling (Castro, Gómez & Tejada 2009; Štrumbelj & Kononenko 2010), as
Captum's ShapleyValueSampling, forward runs only.

The Shapley value of feature j is its marginal contribution f(S ∪ {j}) − f(S) averaged over
all orderings of the features, S being the features before j. Each of `samples` random
permutations starts from the baseline (every feature switched off) and switches the features
on one at a time in its order; the change of the target score at each step is credited to the
feature switched on. Every permutation's credits sum to f(x) − f(baseline), so the estimate
does too (efficiency), whatever the number of samples.

Features are those of LIME and KernelSHAP (`_features.partition`: grid cells, superpixels,
tokens, table columns, time windows), switched off to `baseline` as there. The score is the
target's logit by default, as Captum sees a model that returns logits (`probability` as an
option). Each feature's value is spread evenly over its elements (`_features.spread`), so a map
summed over a feature gives its Shapley value; Captum gives every element the feature's whole
value. Permutations come from `default_rng(seed)`; `shapley_values` takes them as given.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._features import evaluate, fill_values, partition, spread


def random_permutations(samples: int, features: int, seed: int | None) -> np.ndarray:
    """(samples, features): one random order of the features per row."""
    return np.argsort(np.random.default_rng(seed).random((samples, features)), axis=1)


def shapley_values(engine: GradientEngine, example: np.ndarray, fill: np.ndarray,
                   ids: np.ndarray, permutations: np.ndarray, target: int, score: str,
                   batch: int | None) -> tuple[np.ndarray, float, float]:
    """(values (M,), f(x), f(baseline)) from the marginal contributions along each
    permutation (S, M). The runs with the first k features of each permutation on, for
    k < M, go through the model in chunks; k = M is x itself, run once."""
    samples, features = permutations.shape
    position = np.argsort(permutations, axis=1)  # position[s, j]: step at which j comes on
    steps = np.arange(features - 1)
    masks = position[:, None, :] <= steps[None, :, None]  # (S, M−1, M)
    ends = evaluate(engine, example, fill, ids, np.array([[1] * features, [0] * features]),
                    target, score, batch)
    f_x, f_base = float(ends[0]), float(ends[1])
    partial = evaluate(engine, example, fill, ids, masks.reshape(-1, features), target, score,
                       batch).reshape(samples, features - 1)
    path = np.concatenate([np.full((samples, 1), f_base), partial,
                           np.full((samples, 1), f_x)], axis=1)
    gains = np.diff(path, axis=1)  # gains[s, k]: feature permutations[s, k] switched on
    values = np.zeros(features)
    np.add.at(values, permutations.ravel(), gains.ravel())
    return values / samples, f_x, f_base


@method("shapley-sampling", needs_gradients=False)
def shapley_sampling(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                     samples: int = 25, segments=None, baseline="zero", score: str = "logit",
                     seed: int | None = 0, internal_batch_size: int | None = 64) -> Attribution:
    """`samples`: permutations (Captum's n_samples, 25); each costs M − 1 runs of the model
    for M features."""
    samples = int(samples)
    if samples < 1:
        raise UsageError(f"shapley-sampling needs --samples >= 1, got {samples}")
    maps, extras = [], []
    for i, example in enumerate(x):
        ids = partition(segments, example)
        features = int(ids.max()) + 1
        fill = fill_values(baseline, example, ids, seed)
        permutations = random_permutations(samples, features, seed)
        values, f_x, f_base = shapley_values(engine, example, fill, ids, permutations,
                                             int(targets[i]), score, internal_batch_size)
        maps.append(spread(values, ids, example.shape))
        extras.append({"features": features, "samples": samples, "f_x": f_x,
                       "f_baseline": f_base})
    return Attribution(np.stack(maps), extras)
