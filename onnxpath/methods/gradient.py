"""Gradient (saliency): d logit_c / d x. Signed by default; `absolute=True` is Captum's Saliency."""

from __future__ import annotations

import numpy as np

from ..engine import GradientEngine
from . import Attribution, method


@method("gradient")
def gradient(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
             absolute: bool = False) -> Attribution:
    _, grads, _ = engine.gradients(x, engine.seed(targets))
    maps = grads[engine.input_name]
    return Attribution(np.abs(maps) if absolute else maps)
