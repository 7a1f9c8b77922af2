"""Which output onnxpath explains, and the N×K logits tensor that stands for it.

The default rule (documented in the README):
1. skip outputs that are not float tensors (skl2onnx's int64 `label`); a ZipMap output (a
   sequence of maps) stands for the float tensor under it;
2. of the rest, prefer one reached through Softmax/LogSoftmax, then one named like logits,
   probabilities or scores, then the first.

An output named with `--output` is differentiated as it is, probabilities included. By the
default rule, the logits are the Softmax input when the output comes from one (replaying the
Reshape, Flatten, Transpose, Identity or Cast nodes between them), else the output itself. They are
then made N×K: N×K×1×…×1 is flattened, a rank-1 output is one column (a regression), a
segmentation map N×K×H×W becomes each class's logits summed over a region, and with
`--target-index` any output is flattened so that one column is one element.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxpath.autodiff.walk import FLOAT_TYPES
from onnxpath.errors import ModelError

PROBABILITY_OPS = ("Softmax", "LogSoftmax")
# Ops that may follow the Softmax without changing which value is which class's probability.
FOLLOWERS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast")
NAMED = re.compile(r"logit|prob|score", re.IGNORECASE)
PROBABILITY_NAME = re.compile(r"prob", re.IGNORECASE)
LOGITS = "onnxpath_logits"  # the canonical N×K tensor, when it is not a model tensor itself
KINDS = ("classes", "regression", "region", "elements")


@dataclass
class Head:
    """The chosen output, the float tensor behind it, and why it was chosen."""

    output: str  # the model output's name
    tensor: str  # the float tensor it stands for (the ZipMap input for a ZipMap output)
    reason: str
    softmax: onnx.NodeProto | None = None  # the Softmax the tensor comes from
    trailing: list = field(default_factory=list)  # nodes from that Softmax to the tensor
    explicit: bool = False  # named with --output: differentiated as named, Softmax and all


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def describe_type(value: onnx.ValueInfoProto) -> str:
    t = value.type
    if t.HasField("tensor_type"):
        return onnx.TensorProto.DataType.Name(t.tensor_type.elem_type).lower()
    if t.HasField("sequence_type"):
        return "sequence of maps" if t.sequence_type.elem_type.HasField("map_type") \
            else "sequence"
    return "map" if t.HasField("map_type") else "non-tensor"


def float_tensor_of(value: onnx.ValueInfoProto, made_by: dict) -> str | None:
    """The float tensor an output stands for: itself, the input of the ZipMap that produced
    it, or None (int labels, other sequences and maps)."""
    t = value.type
    if t.HasField("tensor_type") and t.tensor_type.elem_type in FLOAT_TYPES:
        return value.name
    node = made_by.get(value.name)
    if node is not None and node.op_type == "ZipMap" and node.domain == "ai.onnx.ml":
        return node.input[0]
    return None


def trace_softmax(tensor: str, made_by: dict) -> tuple[onnx.NodeProto | None, list]:
    """(the Softmax `tensor` comes from through FOLLOWERS, those nodes in forward order)."""
    trailing, name = [], tensor
    while name in made_by and made_by[name].op_type in FOLLOWERS:
        node = made_by[name]
        if node.op_type == "Cast" and helper.get_attribute_value(
                next(a for a in node.attribute if a.name == "to")) not in FLOAT_TYPES:
            break
        trailing.append(node)
        name = node.input[0]
    node = made_by.get(name)
    if node is not None and node.op_type in PROBABILITY_OPS and node.domain in ("", "ai.onnx"):
        return node, trailing[::-1]
    return None, []


def choose_output(model: onnx.ModelProto, name: str | None = None) -> Head:
    """The output to explain: `name` (an output's or a float tensor's name) or the default
    rule of the module docstring."""
    made_by = producers(model)
    outputs = list(model.graph.output)
    candidates = [(o.name, t) for o in outputs if (t := float_tensor_of(o, made_by))]
    skipped = [f"{o.name} ({describe_type(o)})" for o in outputs
               if not float_tensor_of(o, made_by)]
    if name is not None:
        match = next((c for c in candidates if name in c), None)
        if match is None:
            found = next((o for o in outputs if o.name == name), None)
            if found is not None:
                raise ModelError(f"--output {name}: it is a {describe_type(found)} output; "
                                 "onnxpath explains float tensors")
            if name not in made_by:
                listed = ", ".join(f"{o.name} ({describe_type(o)})" for o in outputs)
                raise ModelError(f"--output {name}: the model has no such output or tensor; "
                                 f"its outputs are {listed}")
            match = (name, name)  # an inner tensor, explained as if it were an output
        reason = "chosen with --output"
    elif not candidates:
        listed = ", ".join(skipped)
        raise ModelError(f"the model has no float tensor output to explain (outputs: {listed})")
    elif len(candidates) == 1:
        match, reason = candidates[0], "the only float tensor output"
    else:
        through = [c for c in candidates if trace_softmax(c[1], made_by)[0] is not None]
        named = [c for c in candidates if NAMED.search(c[0])]
        if through:
            match, reason = through[0], "reached through Softmax"
        elif named:
            match, reason = named[0], "named like logits/probabilities/scores"
        else:
            match, reason = candidates[0], "the first float tensor output"
        others = [c[0] for c in candidates if c != match]
        reason += f"; other float outputs: {', '.join(others)} (choose with --output)"
    if match[1] != match[0]:
        reason += f"; explained through '{match[1]}', the tensor under its ZipMap"
    if skipped and name is None:
        reason += f"; skipped: {', '.join(skipped)}"
    softmax, trailing = trace_softmax(match[1], made_by)
    return Head(match[0], match[1], reason, softmax, trailing, explicit=name is not None)


def replay_on_logits(model: onnx.ModelProto, head: Head) -> str:
    """The Softmax input with the nodes after the Softmax replayed on it, so that the logits
    are laid out like the output (SqueezeNet: Softmax over N×1000×1×1, then Flatten)."""
    if not any(n.op_type != "Identity" for n in head.trailing):
        return head.softmax.input[0]
    renamed = {head.softmax.output[0]: head.softmax.input[0]}
    last = len(head.trailing) - 1
    for k, node in enumerate(head.trailing):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{LOGITS}/replay/{node.name or k}"
        del copy.input[:]
        copy.input.extend(renamed.get(i, i) for i in node.input)
        del copy.output[:]
        out = f"{LOGITS}/replay" if k == last else f"{LOGITS}/replay/{k}"
        copy.output.append(out)
        renamed[node.output[0]] = out
        model.graph.node.append(copy)
    return f"{LOGITS}/replay"


def differentiated_tensor(model: onnx.ModelProto, head: Head,
                          keep_probabilities: bool) -> tuple[str, bool]:
    """(the tensor gradients are taken of, whether its values are probabilities). An output
    named with --output is differentiated as named; the default rule goes back through a
    Softmax to its logits."""
    if head.softmax is not None and not keep_probabilities and not head.explicit:
        return replay_on_logits(model, head), False
    probabilities = (head.softmax is not None and head.softmax.op_type == "Softmax") or (
        head.softmax is None and bool(PROBABILITY_NAME.search(head.output))
        and "log" not in head.output.lower())
    return head.tensor, probabilities


def _append(model: onnx.ModelProto, op: str, inputs: list[str], out: str, **attrs) -> str:
    model.graph.node.append(helper.make_node(op, inputs, [out], name=f"{out}/node", **attrs))
    return out


def _const(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    return name


def resample_region(region: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """A 2-D mask resampled (nearest) to the output's spatial dims."""
    region = np.asarray(region)
    if region.ndim != len(spatial):
        raise ModelError(f"--region is {region.ndim}-D; the output's spatial dims are "
                         f"{tuple(spatial)}")
    index = np.ix_(*[(np.arange(s) * region.shape[a] // s) for a, s in enumerate(spatial)])
    return region[index] > 0


def region_sums(model: onnx.ModelProto, y: str, shape: tuple, elem: int,
                region: np.ndarray | None) -> str:
    """N×K: each class's map summed over its region, by default the pixels predicted as that
    class (the argmax over axis 1; it is constant where the gradient is taken)."""
    classes, spatial = shape[1], tuple(shape[2:])
    if not all(isinstance(d, int) for d in (classes, *spatial)):
        raise ModelError(f"the output '{y}' has dynamic dims {shape}; a region needs them known")
    ones = [1] * len(spatial)
    p = f"{LOGITS}/region"
    if region is None:
        winner = _append(model, "ArgMax", [y], f"{p}/argmax", axis=1, keepdims=1)
        labels = _const(model, f"{p}/classes",
                        np.arange(classes, dtype=np.int64).reshape(1, classes, *ones))
        same = _append(model, "Equal", [winner, labels], f"{p}/equal")
        mask = _append(model, "Cast", [same], f"{p}/mask", to=elem)
    else:
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        mask = _const(model, f"{p}/mask", resample_region(region, spatial)
                      .astype(dtype).reshape(1, 1, *spatial))
    masked = _append(model, "Mul", [y, mask], f"{p}/masked")
    axes = _const(model, f"{p}/axes", np.arange(2, len(shape), dtype=np.int64))
    return _append(model, "ReduceSum", [masked, axes], LOGITS, keepdims=0)


def canonical_logits(model: onnx.ModelProto, tensor: str, shape: tuple | None, elem: int,
                     objective: str | None = None,
                     region: np.ndarray | None = None) -> tuple[str, str]:
    """(the N×K tensor, its kind: classes, regression, region or elements).

    `objective` "elements" flattens any output (one column per element, for
    `--target-index`); "region" (or a `region` mask) sums a segmentation map per class."""
    if shape is None:  # unknown until a run (intake/probe.py) tells; gradient rules can
        return tensor, "classes"  # still be checked on it
    rank = len(shape)
    if objective == "elements" and rank != 2:
        if rank == 1:
            return _append(model, "Unsqueeze", [tensor, _const(model, f"{LOGITS}/axes",
                           np.array([1], np.int64))], LOGITS), "elements"
        return _append(model, "Flatten", [tensor], LOGITS, axis=1), "elements"
    if objective == "elements":
        return tensor, "elements"
    if rank == 0:
        raise ModelError(f"the output '{tensor}' is a scalar; onnxpath needs a batch axis")
    if rank == 1:  # one value per example
        axes = _const(model, f"{LOGITS}/axes", np.array([1], np.int64))
        return _append(model, "Unsqueeze", [tensor, axes], LOGITS), "regression"
    # N×K×1×…×1 (or the K anywhere after the batch, all else 1): the classes, squeezed.
    squeezable = sum(d != 1 for d in shape[1:]) <= 1
    if rank > 2 and (objective == "region" or region is not None or not squeezable):
        if rank == 3 and objective is None and region is None:
            # N×T×K (a sequence of scores): one column per element, as --target-index does
            return _append(model, "Flatten", [tensor], LOGITS, axis=1), "elements"
        return region_sums(model, tensor, shape, elem, region), "region"
    if rank > 2:
        tensor = _append(model, "Flatten", [tensor], LOGITS, axis=1)
    classes = int(np.prod([d for d in shape[1:] if isinstance(d, int)])) \
        if all(isinstance(d, int) for d in shape[1:]) else None
    return tensor, "regression" if classes == 1 else "classes"
