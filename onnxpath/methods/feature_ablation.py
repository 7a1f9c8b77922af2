"""Feature ablation, as Captum's FeatureAblation with a feature mask, forward runs only.

Each feature in turn is replaced by the baseline, all others kept; its attribution is the drop
f(x) − f(x with the feature ablated). This is occlusion with the features of LIME and KernelSHAP
(`_features.partition`: grid cells, superpixels, tokens, table columns, time windows) instead
of sliding windows, and a leave-one-out estimate of each feature's effect (Zeiler & Fergus
2014's occlusion generalised; Captum's perturbation-based "FeatureAblation").

The score is the target's logit by default, as Captum sees a model that returns logits
(`probability` as an option). Each drop is spread evenly over the feature's elements
(`_features.spread`), so a map summed over a feature gives its drop; Captum gives every element
the whole drop. Deterministic: M + 1 runs of the model for M features.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._features import evaluate, fill_values, partition, spread


def ablation_drops(engine: GradientEngine, example: np.ndarray, fill: np.ndarray,
                   ids: np.ndarray, target: int, score: str,
                   batch: int | None) -> tuple[np.ndarray, float]:
    """(drops (M,), f(x)): f(x) − f(x with feature j at its fill), for each feature j."""
    features = int(ids.max()) + 1
    masks = np.vstack([np.ones((1, features)), 1 - np.eye(features)])
    scores = evaluate(engine, example, fill, ids, masks, target, score, batch)
    return scores[0] - scores[1:], float(scores[0])


@method("feature-ablation", needs_gradients=False)
def feature_ablation(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                     segments=None, baseline="zero", score: str = "logit",
                     seed: int | None = 0, internal_batch_size: int | None = 64) -> Attribution:
    """`baseline`: the ablated value (zero, mean, blur, uniform, a number or FILE.npy; the pad
    token's embedding for text); `seed` only seeds the uniform baseline."""
    maps, extras = [], []
    for i, example in enumerate(x):
        ids = partition(segments, example)
        fill = fill_values(baseline, example, ids, seed)
        drops, f_x = ablation_drops(engine, example, fill, ids, int(targets[i]), score,
                                    internal_batch_size)
        maps.append(spread(drops, ids, example.shape))
        extras.append({"features": len(drops), "f_x": f_x})
    return Attribution(np.stack(maps), extras)
