"""The ONNX model zoo graphs shipped in the onnx wheel (onnx/backend/test/data/light): real
SqueezeNet, ShuffleNet, DenseNet-121, Inception v1 and ResNet-50 graphs (opset 9, IR 3, the zoo's
quirks: initializers listed as inputs, N x K x 1 x 1 logits, Softmax outputs, asymmetric
AveragePool pads), whose weights the wheel replaces by ConstantOfShape(0.02) nodes.

Weights (`random=False`, all five): each ConstantOfShape
becomes a deterministic in-graph pseudo-random pattern with He-like scale, and the opset
becomes 11 for Range (files stay tiny; the wheel's equal weights make all 1000 logits equal).
References: an independent torch float64 interpreter of the graph's ops (below), its input
gradient of the pre-Softmax logit by autograd.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from ..fixture import directional_check, relative_error, save_case

SOURCE = "onnx zoo (onnx wheel)"
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    found: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            found.setdefault(name, []).append((node, i))
    return found


def weight_scale(role: tuple[str, int], shape: tuple[int, ...]) -> tuple[float, float]:
    """(standard deviation, mean) of a weight used as input `role`: He for conv and Gemm
    weights, near-identity for BatchNorm, small for biases."""
    op, index = role
    if op == "BatchNormalization":
        return {1: (0.2, 1.0), 2: (0.1, 0.0), 3: (0.1, 0.0), 4: (0.2, 1.0)}[index]
    if len(shape) == 1:  # biases
        return 0.05, 0.0
    return float(np.sqrt(2.0 / np.prod(shape[1:]))), 0.0


def random_weight(shape, role, rng) -> np.ndarray:
    std, mean = weight_scale(role, shape)
    return mean + std * rng.standard_normal(shape)


PRIME = 16777213  # below 2**24: every pattern value is exact in float32


def pattern_weight_nodes(node: onnx.NodeProto, shape, role, k: int):
    """The weight as an in-graph pseudo-random pattern: u = ((A i + B_k) mod PRIME) over the flat
    index i, exact in int64 and in float32, then mean + std * sqrt(3) * (2 u / PRIME - 1) (a
    uniform of that mean and deviation). A few bytes in the file instead of the weights (the
    wheel's ConstantOfShape makes every weight equal, and so all 1000 logits)."""
    std, mean = weight_scale(role, shape)
    out, p = node.output[0], f"{node.output[0]}/pattern"
    ints = {f"{p}/start": 0, f"{p}/limit": int(np.prod(shape)), f"{p}/delta": 1,
            f"{p}/a": 1103515245, f"{p}/b": 12345 + 7919 * k, f"{p}/prime": PRIME}
    floats = {f"{p}/scale": 2.0 * std * np.sqrt(3.0) / PRIME,
              f"{p}/shift": mean - std * np.sqrt(3.0)}
    inits = [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in ints.items()]
    inits += [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in floats.items()]
    nodes = [helper.make_node("Range", [f"{p}/start", f"{p}/limit", f"{p}/delta"], [f"{p}/i"]),
             helper.make_node("Mul", [f"{p}/i", f"{p}/a"], [f"{p}/ai"]),
             helper.make_node("Add", [f"{p}/ai", f"{p}/b"], [f"{p}/aib"]),
             helper.make_node("Mod", [f"{p}/aib", f"{p}/prime"], [f"{p}/u"]),
             helper.make_node("Cast", [f"{p}/u"], [f"{p}/uf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Reshape", [f"{p}/uf", node.input[0]], [f"{p}/r"]),
             helper.make_node("Mul", [f"{p}/r", f"{p}/scale"], [f"{p}/m"]),
             helper.make_node("Add", [f"{p}/m", f"{p}/shift"], [out])]
    return nodes, inits


def reweight(model: onnx.ModelProto, random: bool, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    graph = model.graph
    used_by = consumers(graph)
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes, new_inits, weights = [], [], []
    for k, node in enumerate(graph.node):
        if node.op_type != "ConstantOfShape":
            nodes.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        consumer, index = used_by[node.output[0]][0]
        role = (consumer.op_type, index)
        if random:
            value = random_weight(shape, role, rng).astype(np.float32)
            weights.append(numpy_helper.from_array(value, node.output[0]))
            continue
        added, inits = pattern_weight_nodes(node, shape, role, k)
        nodes.extend(added)
        new_inits.extend(inits)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits + weights)
    # IR 3 lists initializers among the graph inputs: keep that quirk for the new ones.
    declared = {i.name for i in graph.input}
    for t in new_inits + weights:
        if t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    used = {i for n in graph.node for i in n.input}
    for field in (graph.initializer, graph.input):
        keep = [t for t in field if t.name in used]
        del field[:]
        field.extend(keep)
    if not random:
        # Range needs opset 11; none of these graphs' ops changes meaning from 9 to 11.
        model.opset_import[0].version = 11
    return model


# --- an independent float64 interpreter of the zoo's ops, in torch --------------------------

def pads_of(attrs, n=2):
    pads = list(attrs.get("pads", [0] * 2 * n))
    return pads[:n], pads[n:]


def pad_input(x, begin, end, value=0.0):
    return F.pad(x, (begin[1], end[1], begin[0], end[0]), value=value)


def run_graph(model: onnx.ModelProto, x: torch.Tensor, stop_at: str) -> torch.Tensor:
    """Evaluate the graph up to tensor `stop_at` in x's float type."""
    graph = model.graph
    dtype = x.dtype
    env = {}
    for t in graph.initializer:
        value = numpy_helper.to_array(t)
        env[t.name] = torch.tensor(value, dtype=dtype if value.dtype.kind == "f" else torch.int64)
    data = next(i.name for i in graph.input if i.name not in env)
    env[data] = x
    for node in graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
        ins = [env[i] if i else None for i in node.input]
        op = node.op_type
        # Weight patterns are computed in float32 by ONNX Runtime: here too, bit for bit.
        pattern = any("/pattern" in i for i in node.input)
        if pattern:
            ins = [t.float() if t.is_floating_point() else t for t in ins]
        if op == "ConstantOfShape":
            v = numpy_helper.to_array(a["value"]).astype(np.float64)[0]
            out = torch.full(tuple(int(d) for d in ins[0]), float(v), dtype=dtype)
        elif op == "Conv":
            begin, end = pads_of(a)
            out = F.conv2d(pad_input(ins[0], begin, end), ins[1], ins[2] if len(ins) > 2 else None,
                           stride=a.get("strides", [1, 1]), dilation=a.get("dilations", [1, 1]),
                           groups=a.get("group", 1))
        elif op == "Relu":
            out = torch.relu(ins[0])
        elif op == "MaxPool":
            begin, end = pads_of(a)
            out = F.max_pool2d(pad_input(ins[0], begin, end, float("-inf")), a["kernel_shape"],
                               a.get("strides", [1, 1]))
        elif op == "AveragePool":  # count_include_pad=0: divide by in-bounds counts
            begin, end = pads_of(a)
            k, s = a["kernel_shape"], a.get("strides", [1, 1])
            total = F.avg_pool2d(pad_input(ins[0], begin, end), k, s) * (k[0] * k[1])
            ones = torch.ones((1, 1, *ins[0].shape[2:]), dtype=dtype)
            count = F.avg_pool2d(pad_input(ones, begin, end), k, s) * (k[0] * k[1])
            out = total / count
        elif op == "GlobalAveragePool":
            out = ins[0].mean(dim=(2, 3), keepdim=True)
        elif op == "BatchNormalization":
            shape = (1, -1, 1, 1)
            out = (ins[0] - ins[3].view(shape)) / torch.sqrt(ins[4].view(shape) + a.get(
                "epsilon", 1e-5)) * ins[1].view(shape) + ins[2].view(shape)
        elif op == "LRN":
            out = F.local_response_norm(ins[0], a["size"], a.get("alpha", 1e-4),
                                        a.get("beta", 0.75), a.get("bias", 1.0))
        elif op == "Concat":
            out = torch.cat(ins, dim=a["axis"])
        elif op in ("Dropout", "Identity"):
            out = ins[0]
        elif op in ("Sum", "Add"):
            out = ins[0]
            for other in ins[1:]:
                out = out + other
        elif op == "Mul":
            out = ins[0] * ins[1]
        elif op == "Range":
            out = torch.arange(int(ins[0]), int(ins[1]), int(ins[2]), dtype=torch.int64)
        elif op == "Mod":
            out = torch.remainder(ins[0], ins[1])
        elif op == "Cast":
            out = ins[0].to(torch.float32 if pattern else dtype)
        elif op == "Reshape":
            shape = [int(d) for d in ins[1]]
            shape = [ins[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
            out = ins[0].reshape(shape)
        elif op == "Transpose":
            out = ins[0].permute(*a["perm"])
        elif op == "Unsqueeze":
            out = ins[0]
            for axis in sorted(a["axes"]):
                out = out.unsqueeze(axis)
        elif op == "Gemm":
            b = ins[1].T if a.get("transB", 0) else ins[1]
            out = a.get("alpha", 1.0) * ins[0] @ b + a.get("beta", 1.0) * ins[2]
        else:
            raise NotImplementedError(op)
        if pattern:
            out = out if "/pattern" in node.output[0] else out.to(dtype)
        env[node.output[0]] = out
        if node.output[0] == stop_at:
            return out
    raise KeyError(stop_at)


def case(name: str, random: bool, seed: int, covers: list[str]) -> dict:
    model = reweight(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")), random, seed)
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    logits_name = softmax[0].input[0] if softmax else model.graph.output[0].name
    x = np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)

    def gradient(dtype):
        t = torch.tensor(x, dtype=dtype, requires_grad=True)
        out = run_graph(model, t, logits_name).reshape(1, -1)
        chosen = int(out[0].argmax()) if dtype == torch.float64 else target
        return chosen, out.detach().numpy(), torch.autograd.grad(out[0, chosen], t)[0].numpy()

    target = None
    target, logits64, grad64 = gradient(torch.float64)
    # float32's own error: the same interpreter in float32, at x and at x moved by float32
    # rounding noise. Deep nets have ReLU inputs within 1e-7 of zero, whose side float32
    # cannot tell: another float32 runtime (ONNX Runtime) may flip them where torch did not.
    grad32, worst = None, -1.0
    for k in range(3):
        noise = np.random.default_rng(100 + k).standard_normal(x.shape) * 2.0**-24 * k
        x_k = x
        x = (x_k * (1 + noise)).astype(np.float32)
        _, _, candidate = gradient(torch.float32)
        x = x_k
        error = relative_error(candidate, grad64)
        if error > worst:
            grad32, worst = candidate, error

    def f(batch):
        with torch.no_grad():
            t = torch.tensor(batch)
            return run_graph(model, t, logits_name).reshape(len(batch), -1)[:, target].numpy()

    check = directional_check(f, x.astype(np.float64), grad64, directions=2)
    return save_case(f"zoo_{name}", model.SerializeToString(), x, source=SOURCE,
                     covers=covers, target=target, grad64=grad64, grad32=grad32,
                     logits64=logits64, output=model.graph.output[0].name,
                     reference="torch float64 interpreter of the ONNX graph, autograd",
                     notes=("random weights" if random else
                            "in-graph pseudo-random weights (Range, Mod) replacing "
                            "ConstantOfShape"),
                     check={"directional_central_differences": check})


def build() -> list[dict]:
    return [
        case("squeezenet", False, 1, ["logits N x K x 1 x 1", "Softmax output", "IR 3 "
                                     "initializers as inputs"]),
        case("shufflenet", False, 2, ["channel shuffle (Reshape/Transpose)", "Softmax output"]),
        case("densenet121", False, 3, ["logits N x K x 1 x 1 (no Softmax)",
                                       "ConstantOfShape weights"]),
        case("inception_v1", False, 4, ["LRN", "AveragePool with asymmetric pads",
                                        "Softmax output"]),
        case("resnet50", False, 5, ["residual, BatchNorm", "Softmax output"]),
    ]
