"""Graph rewrites for critical pathways: pure functions from a model to a new model.

`insert_masks` multiplies the output of chosen activation nodes by a mask graph input. One
gradient graph of the result then serves every pathway pass: scoring (masks = 1, where
d logit / d mask is the signed contribution a * d logit / d a), the pathway gradient (binary
masks), the integrated variant (masks = alpha) and learned gates. `bake_pathway` turns chosen
masks into constants, giving a standalone pruned model. `seed_from_cross_entropy` rewrites a
gradient graph so that it differentiates a cross-entropy loss instead of a logit, and
`seed_from_argmax` so that it differentiates each row's largest logit.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from onnxpath.autodiff.relu_family import RELU_FAMILY, graph_constants, node_is_relu_family
from onnxpath.autodiff.walk import grad_name, prune_unused, value_infos
from onnxpath.errors import ModelError
from onnxpath.intake.batchless import UNBATCHED

# The paper's local-linearity argument (a fixed pathway makes the network linear around x)
# holds for these only; any other activation is allowed but earns a warning.
PIECEWISE_LINEAR = frozenset({"Relu", "LeakyRelu", "PRelu", "Clip"})
MASK_PREFIX = "onnxpath_mask/"
CONTRIBUTION_PREFIX = "onnxpath_contribution/"
GATE_PREFIX = "onnxpath_gate/"


class LocalLinearityWarning(UserWarning):
    """Masks were put after activations that are not piecewise linear."""


@dataclass(frozen=True)
class MaskLayer:
    """One masked activation node: the paper's 'layer'. Each element is a neuron."""

    node: str  # the activation node's name (its output's name when it has none)
    op_type: str
    tensor: str  # the activation's output, unmasked
    mask: str  # the mask graph input multiplying it
    shape: tuple[int, ...]  # one example's neurons, e.g. (C, H, W)
    dtype: np.dtype = np.dtype(np.float32)  # the activation's, so its mask's (float16 models)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def mask_name(tensor: str) -> str:
    return MASK_PREFIX + tensor


def choose_activations(model: onnx.ModelProto, op_types: Sequence[str] = RELU_FAMILY,
                       name_regex: str | None = None) -> list[onnx.NodeProto]:
    """The nodes to mask, in graph order: op type in `op_types` and, when a regex is given,
    node name or output name matching it (`re.search`). A Clip counts only with a lower bound
    of 0 (ReLU6): see `relu_family`."""
    pattern = re.compile(name_regex) if name_regex else None
    constants = graph_constants(model.graph)
    chosen = [n for n in model.graph.node
              if n.op_type in op_types and n.domain in ("", "ai.onnx")
              and (n.op_type != "Clip" or node_is_relu_family(n, constants))
              and (pattern is None or pattern.search(n.name) or pattern.search(n.output[0]))]
    if not chosen:
        where = f" matching /{name_regex}/" if name_regex else ""
        clip = " (a Clip counts when its lower bound is 0)" if "Clip" in op_types else ""
        raise ModelError(f"no {'/'.join(op_types)} node{where} to put pathway masks on{clip}; "
                         "choose layers with --layers (op types) or --layer-regex")
    rough = sorted({n.op_type for n in chosen} - PIECEWISE_LINEAR)
    if rough:
        warnings.warn(f"{', '.join(rough)} is not piecewise linear: the pathway gradient is "
                      "then not the exact local linear model of the selected sub-network, and "
                      "contributions are only first-order estimates", LocalLinearityWarning,
                      stacklevel=2)
    return chosen


def insert_masks(model: onnx.ModelProto, op_types: Sequence[str] = RELU_FAMILY,
                 name_regex: str | None = None) -> tuple[onnx.ModelProto, list[MaskLayer]]:
    """A copy of `model` whose chosen activation outputs are multiplied by mask inputs.

    Each mask input is shaped like its activation with the model input's batch dim (static or
    symbolic), so masks are per example; with all masks 1 the outputs are unchanged. Consumers
    of the activation read the masked tensor; the unmasked one stays addressable by name.
    """
    if any(o.endswith(UNBATCHED) for n in model.graph.node for o in n.output):
        raise ModelError("the pathway masks each example's activations, and this model has no "
                         "batch dim (a rank-1 input, or a first dim that is not a batch), so its "
                         "activations have none either; use a gradient method (-m gradient, "
                         "integrated-gradients, ...)")
    nodes = choose_activations(model, op_types, name_regex)
    infos = value_infos(model)
    graph = gs.import_onnx(model)
    batch = _batch_dim(graph)
    tensors = graph.tensors()
    layers = []
    for proto in nodes:
        name = proto.output[0]
        elem, shape = infos.get(name, (None, None))
        if shape is None or not all(isinstance(d, int) for d in shape[1:]):
            raise ModelError(f"the output of {proto.op_type} node '{proto.name or name}' has no "
                             f"static shape ({shape}); give the input size with --size")
        active = tensors[name]
        mask = gs.Variable(mask_name(name), dtype=helper.tensor_dtype_to_np_dtype(elem),
                           shape=[batch, *shape[1:]])
        masked = gs.Variable(f"{name}/onnxpath_masked", dtype=mask.dtype,
                             shape=[batch, *shape[1:]])
        for consumer in list(active.outputs):  # copied: rewiring edits this list
            for j, tensor in enumerate(list(consumer.inputs)):
                if tensor is active:
                    consumer.inputs[j] = masked
        graph.nodes.append(gs.Node("Mul", name=f"onnxpath_mask_node/{name}",
                                   inputs=[active, mask], outputs=[masked]))
        graph.inputs.append(mask)
        layers.append(MaskLayer(proto.name or name, proto.op_type, name, mask.name,
                                tuple(shape[1:]), np.dtype(mask.dtype)))
    return _export(graph.toposort(), model), layers


