"""One gradient engine per normalised model: builds gradient graphs once, reuses sessions.

Every method asks the engine for logits and for gradients of `sum(seed * logits)` with respect
to the input and, after surgery, mask tensors. The seed is a graph input, so one session serves
every target class and every batch element.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import TypeVar

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff import SEED, grad_name, gradient_graph
from onnxpath.autodiff.rules import RULES, Rule
from onnxpath.autodiff.walk import prune_unused, value_infos
from onnxpath.engine.cache import SessionCache, entry_key
from onnxpath.engine.fixed_batch import (
    fixed_rows,
    gradients_in_chunks,
    logits_in_chunks,
    needs_chunks,
)
from onnxpath.engine.seeds import seed_from_argmax
from onnxpath.errors import OnnxPathError
from onnxpath.intake.model import ModelInfo
from onnxpath.ort.external import has_file_data, restore_references, with_weights_loaded
from onnxpath.ort.sessions import (
    PROTOBUF_LIMIT,
    make_session,
    open_optimised,
    providers_for,
    run_session,
)
from onnxpath.ort.timing import timed, timed_call
from onnxpath.ort.weights import stores_of

T = TypeVar("T")

# The recipes whose graphs run a backward pass: many short kernels a run, so their sessions
# spin briefly between kernels (`spin_entries` in ort/sessions.py).
BACKWARD_RECIPES = frozenset({"gradients", "contribution-taps", "pathway-in-one-graph"})


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


def rules_key() -> tuple:
    """The gradient rules in force: a rule swapped at run time (a test, a plugin) changes the
    graph without changing the source files that `cache.code_digest` reads."""
    return overrides_key(RULES)


def nameable(recipe: tuple) -> bool:
    """Whether a recipe names its graph across processes: a lambda or a local function has no
    stable name (two lambdas share `<lambda>`), so such overrides are not cached on disk."""
    return "<" not in repr(recipe)


class GradientEngine:
    """Sessions for the forward pass and for gradient graphs of one model, built lazily.

    `identity` names the model and how this engine derived it (digest of the model file, input
    shape, surgery options); with a `cache`, sessions are then kept on disk under a key made of
    the identity and the session's recipe (see `cache.py`). Without an identity nothing is
    cached on disk.
    """

    def __init__(self, info: ModelInfo, device: str = "cpu", threads: int | None = None,
                 identity: tuple | None = None, cache: SessionCache | None = None,
                 provider_options: dict[str, str] | None = None, precision: str = "float32"):
        self.info = info
        # "float32": a float16/bfloat16 model's gradient graph computes in float32 (Cast up at
        # the boundary, see GraphBuilder.widen); "model": in the model's own types.
        self.precision = precision
        self.device = device
        self.threads = threads
        self.provider_options = provider_options
        self.identity = identity
        self.cache = cache
        self._forward = None
        self._gradients: dict[tuple, object] = {}
        self._derived: dict[Hashable, object] = {}
        self._sessions: dict[tuple, object] = {}
        self._resident: dict[int, tuple] = {}
        # The model's other inputs (attention mask, ...) for the examples being run, one row
        # or one per row of x; shared with the engines derived from this one (surgery).
        self.context: dict[str, np.ndarray] = {}

    def bind(self, context: Mapping[str, np.ndarray]) -> None:
        """Set the other inputs for the next runs (in place: derived engines see it too)."""
        self.context.clear()
        self.context.update(context)

    def context_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """The bound context for `rows` rows of x: a one-row context is repeated."""
        return {k: np.repeat(v, rows, axis=0) if len(v) == 1 and rows != 1 else v
                for k, v in self.context.items()}

    @property
    def input_name(self) -> str:
        return self.info.input_name

    @property
    def num_classes(self) -> int:
        if not hasattr(self, "_classes"):  # shape inference: once per engine
            shape = value_infos(self.info.proto).get(self.info.logits, (0, None))[1]
            if not shape or not isinstance(shape[-1], int):
                raise ValueError(f"the class dimension of '{self.info.logits}' is not static")
            self._classes = shape[-1]
        return self._classes

    @property
    def seed_dtype(self) -> np.dtype:
        """The logits' numpy type, which the seed input takes: a float16 model may take a
        float32 input and still give float16 logits."""
        if not hasattr(self, "_seed_dtype"):
            elem = value_infos(self.info.proto).get(self.info.logits, (0, None))[0]
            self._seed_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem \
                else np.dtype(np.float32)
        return self._seed_dtype

    def as_input(self, x: np.ndarray) -> np.ndarray:
        """`x` in the attributed input's float type: a method's float32 rows (occlusion's
        fill, IG's path points) run on a float64 model as float64."""
        if not hasattr(self, "_input_dtype"):
            elem = value_infos(self.info.proto).get(self.input_name, (0, None))[0]
            self._input_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem \
                else None
        wanted = self._input_dtype
        if wanted is None or wanted.kind != "f" or x.dtype == wanted or x.dtype.kind != "f":
            return x
        return x.astype(wanted)

    def seed(self, targets) -> np.ndarray | None:
        """The one-hot seed that selects each example's target logit; None (no targets) stays
        None, which `gradients` reads as "each row's largest logit"."""
        if targets is None:
            return None
        return one_hot(targets, self.num_classes)

    def _cache_for(self, recipe: tuple) -> SessionCache | None:
        if self.cache is None or self.identity is None or not nameable(recipe):
            return None
        if has_file_data(self.info.proto):  # the optimised copy would duplicate the weights
            return None
        return self.cache

    def _make(self, model: onnx.ModelProto, save_optimised=None, brief_spin: bool = False):
        with timed(f"creating an ONNX Runtime session ({len(model.graph.node)} nodes)"):
            return make_session(model, self.device, self.threads, self.info.folder,
                                save_optimised=save_optimised,
                                provider_options=self.provider_options, brief_spin=brief_spin)

    def _session(self, recipe: tuple, build: Callable[[], onnx.ModelProto]):
        """The session for `recipe`, from the disk cache when it holds one; `build` makes the
        model only when the session has to be created from scratch."""
        build = timed_call(f"building the {recipe[0]} graph", build)
        spin = recipe[0] in BACKWARD_RECIPES
        make = partial(self._make, brief_spin=spin)
        cache = self._cache_for(recipe)
        if cache is None:
            return make(build())
        rules = rules_key()
        if not nameable(rules):
            return make(build())
        key = entry_key((type(self).__qualname__, *self.identity), (*recipe, rules),
                        self.device, providers_for(self.device, self.provider_options))
        stores = stores_of(self.info.proto)
        if stores:  # weights in the shared store (ort/weights.py): the entry is the graph alone
            return cache.graph_session(key, build, make, stores[0])
        session = cache.load(key, lambda path: open_optimised(path, self.device, self.threads,
                                                              self.provider_options, spin))
        if session is not None:
            return session
        model = build()
        if model.ByteSize() > PROTOBUF_LIMIT:
            return make(model)
        tmp = cache.temporary(key)
        try:
            session = make(model, save_optimised=tmp)
        except OnnxPathError:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        if tmp is not None:
            cache.commit(key, tmp)
        return session

    def resident(self, array: np.ndarray):
        """`array` as an OrtValue on the device, made once per array object: constants fed on
        every run (the all-ones masks) then stay on the GPU. On the CPU, the array itself."""
        if self.device != "cuda":
            return array
        entry = self._resident.get(id(array))
        if entry is None or entry[0] is not array:
            import onnxruntime as ort
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0)
            entry = self._resident[id(array)] = (array, value)
        return entry[1]

    def run(self, session, names: Sequence[str] | None, feeds: Mapping) -> list[np.ndarray]:
        return run_session(session, names, feeds, self.device)

    def logits(self, x: np.ndarray, feeds: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        x = self.as_input(x)
        size = fixed_rows(self.info.input_shape)
        if needs_chunks(size, len(x)):  # a fixed batch: chunks of its size (fixed_batch.py)
            return logits_in_chunks(self.logits, x, feeds, size)
        if self._forward is None:
            self._forward = self._session(
                ("forward", self.info.logits),
                lambda: cut_at(self.info.proto, [self.info.logits]))
        return self.run(self._forward, [self.info.logits],
                        {self.input_name: x, **self.context_feeds(len(x)), **(feeds or {})})[0]

    def session_for(self, recipe: tuple, build: Callable[[], onnx.ModelProto]):
        """The session for a graph derived from this model (`build` makes it), built once per
        `recipe` and disk-cached under it like the engine's own sessions."""
        if recipe not in self._sessions:
            self._sessions[recipe] = self._session(recipe, build)
        return self._sessions[recipe]

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """Something built once per key from this engine, typically an engine over a rewritten
        model (surgery), so that its sessions live as long as this engine's."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]  # type: ignore[return-value]

    def rewritten(self, info: ModelInfo, kind: type[GradientEngine] | None = None,
                  tag: Hashable | None = None) -> GradientEngine:
        """An engine over another model (e.g. this one after surgery), same device and threads.
        `tag` names the rewrite (its options); without one the new engine is not disk-cached."""
        identity = None if tag is None or self.identity is None else (*self.identity, tag)
        engine = (kind or GradientEngine)(info, self.device, self.threads, identity, self.cache,
                                          self.provider_options, self.precision)
        engine.context = self.context
        return engine

    def gradient_model(self, wrt: Sequence[str], overrides: Mapping[str, Rule] | None = None,
                       extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
        """The gradient graph. Weights kept in external data files are read for the build
        (rules may need their values) and left as references in the result."""
        proto = self.info.proto
        external = has_file_data(proto) and self.info.folder is not None
        source = with_weights_loaded(proto, self.info.folder) if external else proto
        model = gradient_graph(source, self.info.logits, list(wrt), overrides, extra_outputs,
                               widen=self.precision == "float32")
        return restore_references(model, proto) if external else model

    def gradients(self, x: np.ndarray, seed: np.ndarray | None,
                  wrt: Sequence[str] | None = None,
                  feeds: Mapping[str, np.ndarray] | None = None,
                  overrides: Mapping[str, Rule] | None = None,
                  extra_outputs: Sequence[str] = (),
                  fetch: Sequence[str] | None = None) -> tuple[np.ndarray, dict, dict]:
        """(logits, {wrt name: d(seed·logits)/d wrt}, {extra output: value}).

        `seed` None differentiates each row's largest logit, chosen inside the same run
        (`seed_from_argmax`). `fetch` names the `wrt` tensors and extra outputs this call wants
        (default: all). The session stays the one built for (wrt, overrides, extra_outputs),
        so passes that need different outputs of the same graph share it.
        """
        wrt = tuple(wrt or (self.input_name,))
        x = self.as_input(x)
        size = fixed_rows(self.info.input_shape)
        if needs_chunks(size, len(x)):  # a fixed batch: chunks of its size (fixed_batch.py)
            if seed is None:  # padding rows must not pick a class: the argmax, then seeds
                seed = self.seed(self.logits(x, feeds).argmax(axis=1))
            return gradients_in_chunks(
                lambda xs, seeds, fs: self.gradients(xs, seeds, wrt, fs, overrides,
                                                     extra_outputs, fetch),
                x, seed, feeds, size)
        argmax = seed is None
        key = (wrt, overrides_key(overrides), tuple(extra_outputs), argmax)
        if key not in self._gradients:
            def build() -> onnx.ModelProto:
                model = self.gradient_model(wrt, overrides, extra_outputs)
                return seed_from_argmax(model, self.info.logits, self.num_classes) \
                    if argmax else model
            self._gradients[key] = self._session(("gradients", self.info.logits, *key,
                                                  self.precision), build)
        session = self._gradients[key]
        wanted = set(wrt) | set(extra_outputs) if fetch is None else set(fetch)
        grad_of = [w for w in wrt if w in wanted]
        extra_of = [e for e in extra_outputs if e in wanted]
        names = [self.info.logits, *(grad_name(w) for w in grad_of), *extra_of]
        inputs = {self.input_name: x, **self.context_feeds(len(x)), **(feeds or {})}
        if not argmax:
            inputs[SEED] = seed.astype(self.seed_dtype)
        values = self.run(session, names, inputs)
        grads = dict(zip(grad_of, values[1:1 + len(grad_of)], strict=True))
        extras = dict(zip(extra_of, values[1 + len(grad_of):], strict=True))
        return values[0], grads, extras


def one_hot(targets: Sequence[int], classes: int, dtype=np.float32) -> np.ndarray:
    seed = np.zeros((len(targets), classes), dtype=dtype)
    seed[np.arange(len(targets)), list(targets)] = 1.0
    return seed
