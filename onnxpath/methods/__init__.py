"""Attribution methods: plain functions over one gradient engine, registered by name.

A method takes the engine, a batch `x` (N, *input) in the model's input space, the target class
per example, and keyword-only options; it returns an `Attribution` whose maps have the shape of
`x`. The CLI offers exactly the registered names, and passes each method only the options its
signature declares. Methods import `pathways`, `engine`, `autodiff` and below; they never see a
file or a modality.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Attribution:
    maps: np.ndarray  # (N, *input shape), float32, raw and signed unless the method says so
    extras: list[dict] = field(default_factory=list)  # per example: method-specific facts
    logits: np.ndarray | None = None  # (N, classes) when the method ran the unmodified model

    def __post_init__(self):
        self.maps = np.asarray(self.maps, dtype=np.float32)
        if not self.extras:
            self.extras = [{} for _ in range(len(self.maps))]


Method = Callable[..., Attribution]
METHODS: dict[str, Method] = {}


def method(name: str, needs_gradients: bool = True,
           picks_target: bool = False) -> Callable[[Method], Method]:
    """Register `fn` under `name`. Forward-only methods (`needs_gradients=False`) also serve
    models whose ops lack gradient rules. `picks_target` methods accept targets=None: their one
    gradient pass then attributes each example's predicted class, found in the same run, and
    they return that run's logits (no separate forward pass to find the class)."""

    def register(fn: Method) -> Method:
        fn.needs_gradients = needs_gradients
        fn.picks_target = picks_target
        METHODS[name] = fn
        return fn

    return register


def options_for(fn: Method, options: dict) -> dict:
    """The subset of `options` that `fn` accepts as keyword-only parameters."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items()
            if k in params and params[k].kind is inspect.Parameter.KEYWORD_ONLY}


def effective_params(fn: Method, options: dict) -> dict:
    """The options `fn` runs with, its own defaults filled in, as JSON-friendly scalars (for
    the `params` field of a result line)."""
    params = inspect.signature(fn).parameters
    merged = {k: p.default for k, p in params.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    merged.update(options_for(fn, options))
    return {k: v for k, v in merged.items() if isinstance(v, (int, float, str, bool))}


from onnxpath.methods import (  # noqa: E402,F401  (importing a method module registers it)
    deconvnet,
    gradcam,
    gradient,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    kernel_shap,
    lime,
    occlusion,
    pathway,
    rise,
    smoothgrad,
)
