"""How Quantus and Captum read an attribution before a metric scores it, shared by the metrics
of `faithfulness`, `robustness`, `complexity` and the model-randomisation test.

- The map is the method's raw map in the model input's shape (C×H×W): every input element is
  one feature, as when Quantus and Captum are handed an attribution of the input's shape. Where
  a metric sums the map over perturbed input elements (faithfulness correlation,
  monotonicity, infidelity), a one-channel map (N×1×H×W, or N×H×W) counts for every channel,
  as Quantus broadcasts it; the metrics that read the map alone take it as it is, as Quantus.
- `normalise_by_max` is Quantus's default `normalise_func`: a / max|a|, an all-zero map left as
  it is. Quantus takes that maximum over the whole batch it is called with, so a score there
  depends on which images share the batch; here each map is divided by its own maximum, which
  is Quantus called one image at a time (`batch_size=1`).
- The black baseline (Quantus's `perturb_baseline="black"`) is the image's smallest value, over
  all its channels.
- Random draws come from one seeded stream per (seed, metric, image), so an image's draws do
  not depend on which other images are evaluated; the tests hand the same draws to the oracles.
"""

from __future__ import annotations

import numpy as np

# One stream per metric, so two metrics never reuse each other's draws.
STREAMS = {"faithfulness-correlation": 1, "infidelity": 2, "max-sensitivity": 3,
           "local-lipschitz": 4}


def rng_for(metric: str, seed: int, image: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[metric], image])


def as_input_shape(maps: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """(N, C, H, W) float64: `maps` broadcast to the inputs' shape (a one-channel map is
    repeated over the channels)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == len(input_shape) - 1:
        maps = maps[:, None]
    return np.broadcast_to(maps, (len(maps), *input_shape[1:]))


def flat(maps: np.ndarray) -> np.ndarray:
    """(N, features) float64, one row per image."""
    maps = np.asarray(maps, dtype=np.float64)
    return maps.reshape(len(maps), -1)


def normalise_by_max(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its own largest |value|; an all-zero map stays zero."""
    rows = flat(maps)
    top = np.abs(rows).max(axis=1, keepdims=True)
    return (rows / np.where(top > 0, top, 1.0)).reshape(np.shape(maps))


def black_baseline(x: np.ndarray) -> np.ndarray:
    """(N,) each image's smallest value: Quantus's "black"."""
    return np.asarray(x).reshape(len(x), -1).min(axis=1)
