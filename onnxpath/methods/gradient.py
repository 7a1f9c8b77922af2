"""Gradient (saliency): d logit_c / d x. Signed by default; `absolute=True` is Captum's Saliency."""

from __future__ import annotations

import numpy as np

from onnxpath.engine.gradient import GradientEngine
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import single_pass


@method("gradient", picks_target=True)
def gradient(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
             absolute: bool = False) -> Attribution:
    logits, grads, _ = single_pass(engine, x, engine.seed(targets))
    maps = grads[engine.input_name]
    return Attribution(np.abs(maps) if absolute else maps, logits=logits)
