"""Gradient (saliency): d logit_c / d x. Signed by default; `absolute=True` is Captum's Saliency."""

from __future__ import annotations

import numpy as np

from ..engine import GradientEngine
from . import Attribution, method
from ._common import gradients_rows


@method("gradient")
def gradient(engine: GradientEngine, x: np.ndarray, targets: np.ndarray, *,
             absolute: bool = False) -> Attribution:
    maps = gradients_rows(engine, x, engine.seed(targets))
    return Attribution(np.abs(maps) if absolute else maps)
