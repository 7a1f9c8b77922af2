"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), against one baseline per example.

A_i = (x_i − x'_i) · m_i, where m is the gradient of the target logit with every nonlinearity's
derivative replaced by its multiplier Δy/Δx between the input and the baseline (see
`_rescale`). As Captum's DeepLift with multiply_by_inputs=True, the contributions sum to
f(x) − f(x') when every nonlinearity on the way has a rule; extras carry that gap (`delta`),
both logits and the ops that kept their gradient (`deeplift_gradient_fallback`).
"""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import make_baseline
from onnxpath.methods._rescale import deltas, gradient_fallbacks, rescale_pass, target_logits


@method("deeplift", picks_target=True)
def deeplift(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             baseline="zero", seed: int | None = 0) -> Attribution:
    """`baseline`: zero, blur, uniform (seeded), a .npy file or an array (`make_baseline`);
    text models get the pad token's embedding by default."""
    reference = make_baseline(baseline, x, seed)
    logits, ref_logits, multipliers = rescale_pass(engine, x, reference, engine.seed(targets))
    if targets is None:  # the run picked each row's predicted class
        targets = logits.argmax(axis=1)
    maps = (x.astype(np.float64) - reference) * multipliers
    extras = deltas(maps, target_logits(logits, targets), target_logits(ref_logits, targets),
                    gradient_fallbacks(engine))
    return Attribution(maps, extras, logits=logits)
