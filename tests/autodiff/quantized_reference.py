"""The straight-through float64 reference for quantized ONNX graphs, written independently of
onnxpath's rewrite: a small torch interpreter that runs the same quantized graph in float64,
every quantized tensor held as its dequantized real value, and every quantization step as
fake quantization with the straight-through gradient (1 where the rounded value lies inside
the integer range, 0 outside; torch.fake_quantize_per_tensor_affine's convention). QDQ pairs
are thus identity where in range. No ReLU is put back anywhere: this is the bare estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

F = torch.nn.functional
RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
          np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767),
          np.dtype(np.int32): (-2 ** 31, 2 ** 31 - 1)}


@dataclass
class Quantized:
    """A quantized tensor: its real (dequantized) value, carrying the gradient."""

    real: torch.Tensor


# Central differences need the straight-through function itself: each quantization step
# replaced by its linearisation at the base point, value(x0) + inside(x0)·(x − x0). `TAPE`
# records those at the base point ("record") and replays them ("replay"); None: plain runs.
TAPE: dict = {"mode": None, "steps": [], "at": 0}
# "At the quantized forward pass": the integers the deployed model computed (ONNX Runtime's run
# of the same file), by tensor name. Float64 rounds a few elements differently from the
# integer kernels, and in a deep network those differences grow; pinned, the reference takes
# the deployed integers as its values and differentiates straight through them.
PIN: dict = {"values": {}, "now": []}


def fake_quantize(x: torch.Tensor, scale, zero_point, dtype) -> torch.Tensor:
    low, high = RANGES[np.dtype(dtype)]
    if TAPE["mode"] == "replay":
        x0, inside, value = TAPE["steps"][TAPE["at"]]
        TAPE["at"] += 1
        return value + inside * (x - x0)
    scale = torch.as_tensor(np.asarray(scale, np.float64))
    zp = torch.as_tensor(np.asarray(zero_point, np.float64))
    rounded = torch.round(x / scale) + zp
    inside = ((rounded >= low) & (rounded <= high)).to(x.dtype)
    value = (torch.clamp(rounded, low, high) - zp) * scale
    if PIN["now"]:
        value = (torch.tensor(PIN["now"].pop(0).astype(np.float64)) - zp) * scale
    if TAPE["mode"] == "record":
        TAPE["steps"].append((x.detach().clone(), inside, value.detach()))
    return x * inside + (value - x * inside).detach()


def _param(value, rank: int, axis: int = 1):
    array = np.asarray(value, np.float64)
    if array.size == 1:
        return torch.tensor(array.reshape(()))
    shape = [1] * rank
    shape[axis % rank] = -1
    return torch.tensor(array.reshape(shape))


def _real(value, scale, zero_point, axis: int = 1) -> torch.Tensor:
    """The real value of a quantized input: a Quantized, or integer constants."""
    if isinstance(value, Quantized):
        return value.real
    q = torch.tensor(np.asarray(value, np.float64))
    zp = 0 if zero_point is None else zero_point
    return (q - _param(zp, q.dim(), axis)) * _param(scale, q.dim(), axis)


def _zp_dtype(zero_point, default=np.uint8):
    return np.asarray(zero_point).dtype if zero_point is not None else np.dtype(default)


def _quantize(x, scale, zero_point, like=None, axis: int = 1):
    dtype = _zp_dtype(zero_point, np.asarray(like).dtype if like is not None else np.uint8)
    zp = 0 if zero_point is None else zero_point
    return Quantized(fake_quantize(x, _param(scale, x.dim(), axis), _param(zp, x.dim(), axis),
                                   dtype))


def _conv(x, w, b, a):
    pads = a.get("pads", [0, 0, 0, 0])
    x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
    return F.conv2d(x, w, b, stride=a.get("strides", 1), dilation=a.get("dilations", 1),
                    groups=a.get("group", 1))


def _gemm(a_, b_, c, a):
    a_ = a_.T if a.get("transA") else a_
    b_ = b_.T if a.get("transB") else b_
    y = a.get("alpha", 1.0) * (a_ @ b_)
    return y if c is None else y + a.get("beta", 1.0) * c


def _maxpool(x, a):
    pads = a.get("pads", [0, 0, 0, 0])
    x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]], value=-np.inf)
    return F.max_pool2d(x, a["kernel_shape"], a.get("strides", a["kernel_shape"]))


def _lift(fn):
    """A float op that also runs on a Quantized (data movement and max keep the grid)."""
    def run(x, *rest, **a):
        if isinstance(x, Quantized):
            return Quantized(fn(x.real, *rest, **a))
        return fn(x, *rest, **a)
    return run


def _dynamic_quantize(x):
    """DynamicQuantizeLinear: scale and zero point from x's range (constants to the
    straight-through estimate, and replayed as recorded)."""
    if TAPE["mode"] == "replay":
        scale, zp = TAPE["steps"][TAPE["at"]]
        TAPE["at"] += 1
    else:
        data = x.detach().numpy()
        low, high = min(0.0, float(data.min())), max(0.0, float(data.max()))
        scale = (high - low) / 255.0
        zp = np.uint8(np.clip(np.round(-low / scale), 0, 255))
        if PIN["now"]:  # the deployed integers, scale and zero point
            q, scale, zp = PIN["now"]
            PIN["now"] = [q]
        if TAPE["mode"] == "record":
            TAPE["steps"].append((scale, zp))
    return Quantized(fake_quantize(x, scale, zp, np.uint8)), np.float64(scale), zp


OPS = {
    "QuantizeLinear": lambda x, s, zp=None, **a: _quantize(x, s, zp, axis=a.get("axis", 1)),
    "DequantizeLinear": lambda q, s, zp=None, **a: _real(q, s, zp, a.get("axis", 1)),
    "DynamicQuantizeLinear": lambda x, **a: _dynamic_quantize(x),
    "Conv": lambda x, w, b=None, **a: _conv(x, w, b, a),
    "Gemm": lambda x, w, c=None, **a: _gemm(x, w, c, a),
    "MatMul": lambda x, w, **a: x @ w,
    "Relu": lambda x, **a: torch.relu(x),
    "Clip": lambda x, low=None, high=None, **a: torch.clamp(
        x, None if low is None else float(low), None if high is None else float(high)),
    "Add": lambda x, y, **a: _t(x) + _t(y),
    "Mul": lambda x, y, **a: _t(x) * _t(y),
    "Sigmoid": lambda x, **a: torch.sigmoid(x),
    "LeakyRelu": lambda x, **a: F.leaky_relu(x, a.get("alpha", 0.01)),
    "GlobalAveragePool": lambda x, **a: x.mean((2, 3), keepdim=True),
    "ReduceMean": lambda x, axes=None, **a: x.mean(
        tuple(a.get("axes", [] if axes is None else list(axes))),
        keepdim=bool(a.get("keepdims", 1))),
    "Concat": lambda *xs, **a: torch.cat(xs, a["axis"]),
    "Cast": lambda x, **a: x.to(torch.float64) if torch.is_tensor(x) else x,
    "MaxPool": _lift(lambda x, **a: _maxpool(x, a)),
    "Flatten": _lift(lambda x, **a: x.flatten(a.get("axis", 1))),
    "Reshape": _lift(lambda x, shape, **a: x.reshape([x.shape[i] if d == 0 else int(d)
                                                      for i, d in enumerate(shape)])),
    "Transpose": _lift(lambda x, **a: x.permute(*a["perm"])),
    "Identity": _lift(lambda x, **a: x),
    # QOperator ops: dequantize, the float op, quantize the result.
    "QLinearConv": lambda x, xs, xz, w, ws, wz, ys, yz, b=None, **a: _quantize(
        _conv(_real(x, xs, xz), _real(w, ws, wz, 0),
              None if b is None else _real(b, np.float64(xs) * np.asarray(ws, np.float64), 0,
                                           0), a), ys, yz),
    "QLinearMatMul": lambda x, xs, xz, w, ws, wz, ys, yz, **a: _quantize(
        _real(x, xs, xz) @ _real(w, ws, wz, -1), ys, yz),
    "QGemm": lambda x, xs, xz, w, ws, wz, c=None, ys=None, yz=None, **a: (
        lambda y: y if ys is None else _quantize(y, ys, yz))(_gemm(
            _real(x, xs, xz), _real(w, ws, wz, 0 if a.get("transB") else -1),
            None if c is None else _real(c, a.get("alpha", 1.0) * np.float64(xs)
                                         * np.asarray(ws, np.float64), 0, -1),
            {**a, "alpha": a.get("alpha", 1.0)})),
    "QLinearAdd": lambda x, xs, xz, y, ys, yz, cs, cz=None, **a: _quantize(
        _real(x, xs, xz) + _real(y, ys, yz), cs, cz, x),
    "QLinearMul": lambda x, xs, xz, y, ys, yz, cs, cz=None, **a: _quantize(
        _real(x, xs, xz) * _real(y, ys, yz), cs, cz, x),
    "QLinearSigmoid": lambda x, xs, xz=None, ys=None, yz=None, **a: _quantize(
        torch.sigmoid(_real(x, xs, xz)), ys, yz, x),
    "QLinearLeakyRelu": lambda x, xs, xz=None, ys=None, yz=None, **a: _quantize(
        F.leaky_relu(_real(x, xs, xz), a.get("alpha", 0.01)), ys, yz, x),
    "QLinearGlobalAveragePool": lambda x, xs, xz, ys, yz, **a: _quantize(
        _real(x, xs, xz).mean((2, 3), keepdim=True), ys, yz),
    "QLinearConcat": lambda ys, yz, *triples, **a: _quantize(torch.cat(
        [_real(*triples[i:i + 3]) for i in range(0, len(triples), 3)], a["axis"]), ys, yz),
    # Integer products, as their accumulators (in steps of the input scales).
    "ConvInteger": lambda x, w, xz=None, wz=None, **a: _conv(
        _steps(x, xz), _real(w, 1.0, wz, 0), None, a),
    "MatMulInteger": lambda x, w, xz=None, wz=None, **a: _steps(x, xz) @ _real(w, 1.0, wz, -1),
}


def _t(value) -> torch.Tensor:
    return value if torch.is_tensor(value) else torch.tensor(np.asarray(value, np.float64))


def _steps(x, zero_point):
    """(q − zp) of a dynamically quantized input, from its real value and its scale."""
    return x.real / x.scale


def deployed_integers(path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every integer tensor (and DynamicQuantizeLinear's scale) of the model at `path` as ONNX
    Runtime computes it on x, by name: the values `run(..., pinned=)` takes."""
    import tempfile

    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as folder:  # the graph ONNX Runtime runs: QDQ fused
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = f"{folder}/deployed.onnx"
        ort.InferenceSession(str(path), options)
        model = onnx.load(options.optimized_model_filepath)
    wanted = []
    for node in model.graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            wanted += list(node.output)
        elif node.op_type.startswith(("Quantize", "QLinear", "QGemm")):
            wanted.append(node.output[0])
    if not wanted:
        return {}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    del model.graph.value_info[:]
    for name in wanted:
        elem = types.get(name) or _output_type(model, name)
        model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), plain)
    values = session.run(wanted, {model.graph.input[0].name: x})
    return dict(zip(wanted, values, strict=True))


