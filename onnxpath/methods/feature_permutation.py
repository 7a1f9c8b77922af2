"""Feature permutation (Breiman 2001's permutation importance, per example), as Captum's
FeaturePermutation, forward runs only.

Captum permutes each feature across the examples of a batch and reports, per example, the
change f(x) − f(x with that feature taken from another example): per feature a random
permutation of the rows (never the identity: Captum redraws it), row i taking the feature from
the row the permutation sends there. One input alone has nothing to permute with, and a result
that changed with the CLI's --batch-size would be a poor explanation, so:

- with background rows (`baseline`: a K×<example> `.npy` file or array of the same data, e.g.
  `models/examples/customers.npy` for the churn table), each example x is permuted within the
  batch [x; background]: exactly Captum's FeaturePermutation over those K + 1 rows, read at
  x's row (x keeps its own value where the permutation leaves it in place: a zero change). The
  result depends on x, the background and the seed only;
- without them, a batch of two or more examples is permuted within itself, exactly as Captum
  does (from the CLI: `--batch-size` examples at a time);
- one example without background rows is refused in one line (a single baseline value makes
  it feature ablation).

`samples` repeats the whole run with fresh permutations and averages (Captum runs once;
scikit-learn's permutation importance repeats 5 times). Features are those of LIME and
KernelSHAP (`_features.partition`); the score is the target's logit by default, and each
change is spread evenly over the feature's elements (`_features.spread`). Permutations come
from `default_rng(seed)` (`draw_permutations`); `permutation_changes` takes them as given.
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import logits_rows, row_chunks
from onnxpath.methods._features import partition, spread, target_scores
from onnxpath.methods._references import background_rows


def draw_permutations(samples: int, features: int, rows: int,
                      seed: int | None) -> np.ndarray:
    """(samples, features, rows): per run and feature, a random permutation of the rows that
    is not the identity; row i takes the feature from row [..., i]."""
    rng = np.random.default_rng(seed)
    orders = np.empty((samples, features, rows), dtype=int)
    for s in range(samples):
        for j in range(features):
            order = rng.permutation(rows)
            while (order == np.arange(rows)).all():
                order = rng.permutation(rows)
            orders[s, j] = order
    return orders


def permutation_changes(engine: GradientEngine, example: np.ndarray, pool: np.ndarray,
                        ids: np.ndarray, sources: np.ndarray, target: int, score: str,
                        batch: int | None) -> tuple[np.ndarray, float]:
    """(changes (M,), f(x)): f(x) minus the mean over runs s of f(x with feature j taken from
    pool[sources[s, j]]), `pool` being [x; background]."""
    samples, features = sources.shape
    f_x = float(target_scores(logits_rows(engine, example[None], batch), np.array([target]),
                              score)[0])
    pairs = sources.ravel()  # run-major: (s, j) with j fastest
    feature_of = np.tile(np.arange(features), samples)
    scores = np.empty(len(pairs))
    for part in row_chunks(len(pairs), batch):
        inside = ids[None] == feature_of[part].reshape(-1, *[1] * ids.ndim)
        rows = np.where(inside, pool[pairs[part]], example[None]).astype(np.float32)
        scores[part] = target_scores(logits_rows(engine, rows, batch),
                                     np.full(len(rows), target), score)
    return f_x - scores.reshape(samples, features).mean(axis=0), f_x


@method("feature-permutation", needs_gradients=False)
def feature_permutation(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
                        baseline=None, samples: int = 5, segments=None, score: str = "logit",
                        seed: int | None = 0,
                        internal_batch_size: int | None = 64) -> Attribution:
    """`baseline`: the background rows (else the batch); `samples`: runs averaged (5)."""
    samples = int(samples)
    if samples < 1:
        raise UsageError(f"feature-permutation needs --samples >= 1, got {samples}")
    background = background_rows(baseline, x.shape[1:])
    shape = "×".join(map(str, x.shape[1:]))
    if background is None and baseline is not None:
        raise UsageError(f"feature-permutation needs background rows to permute with, not one "
                         f"baseline: give --baseline FILE.npy holding K×{shape} rows of the "
                         f"same data (one baseline value makes it feature-ablation)")
    if background is None and len(x) < 2:
        raise UsageError(f"feature-permutation permutes each feature between examples, and "
                         f"there is one: give --baseline FILE.npy holding K×{shape} background "
                         f"rows of the same data (or explain two or more images in one "
                         f"batch: --batch-size)")
    maps, extras = [], []
    if background is None:  # the batch itself: one partition and one permutation per feature
        ids = partition(segments, x[0])  # for all rows, as Captum's one feature mask
        orders = draw_permutations(samples, int(ids.max()) + 1, len(x), seed)
    for i, example in enumerate(x):
        if background is None:
            pool, sources = x, orders[:, :, i]
        else:
            ids = partition(segments, example)
            pool = np.concatenate([example[None], background])
            sources = draw_permutations(samples, int(ids.max()) + 1, len(pool), seed)[:, :, 0]
        changes, f_x = permutation_changes(engine, example, pool, ids, sources,
                                           int(targets[i]), score, internal_batch_size)
        maps.append(spread(changes, ids, example.shape))
        extras.append({"features": sources.shape[1], "samples": samples,
                       "background": len(pool) - 1, "f_x": f_x})
    return Attribution(np.stack(maps), extras)
