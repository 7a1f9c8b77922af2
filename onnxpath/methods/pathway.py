"""Pathway gradient (Khakzar et al. 2021; PruneGrad, 2019): d logit_c / d x through the network
with the critical pathway's masks fixed as constants (methods.md section 4).

`critical_pathway` selects the pathway (contribution, integrated, learned or random); the method
then takes the input gradient of the masked network. Scoring runs the unmodified network's tap
graph, the masked gradient the masked model's input-gradient graph (see `pathways.py`); the
scoring pass's logits are the prediction, so no separate forward pass is run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from onnxpath.autodiff.relu_family import RELU_FAMILY
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import UsageError
from onnxpath.methods import Attribution, method
from onnxpath.pathways import host_route, in_graph
from onnxpath.pathways.auto_prune import largest_faithful_prune
from onnxpath.pathways.learned_gates import learned_gates
from onnxpath.pathways.network import (
    Pathway,
    auto_threshold,
    contributions,
    integrated_contributions,
    masked_network,
    output_change,
    resolve_prune_percent,
)
from onnxpath.pathways.selection import in_parallel, random_selection, select

SELECTIONS = ("contribution", "integrated", "learned", "random")
WARN_CHANGE = 0.5  # a pathway past this output change warns


class PathwayChangeWarning(UserWarning):
    """The pathway changed the prediction by more than half."""


def critical_pathway(engine: GradientEngine, x: np.ndarray, targets: Sequence[int] | None, *,
                     prune_percent: float | str | None = None, keep: float | None = None,
                     selection: str = "contribution", layers: Sequence[str] = RELU_FAMILY,
                     layer_regex: str | None = None, per_layer: bool = False, seed: int = 0,
                     with_activations: bool = False, iterations: int = 1000,
                     gate_init: str = "ones") -> Pathway:
    """Select the critical pathway of each example of `x` for its target logit.

    selection: "contribution" (section 3, the default), "integrated" (section 5), "learned"
    (section 6's pruning objective: `iterations` SGD steps from gates `gate_init`, "ones" or
    "uniform") or "random" (section 7). `targets` None selects for each example's predicted
    class, read from the first pass's logits. `prune_percent` "auto" or "auto:T" chooses P per
    example: the largest whose output change stays within T% (15), see `auto_prune.py`.
    """
    if selection not in SELECTIONS:
        raise UsageError(f"unknown selection '{selection}'; choose from {', '.join(SELECTIONS)}")
    prune = resolve_prune_percent(prune_percent, keep)
    max_change = auto_threshold(prune)
    if max_change is not None and selection == "random":
        raise UsageError("--prune auto needs scores to choose P; the random selection has none")
    net = masked_network(engine, tuple(layers), layer_regex)
    rng = np.random.default_rng(seed)
    if selection in ("contribution", "integrated") or with_activations:
        logits, signed, activations = contributions(net, x, targets, with_activations)
    else:
        logits, signed, activations = net.logits(x, net.ones(len(x))), [], []
    targets = logits.argmax(axis=1) if targets is None else np.asarray(targets)
    if selection == "random":
        masks = random_selection(net.layers, len(x), prune, rng)
        return Pathway(net, masks, prune, selection, logits, activations, targets)
    if selection == "integrated":
        signed = integrated_contributions(net, x, targets)
    if selection == "learned":
        scores = learned_gates(net, x, logits, iterations=iterations, init=gate_init, rng=rng)
    else:
        # the arrays are ours: no copy; the layers on every core
        scores = in_parallel(lambda s: np.abs(s, out=s), signed, [s.size for s in signed])
    if max_change is not None:
        prune, masks = largest_faithful_prune(net, x, scores, logits, targets, max_change,
                                              per_layer)
    else:
        masks, _ = select(scores, prune, per_layer)
    return Pathway(net, masks, prune, selection, logits, activations, targets)


def pathway_gradient(pathway: Pathway, x: np.ndarray,
                     targets: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(d logit_c / d x with the pathway's masks fixed, the masked network's logits); the
    targets default to the pathway's own."""
    net = pathway.network
    targets = pathway.targets if targets is None else targets
    return net.input_gradient(x, net.engine.seed(targets), pathway.masks)


@method("pathway", picks_target=True)
def pathway(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None, *,
            prune_percent: float | str | None = None, keep: float | None = None,
            selection: str = "contribution", layers: Sequence[str] = RELU_FAMILY,
            layer_regex: str | None = None, per_layer: bool = False,
            seed: int = 0) -> Attribution:
    """Raw, signed C x H x W maps; extras report the pathway's size, the P used and the output
    change. A pathway that changes the output by more than half warns: the map then explains
    a network that no longer predicts what the model predicts (try --prune auto)."""
    net = masked_network(engine, tuple(layers), layer_regex)
    prune = resolve_prune_percent(prune_percent, keep)
    one_graph = in_graph.wanted(engine.device) and \
        in_graph.fits(net, x, selection, prune, per_layer)
    if one_graph or host_route.fits(selection, prune, per_layer):
        # One run where scoring, selection and the masked gradient never leave the device, or
        # the host route: no keep masks between the passes either way.
        run = in_graph.run_in_one_graph if one_graph else host_route.run_on_host
        maps, logits, masked_logits, kept = run(net, x, targets, prune)
        found = Pathway(net, [], prune, selection, logits,
                        targets=logits.argmax(axis=1) if targets is None else targets)
        kept_percent = 100.0 * (kept / net.neurons)
    else:
        found = critical_pathway(engine, x, targets, prune_percent=prune, selection=selection,
                                 layers=layers, layer_regex=layer_regex, per_layer=per_layer,
                                 seed=seed)
        maps, masked_logits = pathway_gradient(found, x)
        kept_percent = [100.0 * found.kept_fraction(i) for i in range(len(x))]
    change = output_change(found.logits, masked_logits, np.asarray(found.targets))
    if (change > WARN_CHANGE).any():
        worst = int(np.argmax(change))
        fixed = isinstance(found.prune_percent, float)
        warnings.warn(f"pathway: at P = {found.prune_percent_of(worst):g} the output changes by "
                      f"{100 * change[worst]:.0f}% (over {100 * WARN_CHANGE:.0f}%); the map "
                      "explains a network that no longer predicts like the model"
                      + (": try --prune auto" if fixed else ": no P kept it within the bound "
                         "(neurons with zero contribution, such as ReLU6 units clipped at 6, "
                         "are pruned at every P)"), PathwayChangeWarning, stacklevel=2)
    extras = [{"prune_percent": found.prune_percent_of(i), "selection": selection,
               "layers": len(found.layers), "neurons": found.network.neurons,
               "kept_percent": float(kept_percent[i]),
               "output_change": float(change[i])} for i in range(len(x))]
    return Attribution(maps, extras, logits=found.logits)
