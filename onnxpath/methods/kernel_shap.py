"""KernelSHAP (Lundberg & Lee 2017), forward runs only, sampling coalitions as `shap` does.

Coalitions z ∈ {0,1}^M are weighted by the Shapley kernel (M−1) / (C(M,|z|) |z| (M−|z|)). As in
`shap.KernelExplainer`, subset sizes (paired with their complements) whose share of the budget
covers every subset are enumerated exactly, smallest first; the rest of the budget is drawn at
random from the remaining sizes, duplicates merged into weights. The Shapley values solve the
weighted least squares under the constraint sum φ = f(x) − f(baseline), the last feature
eliminated by that constraint. With a budget of 2^M − 2 or more every coalition is enumerated
and the values are exact.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._features import evaluate, fill_values, partition, spread


def coalitions(features: int, samples: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(masks (S, M), kernel weights (S,)) for M = `features`, at most `samples` rows."""
    m = features
    budget = min(samples, 2 ** m - 2) if m <= 30 else samples
    sizes = int(np.ceil((m - 1) / 2))
    paired = int(np.floor((m - 1) / 2))
    share = np.array([(m - 1) / (s * (m - s)) for s in range(1, sizes + 1)])
    share[:paired] *= 2
    share /= share.sum()
    rows, weights = [], []
    left, remaining, full = budget, share.copy(), 0
    for size in range(1, sizes + 1):
        count = comb(m, size) * (2 if size <= paired else 1)
        if left * remaining[size - 1] / count < 1 - 1e-8:
            break
        full, left = full + 1, left - count
        if remaining[size - 1] < 1:
            remaining /= 1 - remaining[size - 1]
        weight = share[size - 1] / comb(m, size) / (2 if size <= paired else 1)
        chosen = np.array(list(itertools.combinations(range(m), size)))
        block = np.zeros((len(chosen), m))
        np.put_along_axis(block, chosen, 1.0, axis=1)
        pairs = [block, 1 - block] if size <= paired else [block]
        both = np.stack(pairs, axis=1).reshape(-1, m)  # a subset, then its complement
        rows.append(both)
        weights.append(np.full(len(both), weight))
    if full < sizes and left > 0:
        rng = np.random.default_rng(seed)
        rest = share.copy()
        rest[:paired] /= 2  # paired sizes give two rows per draw
        rest = rest[full:] / rest[full:].sum()
        draws = rng.choice(len(rest), size=left, p=rest) + full + 1
        order = np.argsort(rng.random((left, m)), axis=1)  # a random permutation per draw
        picked = np.zeros((left, m))
        np.put_along_axis(picked, order, np.arange(m)[None] < draws[:, None], axis=1)
        complements = 1 - picked[draws <= paired]
        drawn = np.concatenate([picked, complements])[:left]
        # Merge duplicates: rows packed to bytes, one void key each (np.unique over rows of
        # floats with axis=0 is several times slower).
        packed = np.ascontiguousarray(np.packbits(drawn.astype(np.uint8), axis=1))
        keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        rows.append(drawn[first])
        weights.append(counts * share[full:].sum() / counts.sum())
    if not rows:
        return np.zeros((0, m)), np.zeros(0)
    return np.concatenate(rows), np.concatenate(weights)


def constrained_wls(masks: np.ndarray, weights: np.ndarray, y: np.ndarray, f_x: float,
                    f_base: float) -> np.ndarray:
    """φ minimising Σ w (y − f_base − z·φ)² subject to Σ φ = f_x − f_base."""
    total = f_x - f_base
    adjusted = (y - f_base) - masks[:, -1] * total
    design = masks[:, :-1] - masks[:, -1:]
    weighted = weights[:, None] * design
    # einsum, not BLAS: right after ONNX Runtime's runs its spinning threads hold the cores,
    # and a multi-threaded BLAS product then waits on them (170 ms instead of 1 ms).
    try:
        head = np.linalg.solve(np.einsum("si,sj->ij", design, weighted),
                               np.einsum("si,s->i", weighted, adjusted))
    except np.linalg.LinAlgError:
        root = np.sqrt(weights)
        head = np.linalg.lstsq(root[:, None] * design, root * adjusted, rcond=None)[0]
    return np.append(head, total - head.sum())


@method("kernel-shap", needs_gradients=False)
def kernel_shap(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                samples: int = 1000, segments=None, baseline="zero",
                score: str = "probability", seed: int | None = 0,
                internal_batch_size: int | None = 64) -> Attribution:
    if samples < 1:
        raise UsageError(f"KernelSHAP needs --samples >= 1, got {samples}")
    maps, extras = [], []
    for i, example in enumerate(x):
        ids = partition(segments, example)
        features = int(ids.max()) + 1
        fill = fill_values(baseline, example, ids, seed)
        target = int(targets[i])
        ends = evaluate(engine, example, fill, ids, np.array([[1] * features, [0] * features]),
                        target, score, internal_batch_size)
        f_x, f_base = float(ends[0]), float(ends[1])
        if features == 1:
            phi = np.array([f_x - f_base])
            used = 0
        else:
            masks, weights = coalitions(features, samples, seed)
            y = evaluate(engine, example, fill, ids, masks, target, score, internal_batch_size)
            phi = constrained_wls(masks, weights, y, f_x, f_base)
            used = len(masks)
        maps.append(spread(phi, ids, example.shape))
        extras.append({"features": features, "samples": used, "f_x": f_x,
                       "f_baseline": f_base})
    return Attribution(np.stack(maps), extras)