def gate_name(tensor: str) -> str:
    return GATE_PREFIX + tensor


# ONNX Runtime's blocked (NCHWc) convolutions work on 8 or 16 channels at a time (AVX2, AVX-512)
BLOCK_CHANNELS = 16


def gate_relus(masked: onnx.ModelProto, layers: Sequence[MaskLayer],
               blocked: bool = False) -> onnx.ModelProto:
    """The masked model of `insert_masks` with each Relu layer's mask turned into an additive
    gate before the Relu: Relu(z + g), g = 0 keeps a neuron, g = -inf prunes it.

    For binary masks the values are the same, bit for bit: Relu(z + 0) = Relu(z) and
    Relu(z - inf) = 0 = Relu(z) * 0 for finite z (z = +inf gives NaN either way). The gradient
    is the same too: the Relu rule gates on its output, which is 0 where the neuron is pruned.
    But no mask multiplies a convolution's output, so ONNX Runtime keeps its blocked (NCHWc)
    layout, and the backward pass needs no mask multiply (ResNet-50's masked input gradient:
    1.30 -> 0.85 x a plain gradient on 2 cores). Other activations keep their Mul masks; the
    gate inputs are named `onnxpath_gate/<tensor>` and replace those layers' mask inputs.

    `blocked` (for ONNX Runtime on the CPU): a gate added to a float32 convolution's output
    whose channels fill whole NCHWc blocks first goes through a 1x1 depthwise convolution with
    unit weights, g * 1 = g exactly. A graph input is plain NCHW, so the Add would run
    unblocked, with the convolution's output reordered out and the Relu's back in; a
    convolution's output is blocked, and the Add and Relu then fuse into the convolution
    itself. A Relu after a residual sum, Relu(p + q) with p a convolution's, gets
    Relu(p + (q + g)) instead: the same sums (q + 0 = q; -inf either way), and they fuse into
    the convolutions as the model's own residual sum did (`_regroup`); ONNX Runtime's fused
    kernels may round them differently, within float32 rounding. ResNet-50's pathway, one
    thread, interleaved rounds: 390 ms with plain gates, 386 blocked, 377 regrouped too; two
    threads: 285 ms with plain gates, 262-269 blocked.
    """
    gated = {layer.tensor: layer for layer in layers if layer.op_type == "Relu"}
    result = onnx.ModelProto()
    result.CopyFrom(masked)
    graph = result.graph
    producers = {out: node for node in graph.node for out in node.output}  # the copy's nodes
    weights = {tensor.name for tensor in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    masked_of = {f"{tensor}/onnxpath_masked": tensor for tensor in gated}
    nodes = []
    for node in graph.node:
        if node.op_type == "Mul" and node.output and node.output[0] in masked_of:
            continue
        node.input[:] = [masked_of.get(i, i) for i in node.input]
        if node.op_type == "Relu" and node.output[0] in gated:
            tensor = node.output[0]
            shifted = f"{tensor}/onnxpath_gated_input"
            gate = gate_name(tensor)
            producer = producers.get(node.input[0])
            if blocked and _fuses_blocked(producer, gated[tensor], weights):
                gate = _blocked_copy(graph, nodes, gate, gated[tensor].shape[0])
            elif blocked and _regroup(producer, gated[tensor], producers, uses, weights, nodes,
                                      graph):
                nodes.append(node)
                continue
            nodes.append(helper.make_node("Add", [node.input[0], gate], [shifted],
                                          name=f"onnxpath_gate_node/{tensor}"))
            node.input[0] = shifted
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    for output in graph.output:
        output.name = masked_of.get(output.name, output.name)
    masks = {gated[t].mask: gate_name(t) for t in gated}
    for value in graph.input:
        value.name = masks.get(value.name, value.name)
    return result


def _fuses_blocked(producer: onnx.NodeProto | None, layer: MaskLayer, weights: set) -> bool:
    """Whether ONNX Runtime can fuse a blocked gate's Add into the convolution before it: a
    float32 convolution with constant weights (a dequantized one's stay unblocked)."""
    return (producer is not None and producer.op_type == "Conv"
            and producer.domain in ("", "ai.onnx") and producer.input[1] in weights
            and layer.dtype == np.float32
            and len(layer.shape) == 3 and layer.shape[0] % BLOCK_CHANNELS == 0)


def _regroup(add: onnx.NodeProto | None, layer: MaskLayer, producers: dict, uses: dict,
             weights: set, nodes: list, graph: onnx.GraphProto) -> bool:
    """Relu(p + q) -> Relu(p + (q + g)), g blocked, where p is a convolution's output that
    ONNX Runtime can fuse the outer sum into; False (nothing changed) otherwise."""
    if (add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx")
            or uses.get(add.output[0], 0) != 1):
        return False
    convs = [i for i, name in enumerate(add.input)
             if _fuses_blocked(producers.get(name), layer, weights) and uses.get(name, 0) == 1]
    if not convs:
        return False
    other = add.input[1 - convs[0]]
    # A shortcut, computed in the graph: a constant (a bias) would broadcast the gate's sum
    # and keep ONNX Runtime from folding it into the convolution.
    if other not in producers or producers[other].op_type == "Constant":
        return False
    position = next(i for i, node in enumerate(nodes) if node is add)
    before: list = []
    gate = _blocked_copy(graph, before, gate_name(layer.tensor), layer.shape[0])
    gated_other = f"{other}/onnxpath_gated_for/{layer.tensor}"
    before.append(helper.make_node("Add", [other, gate], [gated_other],
                                   name=f"onnxpath_gate_node/{layer.tensor}"))
    add.input[1 - convs[0]] = gated_other
    nodes[position:position] = before
    return True


def _blocked_copy(graph: onnx.GraphProto, nodes: list, gate: str, channels: int) -> str:
    """gate * 1 through a 1x1 depthwise convolution: the same values, in the blocked layout."""
    ones = f"{gate}/onnxpath_unit_weights"
    graph.initializer.append(numpy_helper.from_array(
        np.ones((channels, 1, 1, 1), np.float32), ones))
    copied = f"{gate}/onnxpath_blocked"
    nodes.append(helper.make_node("Conv", [gate, ones], [copied], group=channels,
                                  kernel_shape=[1, 1], name=f"{copied}/node"))
    return copied


def bake_pathway(model: onnx.ModelProto, layers: Sequence[MaskLayer],
                 masks: Sequence[np.ndarray]) -> onnx.ModelProto:
    """A standalone model: the masked model of `insert_masks` with each mask input replaced by a
    constant (one example's mask, broadcast over any batch). Its outputs are the masked
    network's."""
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    for layer, mask in zip(layers, masks, strict=True):
        values = np.asarray(mask).reshape((1, *layer.shape))
        variable = tensors[layer.mask]
        graph.inputs.remove(variable)
        variable.to_constant(values.astype(variable.dtype or np.float32))
    return _export(graph.cleanup(remove_unused_graph_inputs=False), model)


def contribution_name(tensor: str) -> str:
    return CONTRIBUTION_PREFIX + tensor


def contribution_taps(gradient_model: onnx.ModelProto,
                      tensors: Sequence[str]) -> onnx.ModelProto:
    """Turn a gradient graph taken with respect to activation tensors into a scoring graph.

    Each `onnxpath_grad/<t>` output (d logit / d t) is replaced by `onnxpath_contribution/<t>`,
    t * d logit / d t: the signed contribution that d logit / d mask gives at mask = 1 in the
    masked model, computed on the unmodified network. No mask is a graph input, so ONNX
    Runtime keeps its blocked (NCHWc) layout through the whole graph, and the backward pass
    stops at the first tapped activation instead of reaching the input. Other outputs (the
    logits, extra outputs) stay.
    """
    result = onnx.ModelProto()
    result.CopyFrom(gradient_model)
    graph = result.graph
    grads = {grad_name(t): t for t in tensors}
    outputs = []
    for output in graph.output:
        tensor = grads.get(output.name)
        if tensor is None:
            outputs.append(output)
            continue
        name = contribution_name(tensor)
        graph.node.append(helper.make_node("Mul", [tensor, output.name], [name],
                                           name=f"{name}/node"))
        tapped = onnx.ValueInfoProto()
        tapped.CopyFrom(output)
        tapped.name = name
        outputs.append(tapped)
    del graph.output[:]
    graph.output.extend(outputs)
    return prune_unused(result)


def _batch_dim(graph: gs.Graph) -> int | str:
    first = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
    return first if first is not None else "batch"


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export keeping what graphsurgeon does not carry: IR version and metadata (labels)."""
    out = gs.export_onnx(graph)
    out.ir_version = like.ir_version
    out.producer_name = like.producer_name
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    return out
