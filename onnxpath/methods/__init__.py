"""Attribution methods: plain functions over one gradient engine, registered by name.

A method takes the engine, a batch `x` (N, *input) in the model's input space, the target class
per example, and keyword-only options; it returns an `Attribution` whose maps have the shape of
`x`. The CLI offers exactly the registered names, and passes each method only the options its
signature declares. Methods import `pathways`, `engine`, `autodiff` and below; they never see a
file or a modality.

`resolve_method` maps what a user types to a registered name: any case, `_` or `-`, and
Captum's names (`saliency`, `IntegratedGradients`, `layer_gradcam`, ...), with "did you mean"
for near misses; `check_options` does the same for option keys. Results keep the registered
names. `resolve_call` does it for a library call (`Explainer.attribute(x, "saliency")`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.pathways.network import resolve_prune_percent


@dataclass
class Attribution:
    maps: np.ndarray  # (N, *input shape), float32, raw and signed unless the method says so
    extras: list[dict] = field(default_factory=list)  # per example: method-specific facts
    logits: np.ndarray | None = None  # (N, classes) when the method ran the unmodified model

    def __post_init__(self):
        maps = np.asarray(self.maps)  # float64 stays (a float64 model); the Explainer casts
        self.maps = maps if maps.dtype == np.float64 else maps.astype(np.float32, copy=False)
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


# Other names for the registered methods, in `_key` form: Captum's classes and functions and
# common spellings. `saliency` is Captum's Saliency, which takes the absolute value by default.
ALIASES = {
    "saliency": "gradient", "gradients": "gradient", "vanillagradient": "gradient",
    "inputtimesgradient": "input-x-gradient", "ig": "integrated-gradients",
    "integratedgradient": "integrated-gradients", "guidedbackpropagation": "guided-backprop",
    "deconvolution": "deconvnet", "layergradcam": "gradcam", "noisetunnel": "smoothgrad",
    "kernelshapley": "kernel-shap",
    # Captum's DeepLift and DeepLiftShap match the registered names; shap's DeepExplainer.
    "deepshap": "deeplift-shap", "deepexplainer": "deeplift-shap",
    "deepliftrescale": "deeplift",
    # Captum's LRP and Zennit's composites by their names.
    "layerwiserelevancepropagation": "lrp", "layerrelevancepropagation": "lrp",
    "lrpepsilon": "lrp", "relevancepropagation": "lrp",
    # pytorch-grad-cam's classes (GradCAMPlusPlus, XGradCAM, ScoreCAM, ...) and Captum's
    # GuidedGradCam match the registered names; its CLI spells Grad-CAM++ "gradcam++".
    "gradcam++": "gradcam-plus-plus", "gradcampp": "gradcam-plus-plus",
    "gradcamplus": "gradcam-plus-plus",
    # Captum's GradientShap, FeatureAblation, FeaturePermutation match the registered names.
    "shapleyvaluesampling": "shapley-sampling", "expectedgradients": "gradient-shap",
    "permutationimportance": "feature-permutation",
    # Captum's layer and neuron classes: the method at --layer (and --neuron); InternalInfluence
    # matches its registered name.
    "layerconductance": "conductance", "layergradientxactivation": "input-x-gradient",
    "layerintegratedgradients": "integrated-gradients", "neurongradient": "gradient",
    "neuronintegratedgradients": "integrated-gradients",
}
ALIAS_OPTIONS = {"saliency": {"absolute": True}}


def _key(name: str) -> str:
    """A name without case, `-`, `_`, spaces or dots: IntegratedGradients, integrated_gradients
    and integrated-gradients are one key."""
    return re.sub(r"[-_\s.]", "", name.lower())


def closest(word: str, choices: Iterable[str], key: Callable[[str], str] = str) -> str | None:
    """The choice nearest to `word` (compared as `key(...)`), or one that `word` begins or
    ends; None when nothing is close."""
    keyed = {key(c): c for c in choices}
    near = difflib.get_close_matches(key(word), list(keyed), n=1, cutoff=0.6)
    if not near and len(key(word)) >= 3:
        near = [k for k in keyed if k.startswith(key(word)) or k.endswith(key(word))][:1]
    return keyed[near[0]] if near else None


def did_you_mean(word: str, choices: Iterable[str], key: Callable[[str], str] = str) -> str:
    """"; did you mean 'x'?" for the closest choice, or ""."""
    near = closest(word, choices, key)
    return f"; did you mean '{near}'?" if near else ""


def resolve_method(name: str) -> str:
    """The registered name of the method `name` (a registered name in any case or spelling, or
    an alias such as Captum's); UsageError with the closest name and the choices otherwise."""
    key = _key(name)
    for registered in METHODS:
        if _key(registered) == key:
            return registered
    if key in ALIASES and ALIASES[key] in METHODS:
        return ALIASES[key]
    names = {**{_key(m): m for m in METHODS}, **ALIASES}
    near = closest(key, names)
    hint = f"; did you mean '{names[near]}'?" if near else ""
    raise UsageError(f"unknown method '{name.strip()}'{hint} (choose from "
                     f"{', '.join(METHODS)})")


def resolve_call(name: str, options: dict) -> tuple[str, dict]:
    """A library call's `method` and options, as the CLI resolves them: the registered name,
    and `options` with what an alias implies (saliency: absolute=True) where not given."""
    implied = {k: v for k, v in ALIAS_OPTIONS.get(_key(name), {}).items() if k not in options}
    return resolve_method(name), {**implied, **options}


def resolve_methods(text: str | Iterable[str]) -> tuple[list[str], dict]:
    """`--method a,b` (or a list): the registered names, in order, and the options an alias
    implies (`saliency`: absolute). An implied option must reach its method alone: not a
    second method that takes it too (`saliency,smoothgrad`, `saliency,gradient`)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"no method given; choose from {', '.join(METHODS)}")
    methods, implied = [resolve_method(n) for n in names], {}
    for i, (name, registered) in enumerate(zip(names, methods, strict=True)):
        for key, value in ALIAS_OPTIONS.get(_key(name), {}).items():
            clash = [n for j, (n, m) in enumerate(zip(names, methods, strict=True))
                     if j != i and key in option_names([m])]
            if clash:
                raise UsageError(f"'{name}' is {registered} with {key}={value}, which would "
                                 f"reach '{clash[0]}' too: use onnxpath's method names and "
                                 "set the option")
            implied[key] = value
    return methods, implied


def option_names(methods: Iterable[str]) -> list[str]:
    """The keyword-only options that the registered `methods` take, sorted."""
    return sorted({k for m in methods for k, p in inspect.signature(METHODS[m]).parameters
                   .items() if p.kind is inspect.Parameter.KEYWORD_ONLY})


def check_options(methods: Iterable[str], options: dict, what: str = "method option") -> None:
    """UsageError naming the first key of `options` that none of `methods` takes (it would be
    ignored), the valid keys and the closest one."""
    methods = list(methods)
    valid = option_names(methods)
    for key in options:
        if key not in valid:
            raise UsageError(f"unknown {what} '{key}' for {', '.join(methods)}"
                             f"{did_you_mean(key, valid, _key)} (valid: {', '.join(valid)})")


def options_for(fn: Method, options: dict) -> dict:
    """The subset of `options` that `fn` accepts as keyword-only parameters."""
    accepted = keyword_only(fn)
    return {k: v for k, v in options.items() if k in accepted}


@functools.cache
def keyword_only(fn: Method) -> frozenset[str]:
    """`fn`'s keyword-only parameters (inspect.signature costs ~0.1 ms, paid once per
    method instead of once per call)."""
    return frozenset(k for k, p in inspect.signature(fn).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY)


def effective_params(fn: Method, options: dict) -> dict:
    """The options `fn` runs with, its own defaults filled in, as JSON-friendly scalars (for
    the `params` field of a result line)."""
    params = inspect.signature(fn).parameters
    merged = {k: p.default for k, p in params.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY}
    merged.update(options_for(fn, options))
    if "prune_percent" in merged and "keep" in merged:  # the pathway's P: --prune, --keep or 85
        merged["prune_percent"] = resolve_prune_percent(merged["prune_percent"], merged["keep"])
    return {k: v for k, v in merged.items() if isinstance(v, (int, float, str, bool))}


def _register_all() -> None:
    """Import every method module of this package (one method per file): importing registers."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if not module.startswith("_"):
            importlib.import_module(f"{__name__}.{module}")
    # Modules import each other, so registration order is not the name order: sort, so that
    # --help and messages list the methods alphabetically.
    ordered = sorted(METHODS.items())
    METHODS.clear()
    METHODS.update(ordered)


_register_all()
