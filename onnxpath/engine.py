"""One gradient engine per normalised model: builds gradient graphs once, reuses sessions.

Every method asks the engine for logits and for gradients of `sum(seed * logits)` with respect
to the input and, after surgery, mask tensors. The seed is a graph input, so one session serves
every target class and every batch element.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import onnx
from onnx import helper

from .autodiff import SEED, grad_name, gradient_graph
from .autodiff.rules import Rule
from .autodiff.walk import prune_unused, value_infos
from .external import has_external_data, restore_references, with_weights_loaded
from .model import ModelInfo
from .runtime import make_session

T = TypeVar("T")


def cut_at(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are `outputs`, unused nodes dropped."""
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    infos = value_infos(model)
    del cut.graph.output[:]
    for name in outputs:
        elem, shape = infos.get(name, (onnx.TensorProto.FLOAT, None))
        cut.graph.output.append(helper.make_tensor_value_info(name, elem, shape))
    return prune_unused(cut)


def overrides_key(overrides: Mapping[str, Rule] | None) -> tuple:
    return tuple(sorted((op, f"{fn.__module__}.{fn.__qualname__}")
                        for op, fn in (overrides or {}).items()))


class GradientEngine:
    """Sessions for the forward pass and for gradient graphs of one model, built lazily."""

    def __init__(self, info: ModelInfo, device: str = "cpu", threads: int | None = None):
        self.info = info
        self.device = device
        self.threads = threads
        self._forward = None
        self._gradients: dict[tuple, tuple] = {}
        self._derived: dict[Hashable, object] = {}

    @property
    def input_name(self) -> str:
        return self.info.input_name

    @property
    def num_classes(self) -> int:
        shape = value_infos(self.info.proto).get(self.info.logits, (0, None))[1]
        if not shape or not isinstance(shape[-1], int):
            raise ValueError(f"the class dimension of '{self.info.logits}' is not static")
        return shape[-1]

    def seed(self, targets) -> np.ndarray:
        """The one-hot seed that selects each example's target logit."""
        if not hasattr(self, "_classes"):
            self._classes = self.num_classes
        return one_hot(targets, self._classes)

    def _session(self, model: onnx.ModelProto):
        return make_session(model, self.device, self.threads, self.info.folder)

    def logits(self, x: np.ndarray, feeds: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        if self._forward is None:
            self._forward = self._session(cut_at(self.info.proto, [self.info.logits]))
        return self._forward.run(None, {self.input_name: x, **(feeds or {})})[0]

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """Something built once per key from this engine, typically an engine over a rewritten
        model (surgery), so that its sessions live as long as this engine's."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]  # type: ignore[return-value]

    def rewritten(self, info: ModelInfo, kind: type[GradientEngine] | None = None) \
            -> GradientEngine:
        """An engine over another model (e.g. this one after surgery), same device and threads."""
        return (kind or GradientEngine)(info, self.device, self.threads)

    def gradient_model(self, wrt: Sequence[str], overrides: Mapping[str, Rule] | None = None,
                       extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
        """The gradient graph. Weights kept in external data files are read for the build
        (rules may need their values) and left as references in the result."""
        proto = self.info.proto
        external = has_external_data(proto) and self.info.folder is not None
        source = with_weights_loaded(proto, self.info.folder) if external else proto
        model = gradient_graph(source, self.info.logits, list(wrt), overrides, extra_outputs)
        return restore_references(model, proto) if external else model

    def gradients(self, x: np.ndarray, seed: np.ndarray, wrt: Sequence[str] | None = None,
                  feeds: Mapping[str, np.ndarray] | None = None,
                  overrides: Mapping[str, Rule] | None = None,
                  extra_outputs: Sequence[str] = (),
                  fetch: Sequence[str] | None = None) -> tuple[np.ndarray, dict, dict]:
        """(logits, {wrt name: d(seed·logits)/d wrt}, {extra output: value}).

        `fetch` names the `wrt` tensors and extra outputs this call wants (default: all). The
        session stays the one built for (wrt, overrides, extra_outputs), so passes that need
        different outputs of the same graph share it.
        """
        wrt = tuple(wrt or (self.input_name,))
        key = (wrt, overrides_key(overrides), tuple(extra_outputs))
        if key not in self._gradients:
            model = self.gradient_model(wrt, overrides, extra_outputs)
            self._gradients[key] = (self._session(model), model)
        session, _ = self._gradients[key]
        wanted = set(wrt) | set(extra_outputs) if fetch is None else set(fetch)
        grad_of = [w for w in wrt if w in wanted]
        extra_of = [e for e in extra_outputs if e in wanted]
        names = [self.info.logits, *(grad_name(w) for w in grad_of), *extra_of]
        values = session.run(names, {self.input_name: x, SEED: seed.astype(x.dtype),
                                     **(feeds or {})})
        grads = dict(zip(grad_of, values[1:1 + len(grad_of)], strict=True))
        extras = dict(zip(extra_of, values[1 + len(grad_of):], strict=True))
        return values[0], grads, extras


def one_hot(targets: Sequence[int], classes: int, dtype=np.float32) -> np.ndarray:
    seed = np.zeros((len(targets), classes), dtype=dtype)
    seed[np.arange(len(targets)), list(targets)] = 1.0
    return seed
