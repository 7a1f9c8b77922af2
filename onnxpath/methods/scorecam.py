"""Score-CAM (Wang et al. 2020): channel weights from forward passes, not gradients. Each
channel of the layer, upsampled to the input's size and scaled to [0, 1], masks the input; the
target's score on that masked input is the channel's weight:

    H_k = upsample(A^k), min-max scaled    (pytorch-grad-cam: nn.UpsamplingBilinear2d, i.e.
                                            align_corners=True; eps 1e-8 in the scaling)
    s_k = Y_c(x * H_k)                      (the pre-softmax logit, H_k shared by all channels)
    w = softmax_k(s)                        (the paper's softmax over the channels; subtracting
                                             the baseline's score, as the paper's eq. 3 does,
                                             leaves a softmax unchanged)

cam = sum_k w_k A^k; the raw map is signed (`relu` off), see `_cam`. That is K forward runs per
example (1280 at EfficientNet-Lite0's last layer), `internal_batch_size` masked inputs per run,
save one: a channel that is constant over the grid (a dead ReLU's zeros; 40-60% of
EfficientNet-Lite0's last layer on the shipped photos) scales to a mask of 0 everywhere, so all
such channels share the score of the blank input, computed once. (pytorch-grad-cam runs them
all; its eps leaves those masks at most ~1e-8 off 0.)
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._cam import (
    cam_attribution,
    channel_weighted,
    channels_last,
    chunks,
    image_layer,
    image_size,
    layer_values,
    targets_or_argmax,
)
from onnxpath.methods._common import interpolation_matrix, logits_rows, softmax

EPS = 1e-8


def _corner_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) matrix of bilinear interpolation with align_corners=True: output
    i samples the source at i * (in - 1) / (out - 1), so the corners meet exactly."""
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    return interpolation_matrix(np.arange(size_out) * scale, size_in)


def upsampled_masks(activation: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(k, h, w) channels -> (k, H, W) masks: bilinear (align_corners=True), each scaled to
    [0, 1] by its own minimum and maximum."""
    rows, cols = _corner_weights(activation.shape[-2], size[0]), \
        _corner_weights(activation.shape[-1], size[1])
    up = np.einsum("hi,kij,wj->khw", rows, activation.astype(np.float64), cols)
    low = up.min(axis=(1, 2), keepdims=True)
    high = up.max(axis=(1, 2), keepdims=True)
    return (up - low) / (high - low + EPS)


@method("scorecam", needs_gradients=False, picks_target=True)
def scorecam(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             layer: str | None = None, relu: bool = False,
             internal_batch_size: int | None = 32) -> Attribution:
    name = image_layer(engine, x, layer, "Score-CAM")
    logits, activation = layer_values(engine, x, name, "Score-CAM")
    targets = targets_or_argmax(targets, logits)
    channels = activation.shape[1]
    scores = np.zeros((len(x), channels))
    for i, example in enumerate(x):
        flat = activation[i].reshape(channels, -1)
        constant = flat.max(axis=1) == flat.min(axis=1)
        if constant.any():  # mask 0 everywhere: all score the blank input, run once
            blank = np.zeros_like(example)[None]
            scores[i, constant] = logits_rows(engine, blank)[0, targets[i]]
        varying = np.flatnonzero(~constant)
        for part in chunks(len(varying), engine, internal_batch_size):
            masks = np.expand_dims(upsampled_masks(activation[i, varying[part]], image_size(x)),
                                   3 if channels_last(x) else 1)
            masked = (example[None] * masks).astype(np.float32)
            scores[i, varying[part]] = logits_rows(engine, masked,
                                                   internal_batch_size)[:, targets[i]]
    weights = softmax(scores)
    return cam_attribution(channel_weighted(weights, activation), x, name, activation, logits,
                           relu)
