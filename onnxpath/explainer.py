"""The public entry point: `Explainer(path).attribute(x, method=..., target=...)`."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff import missing_rules
from onnxpath.engine.batching import fastest_batch
from onnxpath.engine.cache import SessionCache, bytes_digest, entry_key, file_digest
from onnxpath.engine.gradient import GradientEngine
from onnxpath.errors import (
    InputError,
    NotDifferentiableError,
    UnsupportedOpError,
    UsageError,
    stage,
)
from onnxpath.explanation import Explanation, softmax
from onnxpath.intake.batchless import with_batch_axis
from onnxpath.intake.bfloat16 import bfloat16_as_float32
from onnxpath.intake.cut import default_input
from onnxpath.intake.folder import model_file
from onnxpath.intake.model import (
    Intake,
    ModelInfo,
    data_inputs,
    declared_shape,
    load_model,
    normalise,
)
from onnxpath.intake.wrt import embedding_defaults
from onnxpath.methods import METHODS, Attribution, options_for, resolve_call, resolve_method
from onnxpath.ort.sessions import make_session, providers_for, run_session

INTEGER_KINDS = "iub"
PRECISIONS = ("float32", "model")  # of a 16-bit model's gradient graph; the first is the default


class Explainer:
    """Explains one ONNX model. Engines (and their sessions) are built once per input shape.

    `output` names the output to explain (default: the rule in intake/heads.py); `wrt` the
    tensor to attribute (default: the input, or the first float tensor computed from an
    integer input); `target_index` one element of the output per example (i, j, ...), and
    `region` (an H×W mask) the pixels a segmentation output's class logits are summed over.
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, device: str = "cpu",
                 threads: int | None = None, keep_probabilities: bool = False,
                 cache: bool | str | os.PathLike | SessionCache = True,
                 output: str | None = None, wrt: str | None = None,
                 target_index: tuple[int, ...] | None = None,
                 region: np.ndarray | None = None,
                 feature_names: list[str] | None = None,
                 provider_options: dict[str, str] | None = None, precision: str | None = None):
        """`cache`: keep built sessions on disk (True: the default folder, see `cache.py`; a
        path or a SessionCache: that folder; False: build in every process).
        `provider_options`: ONNX Runtime options of the device's provider (gpu_mem_limit, ...).
        `precision`: where a model computes in float16 or bfloat16, its gradients are computed
        in "float32" (the default: far closer to float64 at little cost) or in the "model"'s
        own types."""
        if precision not in (None, *PRECISIONS):
            raise UsageError(f"unknown precision '{precision}'; choose from "
                             f"{', '.join(PRECISIONS)}")
        self.precision = precision or PRECISIONS[0]
        providers_for(device)  # an unknown device or a missing CUDA provider: say so now
        self.provider_options = dict(provider_options) if provider_options else None
        stage(f"loading the model {model if not isinstance(model, onnx.ModelProto) else ''}")
        # A folder (a Hugging Face Optimum export) names its model.onnx (intake/folder.py).
        self.path = None if isinstance(model, onnx.ModelProto) else model_file(model)
        self.cache = (cache if isinstance(cache, SessionCache) else None if cache is False
                      else SessionCache() if cache is True else SessionCache(cache))
        # The weights file lies beside the cache's entries; without a cache it is this
        # process's own, removed at exit (nothing read from or left in the cache folder).
        self.proto = model if isinstance(model, onnx.ModelProto) else load_model(
            self.path, None if self.cache is None else self.cache.folder / "weights",
            private=self.cache is None)
        self.proto = bfloat16_as_float32(self.proto)  # ORT's CPU provider has no bfloat16 math
        # A model without a batch dim gets a fixed batch of 1 (intake/batchless.py)
        self.proto, self.batchless = with_batch_axis(self.proto)
        self.device = device
        self.threads = threads
        self.keep_probabilities = keep_probabilities
        self._digest: str | None = None
        self.target_index = None if target_index is None else tuple(int(i) for i in
                                                                      target_index)
        region_key = None if region is None else tuple(map(tuple, np.asarray(region) > 0))
        self.intake = Intake(output, wrt, "elements" if self.target_index is not None else
                             "region" if region is not None else None, region_key)
        self.inputs = data_inputs(self.proto)
        primary = next((i for i in self.inputs if i.name == wrt), self.inputs[0]) \
            if self.inputs else None
        self.input_name = primary.name if primary is not None else None
        self.input_shape = declared_shape(primary) if primary is not None else ()
        self.input_dtype = primary.type.tensor_type.elem_type if primary is not None else None
        self._engines: dict[tuple, GradientEngine] = {}
        self._prefixes: dict[tuple, object] = {}
        self.feature_names = feature_names  # tables: names of the input's columns
        self.pad_id = 0  # text: the token whose embedding is the default baseline

    def intake_options(self) -> dict:
        """The constructor arguments that chose the model's ends (output, wrt, target_index,
        region): what another process needs to build the same Explainer."""
        region = self.intake.region
        options = {"output": self.intake.output, "wrt": self.intake.wrt,
                   "target_index": self.target_index,
                   "region": None if region is None else np.asarray(region, dtype=bool)}
        if self.precision != PRECISIONS[0]:  # only then: the default keeps resume keys as they were
            options["precision"] = self.precision
        return options

    def check_differentiable(self) -> None:
        """Refuse, before any input is read, a model whose logits path lacks gradient rules
        (or that has no float tensor to differentiate)."""
        if not hasattr(self, "_not_differentiable"):  # shape inference: once per explainer
            stage("checking the gradient rules of the model")
            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            info = normalise(proto, None, self.keep_probabilities, self.intake)
            self._not_differentiable = None
            missing = missing_rules(info.proto, info.logits, [info.input_name])
            if missing:
                self._not_differentiable = UnsupportedOpError(missing)
            elif info.input_name == info.raw_input and self.input_dtype is not None and \
                    np.dtype(helper.tensor_dtype_to_np_dtype(self.input_dtype)).kind \
                    in INTEGER_KINDS:
                self._not_differentiable = NotDifferentiableError(
                    f"the input '{self.input_name}' is an integer tensor and no float tensor "
                    "computed from it reaches the output; gradient methods cannot apply: "
                    "rerun with --fallback occlusion (or -m occlusion, rise), or name a float "
                    "tensor with --wrt")
        if self._not_differentiable is not None:
            raise self._not_differentiable

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model insists on, or None when its batch dim is dynamic."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) else None

    def engine(self, shape: tuple[int, ...],
               shapes: Mapping[str, tuple[int, ...]] | None = None) -> GradientEngine:
        """The engine for inputs of `shape` (and other inputs of `shapes`, by name)."""
        others = tuple(sorted((k, tuple(v[1:])) for k, v in (shapes or {}).items()))
        key = (tuple(shape[1:]), others)
        if key not in self._engines:
            stage(f"normalising the model for inputs of shape {tuple(shape)}")
            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            identity = (self.model_digest(), tuple(shape[1:]), others, self.keep_probabilities,
                        self.intake.key(), self.precision)
            # Shapes probed in an ONNX Runtime run (intake/probe.py) are kept with the sessions.
            note_key = None if not self.cache else entry_key(
                ("probed-shapes", *identity), (self.fixed_batch,), "any", [])
            memo = (self.cache.load_note(note_key) if note_key else None) or {}
            known = "probe" in memo
            info: ModelInfo = normalise(proto, tuple(shape), self.keep_probabilities,
                                        self.intake, dict(shapes or {}), memo)
            if note_key and not known and "probe" in memo:
                self.cache.save_note(note_key, memo)
            info.path = self.path
            self._engines[key] = GradientEngine(info, self.device, self.threads,
                                                identity if self.cache else None, self.cache,
                                                self.provider_options, self.precision)
        return self._engines[key]

    def model_digest(self) -> str:
        """sha256 of the model file (or of the in-memory model's bytes): the disk cache's key."""
        if self._digest is None:
            self._digest = (bytes_digest(self.proto.SerializeToString()) if self.path is None
                            else self.cache.digest(self.path) if self.cache
                            else file_digest(self.path))
        return self._digest

    def as_batch(self, x: np.ndarray) -> np.ndarray:
        """A batch of the model's input (its own dtype: float32, or integers rounded)."""
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
        return as_dtype(x, self.input_dtype)

    def prepare(self, inputs) -> tuple[np.ndarray, dict[str, np.ndarray], GradientEngine]:
        """(the attributed tensor for a batch, the other inputs the model needs, the engine).

        `inputs` is the model input's array, or a dict of arrays by input name (an `.npz`);
        inputs not given get the defaults documented in intake/cut.py."""
        arrays = dict(inputs) if isinstance(inputs, Mapping) else {self.input_name: inputs}
        unknown = [k for k in arrays if k not in {i.name for i in self.inputs}]
        if unknown:
            raise InputError(f"no model input named {', '.join(map(repr, unknown))}; the "
                             f"model's inputs are {', '.join(i.name for i in self.inputs)}")
        if self.input_name not in arrays:
            raise InputError(f"no array for the model input '{self.input_name}'")
        x = self.as_batch(arrays.pop(self.input_name))
        others = {}
        for value in self.inputs:
            if value.name == self.input_name:
                continue
            dtype = value.type.tensor_type.elem_type
            if value.name in arrays:
                array = np.asarray(arrays[value.name])
                rank = len(value.type.tensor_type.shape.dim)
                array = array[None] if array.ndim == rank - 1 else array
                if len(array) != len(x):
                    array = np.broadcast_to(array, (len(x), *array.shape[1:]))
                others[value.name] = as_dtype(array, dtype)
            else:
                others[value.name] = default_input(value.name, x, value)
        engine = self.engine(x.shape, {k: v.shape for k, v in others.items()})
        info = engine.info
        feeds = {self.input_name: x, **others}
        if info.prefix is not None:
            key = (tuple(x.shape[1:]), tuple(sorted((k, v.shape[1:]) for k, v in others.items())))
            if key not in self._prefixes:
                self._prefixes[key] = make_session(info.prefix, self.device, self.threads,
                                                   info.folder)
            session = self._prefixes[key]
            wanted = {i.name for i in info.prefix.graph.input}
            x = run_session(session, [info.input_name],
                            {k: v for k, v in feeds.items() if k in wanted}, self.device)[0]
        context = {name: feeds[name] for name in info.context}
        return np.ascontiguousarray(x), context, engine

    def predict(self, inputs) -> np.ndarray:
        """Logits (the differentiated tensor) for a batch or a single example."""
        x, context, engine = self.prepare(inputs)
        return self._per_batch(x, context, engine, lambda part: engine.logits(x[part]))

    def parts(self, n: int, context: dict) -> list[slice]:
        """Slices of the batch run together: one example at a time when other inputs ride
        along (methods repeat rows of x; the engine repeats a one-row context to match)."""
        step = 1 if context else self.fixed_batch or n
        return [slice(i, i + step) for i in range(0, n, step)]

    def _per_batch(self, x: np.ndarray, context: dict, engine: GradientEngine, fn):
        results = []
        for part in self.parts(len(x), context):
            engine.bind({k: v[part] for k, v in context.items()})
            results.append(fn(part))
        return np.concatenate(results) if isinstance(results[0], np.ndarray) else results

    def fastest_batch(self, shape: tuple[int, ...]) -> int:
        """The forward batch size with the lowest time per input for inputs of `shape` (a
        batch's shape; its first dim is ignored), measured once (`batching.fastest_batch`)."""
        shape = tuple(shape)
        return fastest_batch(self.engine((1, *shape[1:])), shape[1:])

    def resolve_fallback(self, method: str, fallback: str | None) -> tuple[str, dict]:
        """(method to run, note): `fallback`, a forward-only method, replaces a gradient method
        when the model has ops without gradient rules; the note says so (empty otherwise)."""
        if fallback is None or not METHODS[method].needs_gradients:
            return method, {}
        with contextlib.suppress(UsageError):  # else the message below lists the choices
            fallback = resolve_method(fallback)  # Captum's Occlusion, any case
        if fallback not in METHODS or METHODS[fallback].needs_gradients:
            forward_only = [m for m, fn in METHODS.items() if not fn.needs_gradients]
            raise UsageError(f"--fallback must be a forward-only method "
                             f"({', '.join(forward_only)}), got '{fallback}'")
        try:
            self.check_differentiable()
        except NotDifferentiableError as err:
            return fallback, {"fallback_from": method, "fallback_reason": str(err)}
        return method, {}

    def attribute(self, x, method: str = "gradient",
                  target: int | list[int] | np.ndarray | None = None,
                  fallback: str | None = None, tokens: list[list[str]] | None = None,
                  **options) -> Explanation:
        """Attribute the target logit (default: the argmax) of each example in `x` (an array
        for the model's input, or a dict of arrays by input name).

        `fallback` names a forward-only method (occlusion, rise) to run instead when `method`
        needs gradients and the model has ops without gradient rules; the extras then carry
        `fallback_from` and `fallback_reason`, and the result's `method` is the fallback.
        `method` is any name the CLI takes (any case; Captum's: `saliency` is gradient with
        absolute=True unless `absolute` is given); the result carries the registered name.
        """
        method, options = resolve_call(method, options)
        method, note = self.resolve_fallback(method, fallback)
        if METHODS[method].needs_gradients:
            self.check_differentiable()
        x, context, engine = self.prepare(x)
        stage(f"running {method}")
        start = time.perf_counter()
        fn = METHODS[method]
        info = engine.info
        kwargs = options_for(fn, embedding_defaults(self.proto, info.wrt, self.pad_id, options))
        if target is None and self.target_index is not None:
            target = flat_index(self.target_index, info.element_shape)
        if target is None and info.kind == "regression":
            target = 0

        def run(part: slice, part_targets) -> Attribution:
            engine.bind({k: v[part] for k, v in context.items()})
            return fn(engine, x[part], part_targets, **kwargs)

        parts = self.parts(len(x), context)
        if target is None and fn.picks_target:
            # The gradient run finds the predicted class itself: no separate forward pass.
            results = [run(part, None) for part in parts]
            logits = np.concatenate([r.logits for r in results])
            targets = finite_argmax(logits)
            if not np.array_equal(targets, logits.argmax(axis=1)):  # NaN/Inf took the argmax
                results = [run(part, targets[part]) for part in parts]
        else:
            classes = self.class_count(engine) if target is not None else None
            logits = None if classes else self._per_batch(
                x, context, engine, lambda part: engine.logits(x[part]))
            targets = self.resolve_targets(target, logits, classes, len(x))
            results = [run(part, targets[part]) for part in parts]
            if logits is None:  # the method's own run of the model serves the prediction
                logits = (np.concatenate([r.logits for r in results])
                          if all(r.logits is not None for r in results) else self._per_batch(
                              x, context, engine, lambda part: engine.logits(x[part])))
        # float32 maps, float64 for a float64 input (a float64 model runs in float64)
        maps = results[0].maps if len(results) == 1 else np.concatenate([r.maps for r in results])
        maps = maps.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
        extras = [{**e, **note} for r in results for e in r.extras]
        # A layer method's maps have an inner tensor's shape: extras' `wrt` names it.
        wrt = next((w for w in [e.pop("wrt", None) for e in extras] if w), info.wrt)
        flag_all_zero(method, maps, extras)
        flag_non_finite(method, maps, logits, targets, extras)
        for e in extras:  # the model tensor whose elements were differentiated
            e.setdefault("differentiated", info.differentiated)
        rows = np.arange(len(x))
        if info.kind != "classes":
            probs = np.full(len(x), np.nan)
        elif info.probabilities:
            probs = logits[rows, targets].astype(np.float64)
        else:
            probs = softmax(logits.astype(np.float64))[rows, targets]
        elapsed = (time.perf_counter() - start) * 1000
        return Explanation(method, maps, targets, logits[rows, targets], probs, extras, elapsed,
                           logits, wrt, info.kind, info.probabilities, tokens,
                           self.feature_names, info.element_shape)

    @staticmethod
    def class_count(engine: GradientEngine) -> int | None:
        """The number of classes when the model declares it; None sends `attribute` to a
        forward pass first (to find the argmax, or the count). Only plain classifiers with
        no other inputs riding along take the shortcut."""
        if engine.info.kind != "classes" or engine.info.context:
            return None
        try:
            return engine.num_classes
        except ValueError:
            return None

    @staticmethod
    def resolve_targets(target, logits: np.ndarray | None, classes: int | None = None,
                        count: int | None = None) -> np.ndarray:
        """One class index per example: the argmax, or `target` broadcast to the batch (whose
        size and class count come from `logits`, or from `classes` when no logits are at hand:
        an explicit target needs no forward pass)."""
        if target is None:
            return finite_argmax(logits)
        if logits is not None:
            count, classes = logits.shape[0], logits.shape[1]
        targets = np.broadcast_to(np.asarray(target, dtype=np.int64), (count,)).copy()
        if targets.min() < 0 or targets.max() >= classes:
            raise UsageError(f"target {target} is out of range: the model has "
                             f"{classes} classes")
        return targets


