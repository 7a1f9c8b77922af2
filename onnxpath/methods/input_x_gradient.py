"""Input x gradient (Shrikumar et al. 2016): x * d logit_c / d x, Captum's InputXGradient."""

from __future__ import annotations

import numpy as np

from ..engine import GradientEngine
from . import Attribution, method
from ._common import gradients_rows


@method("input-x-gradient")
def input_x_gradient(engine: GradientEngine, x: np.ndarray, targets: np.ndarray) -> Attribution:
    return Attribution(x * gradients_rows(engine, x, engine.seed(targets)))
