"""Layer and neuron attributions: an inner tensor of the model as the attributed tensor
(Captum's Layer* methods) or as the explained output (Captum's Neuron* methods).

- A *layer* is any float tensor of the normalised model, named by itself or by the node that
  computes it (the names `onnxpath inspect` lists). A layer attribution has the layer's shape,
  one example at a time, not the input's; `extras["layer"]` names the tensor and `extras["wrt"]`
  tells the explainer that the map is attributed to it.
- A *neuron* is one element of a layer (an index within one example's layer tensor, no batch
  index). Explaining it is explaining `--output LAYER --target-index INDEX`: the layer,
  flattened, stands for the logits, and the seed selects the neuron's column.

Three derived graphs serve them, each built once per engine and layer:
- the model's own gradient graph taken with respect to the layer, which also returns the
  layer's value (layer gradient, gradient x activation, conductance, internal influence);
- the model with the layer cut into a graph input (`layer_input_engine`): layer integrated
  gradients feeds the interpolated activations there while every branch that bypasses the
  layer still reads the example itself, as Captum's forward hook does;
- the model whose logits are the flattened layer (`neuron_engine`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff.walk import FLOAT_TYPES, value_infos
from onnxpath.engine.gradient import GradientEngine, cut_at, one_hot
from onnxpath.errors import UsageError
from onnxpath.intake.cut import cut_at as cut_into_input
from onnxpath.methods._common import _pad, chunk_size, fixed_batch, row_chunks, single_pass
from onnxpath.methods.gradcam import find_layer

NEURONS = "onnxpath_neuron/flat"  # the flattened layer, the neuron engine's logits


def resolve_layer(model: onnx.ModelProto, layer: str,
                  uncut: onnx.ModelProto | None = None) -> str:
    """The float tensor `layer` names: a tensor, or a node (its first output). `uncut` is the
    model before its attributed tensor became an input: the node that computed it (a text
    model's embedding lookup) names it too."""
    infos = value_infos(model)
    nodes = list(model.graph.node)
    tensors = {o for n in nodes for o in n.output} | {i.name for i in model.graph.input}
    name = layer if layer in tensors else next(
        (n.output[0] for n in [*nodes, *(uncut.graph.node if uncut else ())]
         if n.name == layer and n.output[0] in tensors), None)
    if name is None:
        raise UsageError(f"--layer '{layer}' is neither a tensor nor a node of the model "
                         "(onnxpath inspect lists its layers; a text model's layer must come "
                         "after the embedding)")
    if infos.get(name, (onnx.TensorProto.FLOAT,))[0] not in FLOAT_TYPES:
        raise UsageError(f"--layer '{layer}' is not a float tensor; gradients need one")
    return name


def required_layer(engine: GradientEngine, layer: str | None, method: str = "") -> str:
    """The tensor a layer method attributes to: `layer`, or with None or "auto" Grad-CAM's
    (the last 4-D map before global pooling)."""
    if layer is None or layer == "auto":
        try:
            return find_layer(engine.info.proto, None)
        except UsageError as err:
            raise UsageError(f"{method or 'this method'} attributes to a layer: {err} "
                             "(onnxpath inspect lists the layers)") from err
    return resolve_layer(engine.info.proto, layer, engine.info.uncut)


def layer_shape(engine: GradientEngine, name: str) -> tuple[int, ...]:
    """One example's shape of the layer (static after normalisation)."""
    shape = value_infos(engine.info.proto).get(name, (0, None))[1]
    if shape is None or not all(isinstance(d, int) for d in shape[1:]):
        raise UsageError(f"the shape of layer '{name}' stays unknown ({shape}); a layer "
                         "attribution needs it")
    return tuple(shape[1:])


def parse_neuron(neuron, shape: tuple[int, ...]) -> tuple[int, ...]:
    """`--neuron 3,10,12` (or a tuple, or one int for a 1-D layer) as an index into one
    example's layer of `shape`, checked."""
    if isinstance(neuron, str):
        try:
            index = tuple(int(part) for part in neuron.replace(" ", "").split(",") if part)
        except ValueError as err:
            raise UsageError(f"--neuron takes comma-separated integers, e.g. 3,10,12, got "
                             f"'{neuron}'") from err
    else:
        index = tuple(int(i) for i in np.atleast_1d(neuron))
    if len(index) != len(shape):
        raise UsageError(f"--neuron has {len(index)} values; the layer has {len(shape)} dims "
                         f"per example {shape} (no batch index)")
    if any(not 0 <= i < d for i, d in zip(index, shape, strict=True)):
        raise UsageError(f"--neuron {','.join(map(str, index))} is out of range for the "
                         f"layer's shape {shape} per example")
    return index


def layer_pass(engine: GradientEngine, xs: np.ndarray, seed: np.ndarray | None, layer: str,
               feeds: dict | None = None, values: bool = True):
    """(logits, d(seed . logits)/d layer, the layer's value or None) for one chunk of rows;
    `feeds` (a cut layer's values) are padded to a fixed model batch like the rows."""
    fixed = fixed_batch(engine) or 0
    padded = {k: _pad(v, fixed) for k, v in (feeds or {}).items()}
    wanted = values and layer != engine.input_name
    logits, grads, extras = single_pass(engine, xs, seed, wrt=[layer], feeds=padded,
                                        extra_outputs=[layer] if wanted else ())
    value = extras.get(layer, xs if values else None)
    return logits, grads[layer], value


def path_rows(engine: GradientEngine, layer: str, total: int, batch: int | None,
              rows_x: Callable[[slice], np.ndarray], rows_seed: Callable[[slice], np.ndarray],
              rows_feed: Callable[[slice], np.ndarray] | None = None,
              values: bool = False) -> Iterator[tuple[slice, np.ndarray, np.ndarray | None]]:
    """(rows, layer gradients, layer values) for `total` (example, step) rows, `batch` rows per
    ONNX Runtime run, so memory is bounded by the chunk, never by steps x examples."""
    for part in row_chunks(total, chunk_size(engine, batch)):
        feeds = None if rows_feed is None else {layer: rows_feed(part)}
        _, grad, value = layer_pass(engine, rows_x(part), rows_seed(part), layer, feeds, values)
        yield part, grad, value


def layer_values(engine: GradientEngine, xs: np.ndarray, layer: str,
                 batch: int | None = None) -> np.ndarray:
    """The layer's value for many rows (a forward-only graph ending at the layer)."""
    if layer == engine.input_name:
        return xs
    session = engine.session_for(("layer-values", layer),
                                 lambda: cut_at(engine.info.proto, [layer]))
    fixed = fixed_batch(engine)
    parts = []
    for part in row_chunks(len(xs), fixed or batch):
        rows = part.stop - part.start
        feeds = {engine.input_name: _pad(xs[part], fixed or 0),
                 **{k: _pad(v, fixed or 0) for k, v in engine.context_feeds(rows).items()}}
        parts.append(engine.run(session, [layer], feeds)[0][:rows])
    return np.concatenate(parts)


def layer_input_engine(engine: GradientEngine, layer: str) -> GradientEngine:
    """An engine over the model with `layer` cut into a graph input: gradients and logits
    then take the layer's value from the feeds. The model's own inputs stay inputs, so every
    branch that bypasses the layer still reads the example."""
    def build() -> GradientEngine:
        proto = engine.info.proto
        cut = cut_into_input(proto, layer, value_infos(proto))
        kept = {i.name for i in cut.graph.input}
        cut.graph.input.extend(i for i in proto.graph.input if i.name not in kept)
        info = dataclasses.replace(engine.info, proto=cut)
        return engine.rewritten(info, tag=("layer-input", layer))
    if layer == engine.input_name:
        return engine
    return engine.derived(("layer-input", layer), build)


def neuron_engine(engine: GradientEngine, layer: str) -> GradientEngine:
    """An engine whose logits are the flattened layer: column k is neuron k (row-major), as
    `--output LAYER --target-index` flattens an output."""
    def build() -> GradientEngine:
        proto = onnx.ModelProto()
        proto.CopyFrom(engine.info.proto)
        proto.graph.node.append(helper.make_node("Flatten", [layer], [NEURONS],
                                                 name=f"{NEURONS}/node", axis=1))
        info = dataclasses.replace(engine.info, proto=proto, logits=NEURONS, kind="elements",
                                   element_shape=layer_shape(engine, layer))
        return engine.rewritten(info, tag=("neuron", layer))
    return engine.derived(("neuron", layer), build)


@dataclasses.dataclass
class Neuron:
    """One element of a layer to explain instead of a logit."""

    layer: str
    index: tuple[int, ...]
    engine: GradientEngine  # its logits are the flattened layer
    column: int  # the neuron's column among them

    def targets(self, rows: int) -> np.ndarray:
        return np.full(rows, self.column, dtype=np.int64)

    def seed(self, rows: int) -> np.ndarray:
        return one_hot(self.targets(rows), self.engine.num_classes)

    def extras(self, values: np.ndarray) -> list[dict]:
        return [{"layer": self.layer, "neuron": list(self.index), "neuron_value": float(v)}
                for v in values]


def layer_and_neuron(engine: GradientEngine, layer: str | None,
                     neuron) -> tuple[str | None, Neuron | None]:
    """(the layer tensor, or None; the neuron to explain, or None) from the `layer` and
    `neuron` options. A neuron is an element of a layer, so it needs one."""
    name = None if layer is None else required_layer(engine, layer)
    if neuron is None:
        return name, None
    if name is None:
        raise UsageError("--neuron names an element of a layer: give the layer with --layer")
    index = parse_neuron(neuron, layer_shape(engine, name))
    column = int(np.ravel_multi_index(index, layer_shape(engine, name)))
    return None, Neuron(name, index, neuron_engine(engine, name), column)


def layer_extras(layer: str, shape: tuple, rows: int, **per_row) -> list[dict]:
    """Each example's extras for a map attributed to `layer`: the tensor (`wrt` too, which the
    explainer hands on as the record's `wrt`), its shape, and any per-example values."""
    extras = [{"layer": layer, "layer_shape": list(shape), "wrt": layer} for _ in range(rows)]
    for key, values in per_row.items():
        for extra, value in zip(extras, values, strict=True):
            extra[key] = float(value)
    return extras


def neuron_gradient(engine: GradientEngine, x: np.ndarray,
                    neuron: Neuron) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(d neuron / d x, the model's logits, extras) in one pass: the neuron engine's graph
    also returns the model's logits, so a method that picks its target needs no other run."""
    flat, grads, extra = single_pass(neuron.engine, x, neuron.seed(len(x)),
                                     extra_outputs=[engine.info.logits])
    return (grads[neuron.engine.input_name], extra[engine.info.logits],
            neuron.extras(flat[:, neuron.column]))