class AllZeroMapWarning(UserWarning):
    """A map with no non-zero value: the explained output does not depend on the attributed
    tensor through any differentiable path (an integer or quantized path, a cut graph), or a
    forward-only method saw no change."""


def flag_all_zero(method: str, maps: np.ndarray, extras: list[dict]) -> None:
    """An all-zero map is never handed on silently: `extras["all_zero"]` marks it and one
    warning says how many there are."""
    zero = [i for i in range(len(maps)) if not np.any(maps[i])]
    for i in zero:
        extras[i]["all_zero"] = True
    if zero:
        warnings.warn(f"{method}: {len(zero)} of {len(maps)} maps are all zero; the output "
                      "does not reach the attributed tensor through differentiable ops "
                      "(an integer or quantized path?), or nothing the method changed moved "
                      "it", AllZeroMapWarning, stacklevel=3)


def finite_argmax(logits: np.ndarray) -> np.ndarray:
    """Each row's largest finite value (the predicted class; NaN and Inf are not one)."""
    logits = np.asarray(logits)
    if np.isfinite(logits).all():
        return logits.argmax(axis=1)
    return np.where(np.isfinite(logits), logits, -np.inf).argmax(axis=1)


class NonFiniteWarning(UserWarning):
    """NaN or Inf in a map, or in the model's output: a map is then not written (the record
    says why), while other output elements that are not finite leave the map intact."""


