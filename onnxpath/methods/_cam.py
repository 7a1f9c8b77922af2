"""What the CAM family shares: the layer a class activation map is read at, the layer's values
and gradients, forward runs of the network's tail from that layer, and the last steps from a
layer-sized map to an input-sized attribution.

Every CAM is a map over the layer's h x w grid, `cam = sum_k w_k A_k` for most of them, with
per-channel weights `w_k` that each paper defines in its own way (HiResCAM and LayerCAM weigh
each element instead). The map is upsampled bilinearly to the input's H x W as Grad-CAM's paper
does (F.interpolate, align_corners=False, which is also what OpenCV's cv2.resize computes on
float maps, pytorch-grad-cam's resize) and replicated across the input's C channels, so that
every method's maps share the input's shape (N x C x H x W, or N x H x W x C for a TensorFlow
export, whose layer is still N x K x h x w inside).

The maps are the raw CAMs: signed, not ReLU'd (the `relu` option, off by default as for
Captum's LayerGradCam) and not min-max scaled. pytorch-grad-cam returns ReLU'd, min-max-scaled
maps; `relu=True` followed by a per-image min-max gives exactly those.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxpath.autodiff.walk import value_infos
from onnxpath.engine.gradient import GradientEngine, cut_at
from onnxpath.errors import UsageError
from onnxpath.intake import cut
from onnxpath.methods import Attribution
from onnxpath.methods._common import bilinear_resize, fixed_batch, row_chunks, single_pass

GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")
SPATIAL_REDUCES = ("ReduceMean", "ReduceMax", "ReduceSum")
FLATTENS = ("Flatten", "Reshape")


def _spatial(shape) -> tuple | None:
    return tuple(shape[2:]) if shape is not None and len(shape) == 4 else None


def find_layer(model: onnx.ModelProto, layer: str | None = None) -> str:
    """The tensor a CAM looks at: `layer` (a tensor or node name), or else the input of the
    first node that collapses a 4-D map (global pooling, a spatial reduce, or a flatten). When
    that input is already 1 x 1, its producer's input is taken instead."""
    nodes = list(model.graph.node)
    tensors = {o for n in nodes for o in n.output} | {i.name for i in model.graph.input}
    if layer is not None:
        if layer in tensors:
            return layer
        by_name = [n.output[0] for n in nodes if n.name == layer]
        if by_name:
            return by_name[0]
        raise UsageError(f"--layer '{layer}' is neither a tensor nor a node of the model")
    infos = value_infos(model)
    producers = {o: n for n in nodes for o in n.output}
    for node in nodes:
        if not node.input:
            continue
        spatial = _spatial(infos.get(node.input[0], (0, None))[1])
        if spatial is None:
            continue
        out_shape = infos.get(node.output[0], (0, None))[1]
        collapses = (node.op_type in GLOBAL_POOLS or
                     (node.op_type in SPATIAL_REDUCES + FLATTENS and out_shape is not None and
                      (len(out_shape) < 4 or _spatial(out_shape) == (1, 1))))
        if not collapses:
            continue
        name = node.input[0]
        while spatial == (1, 1) and name in producers and producers[name].input:
            name = producers[name].input[0]
            spatial = _spatial(infos.get(name, (0, None))[1])
        if spatial is not None:
            return name
    raise UsageError("found no 4-D layer before a global pooling or flatten; pass --layer NAME")


def image_layer(engine: GradientEngine, x: np.ndarray, layer: str | None, what: str) -> str:
    """The layer for the CAM method `what` (`require_image`, then `find_layer`)."""
    require_image(engine, x, what)
    return find_layer(engine.info.proto, layer)


def require_image(engine: GradientEngine, x: np.ndarray, what: str) -> None:
    """The CAM method `what` needs an image model: a CAM is a map over a convolutional
    layer's spatial grid, and a table row or a token sequence has none (their 4-D tensors,
    such as attention scores, are no image grid). One UsageError line says so."""
    if x.ndim != 4:
        shape = " x ".join(str(d) for d in x.shape[1:])
        raise UsageError(f"{what} needs an image model with an N x C x H x W input; "
                         f"'{engine.input_name}' is {shape} per example (a table row or a "
                         "token sequence has no spatial layer): use gradient, "
                         "integrated-gradients, occlusion or kernel-shap")


def check_4d(name: str, value: np.ndarray, what: str) -> None:
    if value.ndim != 4:
        raise UsageError(f"{what} needs a 4-D (N, C, H, W) layer; '{name}' has shape "
                         f"{value.shape}")


