"""Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019, "Layer-Wise
Relevance Propagation: An Overview") on any ONNX model: the gradient walk with the rules
swapped, as guided backprop swaps the ReLU family's.

The target logit is the relevance at the output (Captum's convention): the seed is one-hot,
every rule is linear in the relevance it receives, so the map is scaled by the logit after one
pass. A composite (Kohlbrenner et al. 2020; Zennit's names) picks the rule per layer kind:

| composite | Conv | Gemm/MatMul | first layer |
|---|---|---|---|
| epsilon (default) | ε | ε | |
| zplus, alpha1beta0 | z+ | z+ | |
| alpha2beta1 | α2β1 | α2β1 | |
| gamma | γ | γ | |
| epsilon-plus | z+ | ε | |
| epsilon-plus-flat | z+ | ε | flat (first Conv/Gemm/MatMul) |
| epsilon-gamma-box | γ | ε | z^B (first Conv) |
| epsilon-alpha2beta1 | α2β1 | ε | |
| epsilon-alpha2beta1-flat | α2β1 | ε | flat (first Conv/Gemm/MatMul) |

or a spec such as `conv=gamma,dense=epsilon,first=wsquare` (rules: epsilon, zplus,
alpha1beta0, alpha2beta1, gamma, flat, wsquare, box). The default is ε on every layer, Captum's
LRP default, with Zennit's ε = 1e-6 (Captum's is 1e-9). Every other node gets the treatment
`_lrp_plan` gives it (pass, proportional, gradient); ops without an LRP rule fall back to
their gradient and are named in extras["lrp_gradient_fallback"] and in one warning. So a
transformer (the text model: LayerNormalization, Softmax attention, GELU) gets a map, ε on its
projections, and is told which ops were not LRP; a table model's MLP is plain LRP.

Conservation: biases keep a share of the relevance under every rule but z^B and flat (Zennit
keeps biases by default), so the map alone sums to less than the logit; on EfficientNet-Lite0,
whose BatchNorms are folded into conv biases, they keep almost all of it. The graph therefore
also returns the relevance each bias keeps: extras["bias_relevance"], and relevance_sum +
bias_relevance = logit up to the stabilisers wherever extras["conserves"] (see
`RelevanceRules.conserves`). `zero_bias` drops the biases from the rules (Zennit's
zero_params=["bias"]).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from onnxpath.autodiff import RULES, GraphBuilder, Node
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.methods._common import pick, single_pass
from onnxpath.methods._lrp_plan import Plan, build_plan
from onnxpath.methods._lrp_rules import LAYER_RULES, Settings, passed_on, proportional


@dataclass(frozen=True)
class Composite:
    conv: str
    dense: str
    first: str | None = None
    first_kinds: tuple[str, ...] = ("conv", "dense")

    def __str__(self) -> str:
        first = f",first={self.first}" if self.first else ""
        return f"conv={self.conv},dense={self.dense}{first}"


ANY_LAYER, CONV = ("conv", "dense"), ("conv",)
COMPOSITES = {
    "epsilon": Composite("epsilon", "epsilon"),
    "zplus": Composite("zplus", "zplus"),
    "alpha1beta0": Composite("alpha1beta0", "alpha1beta0"),
    "alpha2beta1": Composite("alpha2beta1", "alpha2beta1"),
    "gamma": Composite("gamma", "gamma"),
    "epsilon-plus": Composite("zplus", "epsilon"),
    "epsilon-plus-flat": Composite("zplus", "epsilon", "flat", ANY_LAYER),
    "epsilon-gamma-box": Composite("gamma", "epsilon", "box", CONV),
    "epsilon-alpha2beta1": Composite("alpha2beta1", "epsilon"),
    "epsilon-alpha2beta1-flat": Composite("alpha2beta1", "epsilon", "flat", ANY_LAYER),
}


def _key(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def resolve_composite(composite: str) -> tuple[str, Composite]:
    """(name, composite) for a registered name in any spelling (Zennit's class and registry
    names work: EpsilonPlusFlat, epsilon_plus_flat) or a `conv=..,dense=..,first=..` spec."""
    text = str(composite).strip()
    for name, found in COMPOSITES.items():
        if _key(name) == _key(text):
            return name, found
    if "=" not in text:
        raise UsageError(f"unknown LRP composite '{text}' (choose from "
                         f"{', '.join(COMPOSITES)}, or a spec like "
                         "conv=gamma,dense=epsilon,first=box)")
    parts = dict(part.split("=", 1) for part in text.replace(" ", "").split(",") if part)
    unknown = set(parts) - {"conv", "dense", "first"}
    rules = [v for v in parts.values() if v not in LAYER_RULES]
    if unknown or rules:
        raise UsageError(f"LRP composite spec '{text}': keys are conv, dense, first; rules "
                         f"are {', '.join(LAYER_RULES)}")
    found = Composite(parts.get("conv", "epsilon"), parts.get("dense", "epsilon"),
                      parts.get("first"))
    return str(found), found


class RelevanceRules:
    """The rule override for every op type the plan treats: one callable, named by its
    settings so that the engine caches one gradient graph per composite and settings."""

    def __init__(self, plan: Plan, composite: Composite, settings: Settings):
        self.plan, self.composite, self.settings = plan, composite, settings
        firsts = plan.ordered_layers(composite.first_kinds) if composite.first else []
        self.first = firsts[0].node.outputs[0] if firsts else None
        self.__module__ = __name__
        self.__qualname__ = (f"lrp[{composite}; eps={settings.epsilon!r}; "
                             f"gamma={settings.gamma!r}; box={settings.box!r}; "
                             f"zero_bias={settings.zero_bias}]")

        self.bias_outputs = {key: f"onnxpath_lrp/bias_relevance/{key}"
                             for key, layer in plan.layers.items()
                             if layer.bias is not None and not settings.zero_bias
                             and self.rule_of(key) not in ("flat", "box")}

    @property
    def conserves(self) -> bool:
        """Whether relevance_sum + bias_relevance is the logit up to the stabilisers: no
        gradient fallback, no αβ with β > 0 (where a neuron has no negative contribution, β R
        is never taken back), and no bias dropped from a layer that has one (a neuron that a
        bias alone switches on then passes relevance it has no inputs to give to)."""
        rules = {self.rule_of(key) for key in self.plan.layers}
        dropped = self.settings.zero_bias and any(layer.bias is not None
                                                  for layer in self.plan.layers.values())
        return not self.plan.fallback and "alpha2beta1" not in rules and not dropped

    def rule_of(self, key: str) -> str:
        if key == self.first:
            return self.composite.first
        return getattr(self.composite, self.plan.layers[key].kind)

    def __call__(self, node: Node, dy, b: GraphBuilder):
        key = node.outputs[0]
        if key in self.plan.layers:
            layer = self.plan.layers[key]
            relevance, kept = LAYER_RULES[self.rule_of(key)](b, layer, node.inputs[0], dy[0],
                                                             self.settings)
            if key in self.bias_outputs:  # per example, an output of the graph
                b.op("ReduceSum", kept, b.ints(range(1, b.rank(layer.output))), keepdims=0,
                     out_name=self.bias_outputs[key])
            return [relevance, *[None] * (len(node.inputs) - 1)]
        if key in self.plan.passes:
            return passed_on(node, dy, b)
        if key in self.plan.proportional:
            return proportional(node, dy, b)
        return RULES[node.op_type](node, dy, b)


def parse_box(box) -> tuple[float, float] | None:
    """`LOW,HIGH` (or a pair) bounding the input for the z^B rule; None: each example's own
    minimum and maximum."""
    if box is None:
        return None
    try:
        low, high = (float(v) for v in (box.split(",") if isinstance(box, str) else box))
    except (TypeError, ValueError) as err:
        raise UsageError(f"--box takes LOW,HIGH, e.g. -1,1; got '{box}'") from err
    if not low < high:
        raise UsageError(f"--box needs LOW < HIGH, got {low:g},{high:g}")
    return low, high


@method("lrp", picks_target=True)
def lrp(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
        composite: str = "epsilon", epsilon: float = 1e-6, gamma: float = 0.25,
        box: str | None = None, zero_bias: bool = False) -> Attribution:
    name, chosen = resolve_composite(composite)
    if not epsilon > 0 or not gamma >= 0:
        raise UsageError(f"LRP needs --epsilon > 0 and --gamma >= 0, got {epsilon:g}, "
                         f"{gamma:g}")
    plan = engine.derived(("lrp-plan",), lambda: build_plan(engine.info.proto,
                                                              engine.input_name,
                                                              engine.info.logits))
    settings = Settings(float(epsilon), float(gamma), parse_box(box), bool(zero_bias),
                        engine.input_name)
    rules = RelevanceRules(plan, chosen, settings)
    if plan.fallback:
        warnings.warn(f"lrp: no LRP rule for {', '.join(plan.fallback_ops)}: relevance passes "
                      "through them by their gradient (extras: lrp_gradient_fallback)",
                      stacklevel=2)
    overrides = dict.fromkeys(sorted(plan.op_types), rules)
    logits, grads, kept = single_pass(engine, x, engine.seed(targets), overrides=overrides,
                                      extra_outputs=tuple(rules.bias_outputs.values()))
    picked = logits.argmax(axis=1) if targets is None else np.asarray(targets)
    logit = pick(logits, picked).astype(np.float64)
    relevance = grads[engine.input_name].astype(np.float64)
    relevance *= logit.reshape((-1,) + (1,) * (relevance.ndim - 1))
    sums = relevance.reshape(len(relevance), -1).sum(axis=1)
    biases = logit * sum((v.astype(np.float64) for v in kept.values()), np.zeros(len(x)))
    conserves = rules.conserves
    extras = [{"composite": name, "relevance_sum": float(total), "bias_relevance": float(bias),
               "logit": float(value), "conserves": conserves,
               "lrp_gradient_fallback": plan.fallback_ops}
              for total, bias, value in zip(sums, biases, logit, strict=True)]
    return Attribution(relevance, extras=extras, logits=logits)
