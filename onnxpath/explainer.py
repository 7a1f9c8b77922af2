"""The public entry point: `Explainer(path).attribute(x, method=..., target=...)`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .autodiff import missing_rules
from .batching import fastest_batch
from .cache import SessionCache, bytes_digest, file_digest
from .engine import GradientEngine
from .errors import InputError, UnsupportedOpError, UsageError
from .methods import METHODS, Attribution, options_for
from .model import ModelInfo, data_inputs, declared_shape, find_logits, load_model, normalise
from .runtime import providers_for


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Explanation:
    """One method's result for a batch: raw maps plus what the prediction was."""

    method: str
    maps: np.ndarray  # (N, *input shape)
    targets: np.ndarray  # (N,) class indices
    logits: np.ndarray  # (N,) target logit
    probs: np.ndarray  # (N,) target softmax probability
    extras: list[dict] = field(default_factory=list)
    time_ms: float = 0.0
    class_logits: np.ndarray | None = None  # (N, classes): every class's logit


class Explainer:
    """Explains one ONNX model. Engines (and their sessions) are built once per input shape."""

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, device: str = "cpu",
                 threads: int | None = None, keep_probabilities: bool = False,
                 cache: bool | str | os.PathLike | SessionCache = True):
        """`cache`: keep built sessions on disk (True: the default folder, see `cache.py`; a
        path or a SessionCache: that folder; False: build in every process)."""
        providers_for(device)  # an unknown device or a missing CUDA provider: say so now
        self.path = None if isinstance(model, onnx.ModelProto) else Path(model)
        self.proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
        self.device = device
        self.threads = threads
        self.keep_probabilities = keep_probabilities
        self.cache = (cache if isinstance(cache, SessionCache) else None if cache is False
                      else SessionCache() if cache is True else SessionCache(cache))
        self._digest: str | None = None
        inputs = data_inputs(self.proto)
        self.input_name = inputs[0].name if inputs else None
        self.input_shape = declared_shape(inputs[0]) if inputs else ()
        self.input_dtype = inputs[0].type.tensor_type.elem_type if inputs else None
        self._engines: dict[tuple, GradientEngine] = {}

    def check_differentiable(self) -> None:
        """Refuse, before any input is read, a model whose logits path lacks gradient rules."""
        if not hasattr(self, "_missing_rules"):  # shape inference: once per explainer
            logits, _ = find_logits(self.proto, self.keep_probabilities)
            self._missing_rules = missing_rules(self.proto, logits, [self.input_name])
        if self._missing_rules:
            raise UnsupportedOpError(self._missing_rules)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model insists on, or None when its batch dim is dynamic."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) else None

    def engine(self, shape: tuple[int, ...]) -> GradientEngine:
        key = tuple(shape[1:])
        if key not in self._engines:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            info: ModelInfo = normalise(proto, tuple(shape), self.keep_probabilities)
            info.path = self.path
            identity = (self.model_digest(), tuple(shape[1:]), self.keep_probabilities)
            self._engines[key] = GradientEngine(info, self.device, self.threads,
                                                identity if self.cache else None, self.cache)
        return self._engines[key]

    def model_digest(self) -> str:
        """sha256 of the model file (or of the in-memory model's bytes): the disk cache's key."""
        if self._digest is None:
            self._digest = (bytes_digest(self.proto.SerializeToString()) if self.path is None
                            else self.cache.digest(self.path) if self.cache
                            else file_digest(self.path))
        return self._digest

    def as_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        rank = len(self.input_shape)
        if x.ndim == rank - 1:
            x = x[None]
        if x.ndim != rank:
            raise InputError(f"input has shape {x.shape}; the model expects "
                             f"{tuple(d if isinstance(d, int) else '?' for d in self.input_shape)}")
        for got, want in zip(x.shape[1:], self.input_shape[1:], strict=True):
            if isinstance(want, int) and got != want:
                raise InputError(f"input has shape {x.shape[1:]} per example; the model expects "
                                 f"{tuple(self.input_shape[1:])}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (the differentiated tensor) for a batch or a single example."""
        x = self.as_batch(x)
        return self._per_batch(x, lambda part: self.engine(part.shape).logits(part))

    def fastest_batch(self, shape: tuple[int, ...]) -> int:
        """The forward batch size with the lowest time per input for inputs of `shape` (a
        batch's shape; its first dim is ignored), measured once (`batching.fastest_batch`)."""
        shape = tuple(shape)
        return fastest_batch(self.engine((1, *shape[1:])), shape[1:])

    def _per_batch(self, x: np.ndarray, fn):
        step = self.fixed_batch or len(x)
        parts = [fn(x[i:i + step]) for i in range(0, len(x), step)]
        return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else parts

    def resolve_fallback(self, method: str, fallback: str | None) -> tuple[str, dict]:
        """(method to run, note): `fallback`, a forward-only method, replaces a gradient method
        when the model has ops without gradient rules; the note says so (empty otherwise)."""
        if fallback is None or not METHODS[method].needs_gradients:
            return method, {}
        if fallback not in METHODS or METHODS[fallback].needs_gradients:
            forward_only = [m for m, fn in METHODS.items() if not fn.needs_gradients]
            raise UsageError(f"--fallback must be a forward-only method "
                             f"({', '.join(forward_only)}), got '{fallback}'")
        try:
            self.check_differentiable()
        except UnsupportedOpError as err:
            return fallback, {"fallback_from": method, "fallback_reason": str(err)}
        return method, {}

    def attribute(self, x: np.ndarray, method: str = "gradient",
                  target: int | list[int] | np.ndarray | None = None,
                  fallback: str | None = None, **options) -> Explanation:
        """Attribute the target logit (default: the argmax) of each example in `x`.

        `fallback` names a forward-only method (occlusion, rise) to run instead when `method`
        needs gradients and the model has ops without gradient rules; the extras then carry
        `fallback_from` and `fallback_reason`, and the result's `method` is the fallback.
        """
        if method not in METHODS:
            raise UsageError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        method, note = self.resolve_fallback(method, fallback)
        x = self.as_batch(x)
        start = time.perf_counter()
        fn = METHODS[method]
        kwargs = options_for(fn, options)
        step = self.fixed_batch or len(x)
        parts = [slice(i, i + step) for i in range(0, len(x), step)]

        def run(part: slice, part_targets) -> Attribution:
            return fn(self.engine(x[part].shape), x[part], part_targets, **kwargs)

        if target is None and fn.picks_target:
            # The gradient run finds the predicted class itself: no separate forward pass.
            results = [run(part, None) for part in parts]
            logits = np.concatenate([r.logits for r in results])
            targets = logits.argmax(axis=1)
        else:
            classes = self.class_count(x)
            logits = None if classes and target is not None else self.predict(x)
            targets = self.resolve_targets(target, logits, classes, len(x))
            results = [run(part, targets[part]) for part in parts]
            if logits is None:  # the method's own run of the model serves the prediction
                logits = (np.concatenate([r.logits for r in results])
                          if all(r.logits is not None for r in results) else self.predict(x))
        maps = np.concatenate([r.maps for r in results])
        extras = [{**e, **note} for r in results for e in r.extras]
        rows = np.arange(len(x))
        probs = softmax(logits.astype(np.float64))[rows, targets]
        elapsed = (time.perf_counter() - start) * 1000
        return Explanation(method, maps, targets, logits[rows, targets], probs, extras, elapsed,
                           logits)

    def class_count(self, x: np.ndarray) -> int | None:
        """The number of classes when the model declares it; None sends `attribute` to a
        forward pass first (to find the argmax, or the count)."""
        try:
            return self.engine(x[:self.fixed_batch or len(x)].shape).num_classes
        except ValueError:
            return None

    @staticmethod
    def resolve_targets(target, logits: np.ndarray | None, classes: int | None = None,
                        count: int | None = None) -> np.ndarray:
        """One class index per example: the argmax, or `target` broadcast to the batch (whose
        size and class count come from `logits`, or from `classes` when no logits are at hand:
        an explicit target needs no forward pass)."""
        if target is None:
            return logits.argmax(axis=1)
        if logits is not None:
            count, classes = logits.shape[0], logits.shape[1]
        targets = np.broadcast_to(np.asarray(target, dtype=np.int64), (count,)).copy()
        if targets.min() < 0 or targets.max() >= classes:
            raise UsageError(f"target {target} is out of range: the model has "
                             f"{classes} classes")
        return targets
