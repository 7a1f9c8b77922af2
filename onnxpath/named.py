"""Models with several inputs, or attributed at a tensor inside the graph (`wrt`).

The caller gives a dict of named arrays (or one array for the first input); inputs it leaves
out get documented defaults: a name containing `mask` gets ones (nothing masked), one
containing `type` or `segment` gets zeros (one segment). When the attributed tensor is inside
the graph (the embedding output of a text model), its value comes from one forward run of the
original model. Each example is then attributed on its own, its other inputs riding along as
the engines' side inputs (tiled over the rows each method runs), so the methods see one float
tensor, as for any model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from onnx import helper

from .errors import InputError, UsageError
from .model import data_inputs, declared_shape
from .wrt import embedding_table

DEFAULT_ONES = ("mask",)
DEFAULT_ZEROS = ("type", "segment")


def feeds_for(explainer, x) -> dict[str, np.ndarray]:
    """Every input of the original model, batched and in its declared dtype."""
    inputs = data_inputs(explainer.source)
    by_name = {i.name: i for i in inputs}
    given = dict(x) if isinstance(x, Mapping) else {inputs[0].name: x}
    unknown = [k for k in given if k not in by_name]
    if unknown:
        raise InputError(f"unknown input name(s) {', '.join(unknown)}; the model's inputs are "
                         f"{', '.join(by_name)}")
    feeds = {}
    for name, value in given.items():
        value = np.asarray(value)
        if value.ndim == len(declared_shape(by_name[name])) - 1:
            value = value[None]
        dtype = helper.tensor_dtype_to_np_dtype(by_name[name].type.tensor_type.elem_type)
        feeds[name] = value.astype(dtype, copy=False)
    first = next(iter(feeds.values()))
    for name, value in by_name.items():
        if name in feeds:
            continue
        lowered = name.lower()
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        rank = len(declared_shape(value))
        if any(word in lowered for word in DEFAULT_ONES) and rank == first.ndim:
            feeds[name] = np.ones(first.shape, dtype)
        elif any(word in lowered for word in DEFAULT_ZEROS) and rank == first.ndim:
            feeds[name] = np.zeros(first.shape, dtype)
        else:
            raise InputError(f"input '{name}' is missing (give it in the .npz or dict of "
                             "inputs); only attention masks and token types have defaults")
    sizes = {len(v) for v in feeds.values()}
    if len(sizes) != 1:
        raise InputError(f"the inputs disagree on the batch size: "
                         f"{ {k: v.shape for k, v in feeds.items()} }")
    return feeds


def wrt_values(explainer, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The attributed tensor's value, from one run of the original model."""
    if explainer.wrt is None:
        return np.ascontiguousarray(feeds[explainer.input_name], dtype=np.float32)
    if not hasattr(explainer, "_wrt_session"):
        from .engine import cut_at
        from .runtime import make_session
        model = cut_at(explainer.source, [explainer.wrt])
        folder = explainer.path.parent if explainer.path is not None else None
        explainer._wrt_session = make_session(model, explainer.device, explainer.threads,
                                              folder)
    session = explainer._wrt_session
    names = {i.name for i in session.get_inputs()}
    value = session.run([explainer.wrt], {k: v for k, v in feeds.items() if k in names})[0]
    return np.ascontiguousarray(value, dtype=np.float32)


def per_example(explainer, feeds: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {name: feeds[name][i:i + 1] for name in explainer.side_inputs}


def predict(explainer, x) -> np.ndarray:
    if explainer._direct:
        raise RuntimeError("named.predict re-entered")
    feeds = feeds_for(explainer, x)
    values = wrt_values(explainer, feeds)
    parts = []
    explainer._direct = True
    try:
        for i in range(len(values)):
            explainer._side = per_example(explainer, feeds, i)
            parts.append(explainer.predict(values[i:i + 1]))
    finally:
        explainer._direct, explainer._side = False, {}
    return np.concatenate(parts)


def text_defaults(explainer, options: dict) -> dict:
    """Attributing an embedding output: the pad token's embedding is the baseline, and tokens
    are the features of the surrogate methods and occlusion."""
    table = embedding_table(explainer.source, explainer.wrt) if explainer.wrt else None
    if table is None:
        return options
    options = dict(options)
    if options.get("baseline") is None:
        if not 0 <= explainer.pad_id < len(table):
            raise UsageError(f"pad token id {explainer.pad_id} is outside the embedding "
                             f"table ({len(table)} rows)")
        options["baseline"] = table[explainer.pad_id].astype(np.float32)
    options.setdefault("segments", "rows")
    return options


def attribute(explainer, x, method: str, target, fallback, tokens, **options):
    from .explainer import Explanation
    start = time.perf_counter()
    feeds = feeds_for(explainer, x)
    values = wrt_values(explainer, feeds)
    count = len(values)
    targets = [None] * count if target is None else \
        list(np.broadcast_to(np.asarray(target), (count,)))
    options = text_defaults(explainer, options)
    results = []
    explainer._direct = True
    try:
        for i in range(count):
            explainer._side = per_example(explainer, feeds, i)
            results.append(explainer.attribute(values[i:i + 1], method, targets[i], fallback,
                                               **options))
    finally:
        explainer._direct, explainer._side = False, {}
    first = results[0]
    if tokens is not None and len(tokens) != count:
        raise UsageError(f"{len(tokens)} token lists for {count} examples")
    return Explanation(first.method, np.concatenate([r.maps for r in results]),
                       np.concatenate([r.targets for r in results]),
                       np.concatenate([r.logits for r in results]),
                       np.concatenate([r.probs for r in results]),
                       [e for r in results for e in r.extras],
                       (time.perf_counter() - start) * 1000,
                       np.concatenate([r.class_logits for r in results]), explainer.wrt, tokens,
                       explainer.feature_names)