def _output_type(model: onnx.ModelProto, name: str) -> int:
    """A contrib op's integer output type: its zero point's, else its first input's."""
    node = next(n for n in model.graph.node if name in n.output)
    inits = {t.name: t.data_type for t in model.graph.initializer}
    if node.op_type == "DynamicQuantizeLinear":
        return onnx.TensorProto.FLOAT if name == node.output[1] else onnx.TensorProto.UINT8
    index = {"QuantizeLinear": 2, "QGemm": 8, "QLinearConcat": 1}.get(
        node.op_type, 4 if node.op_type in UNARY else 7)
    zero_point = node.input[index] if index < len(node.input) else ""
    return inits.get(zero_point, onnx.TensorProto.UINT8)


UNARY = ("QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool",
         "QLinearAveragePool", "QLinearSoftmax")


def run(model: onnx.ModelProto, x: np.ndarray,
        pinned: dict[str, np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, x as a leaf) of the first output, in float64 with the straight-through
    gradient; backpropagate from the output to read x.grad. `pinned`: the deployed integers
    (`deployed_integers`), taken as the values of the quantized tensors."""
    graph = model.graph
    values: dict = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    floats = {k: torch.tensor(v.astype(np.float64)) for k, v in values.items()
              if v.dtype.kind == "f" and v.size > 1}
    values.update(floats)
    leaf = torch.tensor(x.astype(np.float64), requires_grad=True)
    values[graph.input[0].name] = leaf
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        args = [values[i] if i else None for i in node.input]
        PIN["now"] = [pinned[o] for o in node.output if o in (pinned or {})]
        result = OPS[node.op_type](*args, **attrs)
        PIN["now"] = []
        if node.op_type == "DynamicQuantizeLinear":
            result[0].scale = result[1]
            values.update(zip(node.output, result, strict=True))
            continue
        values[node.output[0]] = result
    out = values[graph.output[0].name]
    return (out.real if isinstance(out, Quantized) else out), leaf


def straight_through_function(model: onnx.ModelProto, x0: np.ndarray):
    """The straight-through function of `model` around x0, for central differences: every
    quantization step linearised at x0 (identity where in range, constant where saturated)."""
    TAPE.update(mode="record", steps=[], at=0)
    try:
        run(model, x0)
    finally:
        TAPE["mode"] = None
    steps = list(TAPE["steps"])

    def function(x: np.ndarray) -> np.ndarray:
        TAPE.update(mode="replay", steps=steps, at=0)
        try:
            with torch.no_grad():
                return run(model, x)[0].numpy()
        finally:
            TAPE["mode"] = None

    return function


def central_differences(function, x0: np.ndarray, seed: np.ndarray,
                        step: float = 1e-6) -> np.ndarray:
    """d sum(seed · function(x)) / dx at x0, element by element, in float64."""
    x0 = x0.astype(np.float64)
    grad = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        up, down = x0.copy(), x0.copy()
        up[i] += step
        down[i] -= step
        grad[i] = np.sum(seed * (function(up) - function(down))) / (2 * step)
    return grad
