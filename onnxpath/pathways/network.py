"""Critical pathways (methods.md sections 1-3, 5, 7): contributions, selection, statistics.

A `MaskedNetwork` is a gradient engine over the model after `insert_masks`, plus its layers,
plus the engine of the unmodified model it came from. Three graphs serve the passes:
- scoring (section 2) runs a tap graph of the unmodified model: its gradient taken with respect
  to the chosen activations, whose outputs are a * d logit / d a (`contribution_taps`). That
  equals d logit / d mask at masks = 1, but no mask input breaks ONNX Runtime's blocked conv
  layout and the backward pass stops at the first activation;
- the pathway gradient runs the masked model's gradient with respect to the input alone, with
  the masks of Relu layers as additive gates before the Relu (`gate_relus`: same values, no
  mask multiply to break the blocked layout or to run backwards);
- the integrated variant and the learned gates run the masked model's gradient with respect to
  the masks (masks = alpha, or gates).
ONNX Runtime runs every node of a graph whatever is fetched, so each pass gets a graph that
computes only what it needs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from onnxpath.autodiff import SEED
from onnxpath.autodiff.relu_family import RELU_FAMILY
from onnxpath.engine.fixed_batch import fixed_rows, needs_chunks, taps_in_chunks
from onnxpath.engine.gradient import GradientEngine
from onnxpath.engine.seeds import seed_from_argmax
from onnxpath.errors import UsageError
from onnxpath.ort.sessions import run_session
from onnxpath.pathways.selection import gate_bits, in_parallel
from onnxpath.pathways.surgery import (
    MaskLayer,
    contribution_name,
    contribution_taps,
    gate_name,
    gate_relus,
    insert_masks,
)

DEFAULT_PRUNE_PERCENT = 85.0
DEFAULT_MAX_CHANGE_PERCENT = 15.0  # --prune auto: the authors' ~15% output change


@dataclass
class MaskedNetwork:
    """An engine over the masked model and the layers whose masks are its extra inputs."""

    engine: GradientEngine
    layers: list[MaskLayer]
    base: GradientEngine | None = None  # the unmodified model's engine (scoring taps)
    _ones: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)
    _gates: dict[int, list] = field(default_factory=dict, repr=False)
    _scores: dict[tuple, list[np.ndarray]] = field(default_factory=dict, repr=False)
    _marks: dict[int, list] = field(default_factory=dict, repr=False)

    @property
    def mask_names(self) -> list[str]:
        return [layer.mask for layer in self.layers]

    @property
    def input_name(self) -> str:
        return self.engine.input_name

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.engine.info.input_shape[0], int)

    @property
    def neurons(self) -> int:
        return sum(layer.size for layer in self.layers)

    def ones(self, n: int) -> list[np.ndarray]:
        """All-ones masks for a batch of n: the unmodified network. Cached; never write to them."""
        if n not in self._ones:
            self._ones[n] = [np.ones((n, *layer.shape), layer.dtype) for layer in self.layers]
        return self._ones[n]

    def feeds(self, masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Mask feeds, in each layer's own float type; the cached all-ones masks go as
        device-resident values on a GPU."""
        ones = {id(m) for n in self._ones.values() for m in n}
        return {layer.mask: self.engine.resident(m) if id(m) in ones
                else np.ascontiguousarray(m, layer.dtype)
                for layer, m in zip(self.layers, masks, strict=True)}

    def run(self, x: np.ndarray, seed: np.ndarray, masks: Sequence[np.ndarray],
            fetch: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(logits, fetched tensors): gradients by wrt name, or activations by tensor name."""
        logits, grads, extras = self.engine.gradients(
            x, seed, wrt=[self.input_name, *self.mask_names], feeds=self.feeds(masks),
            extra_outputs=[layer.tensor for layer in self.layers], fetch=fetch)
        return logits, {**grads, **extras}

    def logits(self, x: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
        """Forward pass only (its own light session): the masked network's logits."""
        return self.engine.logits(x, self.feeds(masks))

    def taps(self, x: np.ndarray, seed: np.ndarray | None,
             with_activations: bool = False) -> tuple[np.ndarray, list, list]:
        """(logits, a * d logit / d a per layer, activations or []) from the unmodified
        network's tap graph. `seed` None takes each row's predicted class, found in the run."""
        base = self.base or self.engine
        size = fixed_rows(base.info.input_shape)
        if needs_chunks(size, len(x)):  # a fixed batch: chunks of its size (fixed_batch.py)
            if seed is None:
                seed = base.seed(base.logits(x).argmax(axis=1))
            return taps_in_chunks(lambda xs, seeds: self.taps(xs, seeds, with_activations),
                                  x, seed, size)
        tensors = tuple(layer.tensor for layer in self.layers)
        extra = tensors if with_activations else ()
        argmax = seed is None

        def build():
            model = contribution_taps(base.gradient_model(tensors, extra_outputs=extra),
                                      tensors)
            return seed_from_argmax(model, base.info.logits, base.num_classes) if argmax \
                else model

        session = base.session_for(("contribution-taps", base.info.logits, tensors,
                                    with_activations, argmax), build)
        names = [base.info.logits, *(contribution_name(t) for t in tensors), *extra]
        inputs = {base.input_name: x}
        if not argmax:
            inputs[SEED] = seed.astype(base.seed_dtype)
        # Inputs that ride along (a text model's attention mask): those the graph still reads.
        wanted = {i.name for i in session.get_inputs()}
        inputs.update({k: v for k, v in base.context_feeds(len(x)).items() if k in wanted})
        k = len(tensors)
        values = self.tap_run(session, names, inputs, k) if base.device == "cpu" else \
            base.run(session, names, inputs)
        # Scores in float32 at least (a float16 model's taps are float16): selection ranks them.
        return values[0], [v.astype(np.float32, copy=False) for v in values[1:1 + k]], \
            values[1 + k:]

    def tap_run(self, session, names: list[str], inputs: dict, k: int) -> list[np.ndarray]:
        """The tap run on the CPU, its k score outputs written into the previous call's score
        arrays when no caller holds them any more: ResNet-50's 38 MB of fresh scores per call
        cost page faults (~7% of the run). Arrays still referenced (a caller kept its scores)
        are never overwritten: the run then allocates new ones."""
        key = (id(session), tuple(names))
        previous = self._scores.pop(key, None)  # claimed: another thread cannot reuse them too
        # References: the list holding it and getrefcount's argument; any more is a caller's.
        # (An array ONNX Runtime returned keeps the memory it wraps alive, its only owner.)
        reusable = previous is not None and all(
            sys.getrefcount(previous[i]) <= 2 and previous[i].flags.c_contiguous
            and previous[i].flags.writeable
            and len(previous[i]) == len(inputs[self.base_engine.input_name])
            for i in range(len(previous)))
        if not reusable:
            values = run_session(session, names, inputs)
        else:
            binding = session.io_binding()
            for name, value in inputs.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            scores = dict(zip(names[1:1 + k], previous, strict=True))
            for name in names:
                out = scores.get(name)
                if out is None:
                    binding.bind_output(name, "cpu")
                else:
                    binding.bind_output(name, "cpu", 0, out.dtype, list(out.shape),
                                        out.ctypes.data)
            session.run_with_iobinding(binding)
            fetched = binding.get_outputs()
            values = [scores[name] if name in scores else fetched[i].numpy()
                      for i, name in enumerate(names)]
        self._scores[key] = [values[i] for i in range(1, 1 + k)]
        return values

    @property
    def base_engine(self) -> GradientEngine:
        return self.base or self.engine

    def input_gradient(self, x: np.ndarray, seed: np.ndarray,
                       masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(d logit / d x, logits) of the masked network: its own graph, with respect to the
        input only (no mask gradients computed, no activations copied out). Binary (bool)
        masks run the gated graph (`gate_relus`): the same values, faster."""
        if not all(np.asarray(m).dtype == bool for m in masks):
            logits, grads, _ = self.engine.gradients(x, seed, wrt=[self.input_name],
                                                     feeds=self.feeds(masks))
            return grads[self.input_name], logits
        masks = [np.asarray(m) for m in masks]
        buffers = self.gate_buffers(len(x))
        # ResNet-50's 9.6 M gates: one pass per layer, the layers on every core (~10 -> ~5 ms)
        gates = in_parallel(lambda k: None if buffers[k] is None
                            else gate_bits(~masks[k], buffers[k]), range(len(masks)),
                            [m.size for m in masks])
        return self.gated_gradient(x, seed, gates, masks)

    def gated_gradient(self, x: np.ndarray, seed: np.ndarray,
                       gates: Sequence[np.ndarray | None],
                       keep: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """`input_gradient` on the gated graph: per layer, the bit patterns of its float32
        gates (`gate_bits`, for the layers with a buffer in `gate_buffers`) or, for the
        others, its keep mask."""
        feeds = {}
        for layer, gate, mask in zip(self.layers, gates, keep, strict=True):
            if gate is None:
                feeds[layer.mask] = np.asarray(mask, layer.dtype)
            else:
                feeds[gate_name(layer.tensor)] = gate.view(np.float32).astype(layer.dtype,
                                                                              copy=False)
        logits, grads, _ = self.gated().gradients(x, seed, wrt=[self.input_name], feeds=feeds)
        return grads[self.input_name], logits

    def gate_buffers(self, n: int) -> list[np.ndarray | None]:
        """Per layer, a uint32 gate buffer for a batch of n where the gated graph gates it (a
        Relu), else None. Reused by every call: fresh 40 MB of gates per ResNet-50 call cost
        page faults (a run reads its feeds before it returns, so the next call may overwrite
        them)."""
        if n not in self._gates:
            self._gates[n] = [np.empty((n, *layer.shape), np.uint32)
                              if layer.op_type == "Relu" else None for layer in self.layers]
        return self._gates[n]

    def claim_marks(self, n: int) -> list[np.ndarray | None]:
        """Bool buffers for a batch of n for the layers without gates (None for the others),
        reused across calls like the gates: taken from the network until `release_marks`
        puts them back, so that two threads never share them."""
        marks = self._marks.pop(n, None)
        if marks is None:
            marks = [None if gate is not None else np.empty((n, *layer.shape), bool)
                     for layer, gate in zip(self.layers, self.gate_buffers(n), strict=True)]
        return marks

    def release_marks(self, n: int, marks: list[np.ndarray | None]) -> None:
        self._marks[n] = marks

    def gated(self) -> GradientEngine:
        """An engine over the masked model with its Relu masks as additive gates."""
        blocked = self.engine.device == "cpu"  # (the blocked layout is the CPU's)

        def build() -> GradientEngine:
            proto = gate_relus(self.engine.info.proto, self.layers, blocked)
            return self.engine.rewritten(replace(self.engine.info, proto=proto),
                                         tag=("relu-gates", blocked))
        return self.engine.derived(("relu-gates",), build)


def gate_values(keep: np.ndarray) -> np.ndarray:
    """float32 gates for a keep mask: 0 where kept, -inf where pruned."""
    return gate_bits(~keep, np.empty(keep.shape, np.uint32)).view(np.float32)


def masked_network(engine: GradientEngine, layers: Sequence[str] = RELU_FAMILY,
                   layer_regex: str | None = None) -> MaskedNetwork:
    """The masked version of `engine`'s model, built once per layer choice and kept with it."""
    layers = tuple(layers)

    def build() -> MaskedNetwork:
        proto, masked = insert_masks(engine.info.proto, layers, layer_regex)
        # Everything else stays: names, and the path that external weights resolve against.
        return MaskedNetwork(engine.rewritten(replace(engine.info, proto=proto), tag=key), masked,
                             engine)

    key = ("pathway-masks", layers, layer_regex)
    return engine.derived(key, build)


def contributions(net: MaskedNetwork, x: np.ndarray, targets: Sequence[int] | None,
                  with_activations: bool = False) -> tuple[np.ndarray, list[np.ndarray], list]:
    """(logits, signed a * dy/da per layer shaped (N, *layer), activations or []).

    This is d y / d m at m = 1 for every neuron, in one backward pass of the tap graph.
    `targets` None scores each example's predicted class (read it from the logits).
    """
    return net.taps(x, None if targets is None else net.engine.seed(targets), with_activations)


def integrated_contributions(net: MaskedNetwork, x: np.ndarray, targets: Sequence[int],
                             steps: int = 10) -> list[np.ndarray]:
    """Signed mean over alpha = j/steps (j = 0..steps) of d y / d m_l at m_l = alpha, others 1.

    Section 5: each layer is scaled on its own, so each layer costs steps+1 gradient passes.
    With a dynamic batch the alphas of one example and layer go in one batched run.
    """
    alphas = np.arange(steps + 1, dtype=np.float32) / steps
    seeds = net.engine.seed(targets)
    scores = [np.zeros((len(x), *layer.shape), np.float32) for layer in net.layers]
    if net.dynamic_batch:
        batch = len(alphas)
        for i in range(len(x)):
            xs = np.repeat(x[i:i + 1], batch, axis=0)
            seed = np.repeat(seeds[i:i + 1], batch, axis=0)
            for k, layer in enumerate(net.layers):
                masks = list(net.ones(batch))
                masks[k] = np.broadcast_to(alphas.reshape(-1, *[1] * len(layer.shape)),
                                           (batch, *layer.shape))
                _, out = net.run(xs, seed, masks, [layer.mask])
                scores[k][i] = out[layer.mask].mean(axis=0)
    else:  # the model insists on its batch size: one run per alpha
        for k, layer in enumerate(net.layers):
            for alpha in alphas:
                masks = list(net.ones(len(x)))
                masks[k] = np.full((len(x), *layer.shape), alpha, np.float32)
                _, out = net.run(x, seeds, masks, [layer.mask])
                scores[k] += out[layer.mask] / len(alphas)
    return scores


def resolve_prune_percent(prune_percent: float | str | None, keep: float | None) -> float | str:
    """P from either --prune P or --keep K (P = 100 - K); both given must agree. `auto`
    (or `auto:T`, T in percent) asks for the largest P whose output change stays within T%
    (15 by default), chosen per input (see `auto_prune.py`); it comes back as `auto:T`."""
    if isinstance(prune_percent, str) and prune_percent.strip().lower().startswith("auto"):
        if keep is not None:
            raise UsageError(f"--prune {prune_percent} chooses P itself; leave out --keep")
        return f"auto:{auto_threshold(prune_percent) * 100:g}"
    if keep is not None:
        if prune_percent is not None and abs(float(prune_percent) + keep - 100.0) > 1e-9:
            raise UsageError(f"--prune {prune_percent} and --keep {keep} disagree; give one")
        prune_percent = 100.0 - keep
    try:
        prune_percent = DEFAULT_PRUNE_PERCENT if prune_percent is None else float(prune_percent)
    except ValueError as err:
        raise UsageError(f"--prune takes a percentage in [0, 100], auto or auto:T, got "
                         f"'{prune_percent}'") from err
    if not 0.0 <= prune_percent <= 100.0:
        raise UsageError(f"the prune percentage must lie in [0, 100], got {prune_percent}")
    return prune_percent


def auto_threshold(prune_percent: float | str | None) -> float | None:
    """The output-change bound of `auto` / `auto:T` as a fraction (T in percent, 15 by
    default: the authors choose P so that the output changes by about 15%); None for a fixed
    P."""
    if not (isinstance(prune_percent, str) and prune_percent.strip().lower().startswith("auto")):
        return None
    _, _, given = prune_percent.strip().partition(":")
    try:
        bound = float(given) if given else DEFAULT_MAX_CHANGE_PERCENT
    except ValueError:
        bound = -1.0
    if not 0.0 < bound <= 100.0:
        raise UsageError(f"--prune auto:T takes T, the largest output change allowed, in "
                         f"percent (0, 100], got '{prune_percent}'")
    return bound / 100.0


@dataclass
class Pathway:
    """A selected critical pathway for a batch: which neurons of which layers stay."""

    network: MaskedNetwork
    masks: list[np.ndarray]  # per layer, (N, *layer.shape) bool, True = kept
    prune_percent: float | np.ndarray  # (N,) when chosen per input (--prune auto)
    selection: str
    logits: np.ndarray  # (N, classes) of the original network
    activations: list[np.ndarray] = field(default_factory=list)  # unmasked, when asked for
    targets: np.ndarray | None = None  # (N,) the classes the pathway was selected for

    @property
    def layers(self) -> list[MaskLayer]:
        return self.network.layers

    def prune_percent_of(self, i: int = 0) -> float:
        return float(np.broadcast_to(self.prune_percent, (len(self.logits),))[i])

    def kept_fraction(self, i: int = 0) -> float:
        return float(sum(np.count_nonzero(m[i]) for m in self.masks) / self.network.neurons)


def layer_statistics(pathway: Pathway, i: int = 0) -> list[dict]:
    """One row per layer for example i: neurons, kept, kept %, dead % (zero activations in the
    original network; None when activations were not fetched)."""
    rows = []
    for k, layer in enumerate(pathway.layers):
        kept = int(np.count_nonzero(pathway.masks[k][i]))
        dead = None
        if pathway.activations:
            dead = 100.0 * np.count_nonzero(pathway.activations[k][i] == 0) / layer.size
        rows.append({"layer": layer.node, "op_type": layer.op_type, "neurons": layer.size,
                     "kept": kept, "kept_percent": 100.0 * kept / layer.size,
                     "dead_percent": dead})
    return rows


def jaccard(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> float:
    """|A ∩ B| / |A ∪ B| of two selections of one example (per-layer mask lists)."""
    both = sum(int(np.logical_and(a, b).sum()) for a, b in zip(first, second, strict=True))
    either = sum(int(np.logical_or(a, b).sum()) for a, b in zip(first, second, strict=True))
    return both / either if either else 1.0


def dead_selected_fraction(masks: Sequence[np.ndarray],
                           activations: Sequence[np.ndarray]) -> float:
    """Fraction of selected neurons that are dead (activation 0) in the original network."""
    kept = sum(int(m.sum()) for m in masks)
    dead = sum(int(np.logical_and(m, a == 0).sum()) for m, a in
               zip(masks, activations, strict=True))
    return dead / kept if kept else 0.0


def output_change(original_logits: np.ndarray, masked_logits: np.ndarray,
                  targets: Sequence[int]) -> np.ndarray:
    """|p_c(masked) - p_c(original)| / p_c(original) on softmax probabilities, per example."""
    rows = np.arange(len(targets))
    p = probabilities(original_logits)[rows, targets]
    q = probabilities(masked_logits)[rows, targets]
    return np.abs(q - p) / p


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax in float64: only for reporting and for the learned-gate targets."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
