"""Faithfulness metrics that perturb the input and watch the target output, defined as the
libraries users compare with define them (defaults included; `conventions` says how the map is
read: raw map, features = input elements, each map normalised by its own max).

Faithfulness correlation (Bhatt et al. 2020, Quantus `FaithfulnessCorrelation`):
    for runs r = 1..R (R=100), draw a subset S_r of |S| features (|S| = 224) without
    replacement, set them to the black baseline, and take
        Δ_r = f_c(x) - f_c(x with S_r replaced),   s_r = Σ_{i∈S_r} a_i
    with f_c the target logit (Quantus's softmax=False) and a the map normalised by its max
    (abs=False); the score is Pearson(s, Δ) over the runs. Higher is better.

Monotonicity (Arya et al. 2019, Quantus `Monotonicity`): start from the all-black input,
    insert the input's features k at a time (k = `features_in_step`, Quantus's default 1) in
    order of increasing |a| (np.argsort of |a|/max|a|, ascending), and record the target's
    softmax probability p_c after each insertion (Quantus calls Monotonicity with
    softmax=True, Arya's reference reads predict_proba); the score is 1 if that curve never
    decreases (np.all(np.diff(curve) >= 0)), else 0. Higher is better. This is Quantus's
    `Monotonicity`, Arya's metric, not Nguyen & Martínez's `MonotonicityCorrelation`: Quantus
    names Arya's metric "Monotonicity", and it needs one forward run per step where the
    correlation needs `nr_samples` (100) noisy runs per step. Quantus 0.6.0 inserts the baseline
    value again instead of the input's feature (its perturb_func replaces the chosen features of
    the baseline image by the baseline), so its curve is flat and every map scores True; here
    the features inserted are the input's, as in AIX360's reference `monotonicity_metric` by
    the paper's authors. A step of one feature means a forward run per input element (150528
    for a 224² RGB image); on images `evaluate` defaults to C × W features per step (H steps,
    as deletion's default step is one image row), elsewhere (tables, series) to Quantus's 1.

Infidelity (Yeh et al. 2019, Captum `infidelity`): for perturbations I_j, j = 1..n (n =
    `n_perturb_samples` = 10),
        INFD = 1/n Σ_j (Σ_i a_i I_ij - (f_c(x) - f_c(x - I_j)))²
    with a the raw map (no normalisation). Captum asks the caller for the perturbation; the
    one used here is the one of Captum's own example, I ~ N(0, 0.003²) on every input
    element. With `normalize=True`, Captum's option, a is first scaled by
    β = Σ_j (a·I_j) Δ_j / Σ_j (a·I_j)², which makes the score blind to the map's scale. Lower
    is better.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from onnxpath.evaluate.conventions import (
    as_input_shape,
    black_baseline,
    flat,
    normalise_by_max,
    rng_for,
)
from onnxpath.evaluate.perturbation import Forward, forward_stacks, softmax
from onnxpath.evaluate.similarity import pearson

FAITHFULNESS_RUNS = 100
FAITHFULNESS_SUBSET = 224
INFIDELITY_SAMPLES = 10
INFIDELITY_STD = 0.003
MONOTONICITY_CHUNK = 64  # insertion steps built at once


def target_logits(logits: list[np.ndarray], targets: np.ndarray) -> list[np.ndarray]:
    """f_c of each stack, float64: stack k belongs to image k - 1 (stack 0 holds the
    originals)."""
    original = logits[0][np.arange(len(targets)), targets].astype(np.float64)
    return [original] + [lg[:, targets[i]].astype(np.float64)
                         for i, lg in enumerate(logits[1:])]


def faithfulness_subsets(features: int, runs: int, subset_size: int, seed: int,
                         image: int) -> np.ndarray:
    """(runs, subset_size) feature indices, each row drawn without replacement."""
    if not 1 <= subset_size < features:
        raise ValueError(f"faithfulness correlation: the subset size {subset_size} must be "
                         f"between 1 and the {features} features of an input")
    rng = rng_for("faithfulness-correlation", seed, image)
    return np.stack([rng.choice(features, subset_size, replace=False) for _ in range(runs)])


def faithfulness_correlation(forward: Forward, x: np.ndarray, maps: np.ndarray,
                             targets: np.ndarray, runs: int = FAITHFULNESS_RUNS,
                             subset_size: int = FAITHFULNESS_SUBSET, batch_size: int = 64,
                             seed: int = 0) -> np.ndarray:
    """(N,) Pearson r between the attribution summed over a random subset and the logit drop
    when that subset is set to black."""
    n, features = len(x), x[0].size
    attributions = flat(normalise_by_max(as_input_shape(maps, x.shape)))
    black = black_baseline(x)

    def stacks() -> Iterator[np.ndarray]:
        yield x
        for i in range(n):
            chosen = faithfulness_subsets(features, runs, subset_size, seed, i)
            perturbed = np.repeat(x[i].reshape(1, -1), runs, axis=0)
            np.put_along_axis(perturbed, chosen, black[i], axis=1)
            yield perturbed.reshape(runs, *x.shape[1:])

    logits = target_logits(forward_stacks(forward, stacks(), batch_size), targets)
    scores = np.empty(n)
    for i in range(n):
        chosen = faithfulness_subsets(features, runs, subset_size, seed, i)
        sums = attributions[i][chosen].sum(axis=1)
        scores[i] = pearson(sums, logits[0][i] - logits[i + 1])
    return scores


def monotonicity_order(maps: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """(N, features) feature indices in increasing |a|/max|a| (Quantus's argsort, ties in
    numpy's default order)."""
    attributions = np.abs(flat(normalise_by_max(as_input_shape(maps, input_shape))))
    return np.argsort(attributions, axis=1)


def monotonicity_curves(forward: Forward, x: np.ndarray, maps: np.ndarray,
                        targets: np.ndarray, features_in_step: int = 1,
                        batch_size: int = 64) -> np.ndarray:
    """(N, steps) p_c after each insertion step, from the black image towards x."""
    n, features = len(x), x[0].size
    order = monotonicity_order(maps, x.shape)
    steps = math.ceil(features / features_in_step)
    black = black_baseline(x)

    def stacks() -> Iterator[np.ndarray]:
        # In chunks of steps, so that memory stays bounded when steps are many.
        for i in range(n):
            source = x[i].reshape(-1)
            current = np.full(features, black[i], dtype=x.dtype)
            for first in range(0, steps, MONOTONICITY_CHUNK):
                count = min(MONOTONICITY_CHUNK, steps - first)
                out = np.empty((count, features), dtype=x.dtype)
                for k in range(count):
                    step = first + k
                    index = order[i, step * features_in_step:(step + 1) * features_in_step]
                    current[index] = source[index]
                    out[k] = current
                yield out.reshape(count, *x.shape[1:])

    probs = softmax(np.concatenate(forward_stacks(forward, stacks(), batch_size)))
    return probs.reshape(n, steps, -1)[np.arange(n), :, targets]


def monotonic(curves: np.ndarray) -> np.ndarray:
    """(N,) 1.0 where the curve never decreases, else 0.0."""
    return np.all(np.diff(curves, axis=1) >= 0, axis=1).astype(np.float64)


def infidelity_noise(shape: tuple[int, ...], samples: int, std: float, seed: int,
                     image: int) -> np.ndarray:
    """(samples, C, H, W) float32 perturbations I ~ N(0, std²) for one image."""
    rng = rng_for("infidelity", seed, image)
    return rng.normal(0.0, std, size=(samples, *shape)).astype(np.float32)


def infidelity(forward: Forward, x: np.ndarray, maps: np.ndarray, targets: np.ndarray,
               samples: int = INFIDELITY_SAMPLES, std: float = INFIDELITY_STD,
               normalize: bool = False, batch_size: int = 64, seed: int = 0) -> np.ndarray:
    """(N,) Captum's infidelity with Gaussian perturbations I and perturbed inputs x - I."""
    n = len(x)
    attributions = flat(as_input_shape(maps, x.shape))

    def stacks() -> Iterator[np.ndarray]:
        yield x
        for i in range(n):
            yield x[i][None] - infidelity_noise(x.shape[1:], samples, std, seed, i)

    logits = target_logits(forward_stacks(forward, stacks(), batch_size), targets)
    scores = np.empty(n)
    for i in range(n):
        noise = infidelity_noise(x.shape[1:], samples, std, seed, i).reshape(samples, -1)
        explained = noise.astype(np.float64) @ attributions[i]  # Σ_i a_i I_ij
        drop = logits[0][i] - logits[i + 1]
        if normalize:
            square = (explained * explained).sum()
            beta = (explained * drop).sum() / (square if square != 0 else 1.0)
            explained = beta * explained
        scores[i] = ((explained - drop) ** 2).mean()
    return scores
