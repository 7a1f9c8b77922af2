"""Input x gradient (Shrikumar et al. 2016): x * d logit_c / d x, Captum's InputXGradient."""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import single_pass


@method("input-x-gradient", picks_target=True)
def input_x_gradient(engine: GradientEngine, x: np.ndarray,
                     targets: np.ndarray | None) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets))
    return Attribution(x * grads[engine.input_name], logits=logits)