def flag_non_finite(method: str, maps: np.ndarray, logits: np.ndarray, targets: np.ndarray,
                    extras: list[dict]) -> None:
    """Never a silent NaN: `extras["non_finite"]` counts a map's NaN/Inf values,
    `extras["non_finite_outputs"]` the model's output elements (logits) that are not finite,
    and one warning says so. An output that is not finite outside the explained element does
    not stop the example: its map is the gradient of a finite value."""
    bad_maps, bad_outputs = 0, 0
    for i in range(len(maps)):
        count = int(np.size(maps[i]) - np.count_nonzero(np.isfinite(maps[i])))
        if count:
            extras[i]["non_finite"] = count
            bad_maps += 1
        row = np.asarray(logits[i])
        outside = int(row.size - np.count_nonzero(np.isfinite(row)))
        if outside:
            extras[i]["non_finite_outputs"] = outside
            bad_outputs += 1
    if bad_maps:
        warnings.warn(f"{method}: {bad_maps} of {len(maps)} maps hold NaN or Inf values",
                      NonFiniteWarning, stacklevel=3)
    if bad_outputs:
        finite = all(np.isfinite(logits[i, int(t)]) for i, t in enumerate(targets))
        where = "outside the explained elements" if finite else "in the explained elements"
        warnings.warn(f"{method}: the model's output holds NaN or Inf {where} for "
                      f"{bad_outputs} of {len(maps)} inputs", NonFiniteWarning, stacklevel=3)


def as_dtype(x: np.ndarray, elem_type: int | None) -> np.ndarray:
    """`x` in an ONNX element type: float32 by default, integers rounded and clipped."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)) if elem_type else None
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind == "f":
        return np.ascontiguousarray(x, dtype=np.float32 if dtype is None else dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.rint(np.asarray(x, np.float64)), info.min, info.max) \
            if np.asarray(x).dtype.kind == "f" else x
    return np.ascontiguousarray(x, dtype=dtype)


def flat_index(index: tuple[int, ...], shape: tuple) -> int:
    """`--target-index i,j,...` as a column of the flattened output (one example's shape)."""
    if len(index) != len(shape):
        raise UsageError(f"--target-index has {len(index)} values; the output has "
                         f"{len(shape)} dims per example {tuple(shape)}")
    if not all(isinstance(d, int) for d in shape):
        raise UsageError(f"--target-index needs the output's shape, which stays dynamic: "
                         f"{tuple(shape)}")
    if any(not 0 <= i < d for i, d in zip(index, shape, strict=True)):
        raise UsageError(f"--target-index {','.join(map(str, index))} is out of range for "
                         f"the output's shape {tuple(shape)} per example")
    return int(np.ravel_multi_index(index, shape))