def layer_gradients(engine: GradientEngine, x: np.ndarray, targets: np.ndarray | None,
                    name: str, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, d logit_target / d A, A) at the layer `name`, in one run (targets None: each
    row's predicted class)."""
    logits, grads, values = single_pass(engine, x, engine.seed(targets), wrt=[name],
                                        extra_outputs=[name])
    check_4d(name, grads[name], what)
    return logits, grads[name], values[name]


def layer_values(engine: GradientEngine, x: np.ndarray, name: str,
                 what: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, A): a forward run that also returns the layer, for the gradient-free CAMs
    (they then serve models whose ops lack gradient rules)."""
    session = engine.session_for(("cam-layer", engine.info.logits, name),
                                 lambda: cut_at(engine.info.proto, [engine.info.logits, name]))
    rows, fixed = len(x), fixed_batch(engine)
    feeds = {engine.input_name: pad_rows(x, fixed), **engine.context_feeds(len(x))}
    logits, values = engine.run(session, [engine.info.logits, name], feeds)
    check_4d(name, values, what)
    return logits[:rows], values[:rows]


def pad_rows(array: np.ndarray, rows: int | None) -> np.ndarray:
    """`array` with zero rows appended up to `rows` (a model exported with a fixed batch)."""
    if not rows or len(array) >= rows:
        return array
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def tail_model(engine: GradientEngine, name: str) -> onnx.ModelProto:
    """The network from the layer `name` to the logits: `name` is a graph input; the model
    input stays one where a branch bypasses the layer (a skip connection around it)."""
    proto = engine.info.proto
    return cut_at(cut.cut_at(proto, name, value_infos(proto)), [engine.info.logits])


def tail_logits(engine: GradientEngine, name: str, activations: np.ndarray,
                x_rows: np.ndarray) -> np.ndarray:
    """The logits when the layer `name` takes `activations` (one row per row of `x_rows`, the
    inputs they came from); a run of the tail only, so ablating a channel costs little."""
    session = engine.session_for(("cam-tail", engine.info.logits, name),
                                 lambda: tail_model(engine, name))
    wanted = {i.name for i in session.get_inputs()}
    fixed = fixed_batch(engine)
    feeds = {name: pad_rows(activations.astype(np.float32), fixed),
             engine.input_name: pad_rows(x_rows, fixed), **engine.context_feeds(len(x_rows))}
    return engine.run(session, [engine.info.logits],
                      {k: v for k, v in feeds.items() if k in wanted})[0][:len(x_rows)]


def chunks(total: int, engine: GradientEngine, batch: int | None):
    """Consecutive slices of rows, `batch` at a time (the model's own batch when fixed)."""
    return row_chunks(total, fixed_batch(engine) or batch)


def channel_weighted(weights: np.ndarray, activation: np.ndarray) -> np.ndarray:
    """sum_k w_k A_k: (N, K) weights and (N, K, h, w) activations, in float64."""
    return np.einsum("nk,nkhw->nhw", np.asarray(weights, np.float64),
                     activation.astype(np.float64))


def channels_last(x: np.ndarray) -> bool:
    """An N x H x W x C input (a TensorFlow export): the last axis looks like channels and the
    second does not, the rule by which onnxpath reads images for such a model."""
    return x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)


def image_size(x: np.ndarray) -> tuple[int, int]:
    """The input's (H, W), whichever its layout."""
    return tuple(x.shape[1:3]) if channels_last(x) else tuple(x.shape[2:])


def spread(maps: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N, H, W) maps repeated along the input's channel axis: shaped like `x`."""
    axis = 3 if channels_last(x) else 1
    return np.repeat(np.expand_dims(maps, axis), x.shape[axis], axis=axis)


def cam_attribution(cam: np.ndarray, x: np.ndarray, name: str, activation: np.ndarray,
                    logits: np.ndarray | None, relu: bool = False,
                    extras: list[dict] | None = None) -> Attribution:
    """The (N, h, w) map at the layer, ReLU'd on request, upsampled to the input's H x W and
    replicated across its channels; extras name the layer."""
    if relu:
        cam = np.maximum(cam, 0.0)
    maps = spread(bilinear_resize(cam, image_size(x)), x)
    facts = [{"layer": name, "layer_shape": list(activation.shape[1:])} for _ in range(len(x))]
    for fact, more in zip(facts, extras or [{} for _ in facts], strict=True):
        fact.update(more)
    return Attribution(maps, facts, logits=logits)


def targets_or_argmax(targets: np.ndarray | None, logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=1) if targets is None else np.asarray(targets)
