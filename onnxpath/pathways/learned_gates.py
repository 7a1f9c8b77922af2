"""Section 6: pathway selection by a pruning objective, the baseline the 2021 paper argues against.

Gates g (one per neuron, fed through the mask inputs) minimise
    CE(softmax f(x; 1), softmax f(x; g)) + lambda * sum |g|
by SGD with momentum, clamped to [0, 100]. The CE gradient comes from the masked model's
gradient graph rewritten so that its seed is softmax(logits) - p, computed in the same run as
the forward pass: one forward+backward per step. The L1 term's gradient is added in numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from onnxpath.engine.gradient import GradientEngine
from onnxpath.engine.seeds import seed_from_cross_entropy
from onnxpath.errors import UsageError
from onnxpath.pathways.network import MaskedNetwork, probabilities

INITS = ("ones", "uniform")


class CrossEntropyEngine(GradientEngine):
    """Gradients of CE(seed, softmax(logits)) per example: the seed input is the target
    distribution, not a weighting of the logits."""

    def gradient_model(self, wrt: Sequence[str], overrides=None,
                       extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
        model = super().gradient_model(wrt, overrides, extra_outputs)
        return seed_from_cross_entropy(model, self.info.logits)


def cross_entropy_engine(net: MaskedNetwork) -> GradientEngine:
    engine = net.engine
    return engine.derived("cross-entropy", lambda: engine.rewritten(
        engine.info, CrossEntropyEngine, tag="cross-entropy"))


def learned_gates(net: MaskedNetwork, x: np.ndarray, original_logits: np.ndarray, *,
                  iterations: int = 1000, lr: float = 0.01, momentum: float = 0.9,
                  l1: float = 0.01, init: str = "ones", retries: int = 100,
                  rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Per layer, (N, *layer.shape) gate values from the lowest-loss step at which each example's
    predicted class is unchanged. With init="uniform", examples without such a step are solved
    again with lambda / 10, up to `retries` times (with "ones", step 0 always qualifies)."""
    if init not in INITS:
        raise UsageError(f"unknown gate init '{init}'; choose from {', '.join(INITS)}")
    rng = rng or np.random.default_rng(0)
    targets = np.asarray(original_logits).argmax(axis=1)
    best: list[np.ndarray] | None = None
    found = np.zeros(len(x), bool)
    for _ in range(max(1, retries) if init == "uniform" else 1):
        gates, ok = _descend(net, x, original_logits, targets, iterations, lr, momentum, l1,
                             init, rng)
        if best is None:
            best = gates
        else:  # keep earlier solutions; fill in the examples solved only now
            for k, g in enumerate(gates):
                best[k][ok & ~found] = g[ok & ~found]
        found |= ok
        if found.all():
            break
        l1 /= 10.0
    assert best is not None
    return best


def _descend(net: MaskedNetwork, x, original_logits, targets, iterations, lr, momentum, l1,
             init, rng) -> tuple[list[np.ndarray], np.ndarray]:
    engine = cross_entropy_engine(net)
    target_probs = probabilities(original_logits).astype(np.float32)
    n = len(x)
    shapes = [(n, *layer.shape) for layer in net.layers]
    gates = [np.ones(s, np.float32) if init == "ones" else rng.random(s, dtype=np.float32)
             for s in shapes]
    velocity = [np.zeros(s, np.float32) for s in shapes]
    best = [g.copy() for g in gates]
    best_loss = np.full(n, np.inf)
    found = np.zeros(n, bool)
    step = [np.empty(s, np.float32) for s in shapes]
    names = net.mask_names
    for _ in range(iterations):
        logits, grads, _ = engine.gradients(x, target_probs, wrt=names, feeds=net.feeds(gates),
                                            fetch=names)
        log_q = log_probabilities(logits)
        # Gates stay >= 0 (clamped), so sum |g| = sum g.
        loss = -(target_probs * log_q).sum(axis=1) + l1 * sum(
            g.reshape(n, -1).sum(axis=1, dtype=np.float64) for g in gates)
        better = (logits.argmax(axis=1) == targets) & (loss < best_loss)
        for i in np.flatnonzero(better):
            for k, g in enumerate(gates):
                best[k][i] = g[i]
        best_loss[better] = loss[better]
        found |= better
        for g, v, tmp, name in zip(gates, velocity, step, names, strict=True):
            d = grads[name]
            np.add(d, l1, out=d, where=g > 0)  # d|g|/dg = sign(g), 0 at 0 as in torch
            v *= momentum
            v += d
            np.multiply(v, lr, out=tmp)
            g -= tmp
            np.clip(g, 0.0, 100.0, out=g)
    return best, found


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
