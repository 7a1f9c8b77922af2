"""Float shadows of integer tensors: the vocabulary `quantized.py` rewrites quantized ops with.

A shadow is a float32 tensor that holds exactly the integers of a quantized tensor (an int8
activation, an int32 accumulator) and carries the straight-through gradient with respect to
the float tensors it was quantized from. `Shadows` emits the standard ONNX nodes that build
them, and keeps which integer tensor each one stands for.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
# The integer range of each quantized type (the saturation of QuantizeLinear).
QUANT_RANGE = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127),
               TensorProto.UINT16: (0, 65535), TensorProto.INT16: (-32768, 32767),
               TensorProto.INT32: (-2 ** 31, 2 ** 31 - 1), TensorProto.UINT4: (0, 15),
               TensorProto.INT4: (-8, 7)}


def _stop_scale(elem: int) -> float:
    """2^k for `stop`: |v| < 2^(bits+1) once masked, so v·2^k stays below float32's 2^128,
    and Round(v·2^k)·2^-k is v itself for every |v| >= 2^(bits-101) (v·2^k >= 2^24 is an
    integer in float32). Smaller |v| is off by under 2^(bits-102): far below one step."""
    low, high = QUANT_RANGE[elem]
    bits = int(np.ceil(np.log2(high - low + 1)))
    return float(2.0 ** (125 - bits))


class Shadows:
    """New nodes and initializers, with fresh names, and the shadow of each integer tensor."""

    def __init__(self, model: onnx.ModelProto, infos: dict[str, tuple[int, tuple | None]]):
        graph = model.graph
        self.taken = {n for node in graph.node for n in (*node.input, *node.output)}
        self.taken |= {t.name for t in graph.initializer}
        self.taken |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        # Element type and shape of every tensor shape inference knows (autodiff.walk's
        # value_infos), which op produces each tensor, and the default-domain opset.
        self.types = {name: elem for name, (elem, _) in infos.items() if elem}
        self.shapes = {name: shape for name, (_, shape) in infos.items()}
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.opset = next((o.version for o in model.opset_import
                           if o.domain in ("", "ai.onnx")), 1)
        self.constants = _Constants(graph)
        self.of: dict[str, str] = {}  # integer tensor -> its float shadow
        self.qtype: dict[str, int] = {}  # integer tensor -> its element type
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []

    # --- emission ----------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        return self.unique(f"onnxpath_quant/{hint}")

    def unique(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, domain: str = "",
           node_name: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        name = self.unique(node_name) if node_name else self.fresh(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain,
                                           name=name, **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        name = self.fresh("const")
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.constants[name] = array
        return name

    # --- reading the model -------------------------------------------------------------------
    def value(self, name: str | None) -> np.ndarray | None:
        """The value of an initializer or Constant output; None when computed at run time."""
        return self.constants.get(name) if name else None

    def elem(self, name: str, default: int = TensorProto.UINT8) -> int:
        if name in self.qtype:
            return self.qtype[name]
        if name in self.constants:
            return helper.np_dtype_to_tensor_dtype(self.constants.get(name).dtype)
        return self.types.get(name, default)

    # --- floats ------------------------------------------------------------------------------
    def as_float(self, name: str, shape: tuple | None = None) -> str:
        """A float32 tensor with the values of `name`: its shadow, a float32 constant (reshaped
        to `shape` when given, for per-channel parameters), or a Cast."""
        if name in self.of:
            return self.of[name]
        value = self.value(name)
        if value is not None:
            value = value.astype(np.float32)
            return self.const(value.reshape(shape) if shape and value.size > 1 else value)
        cast = self.op("Cast", name, to=FLOAT) if self.elem(name, FLOAT) != FLOAT else name
        return self.op("Reshape", cast, self.const(shape, np.int64)) if shape else cast

    def zero_point(self, name: str | None, elem: int) -> str:
        """The zero point input as given, or the zero of `elem` where it is left out."""
        if name:
            return name
        return self.const(0, helper.tensor_dtype_to_np_dtype(elem))

    # --- straight-through quantization -------------------------------------------------------
    def straight_through(self, q: str, steps: str, zero_point: str, elem: int) -> str:
        """The shadow: value q (the integers, as float32; no adjoint reaches them), gradient
        d shadow / d steps = 1 where the rounded value Round(steps) + zero_point lies inside
        the integer range of `elem`, inclusive (torch.fake_quantize_per_tensor_affine's mask),
        and 0 outside, where the quantizer saturates."""
        low, high = QUANT_RANGE[elem]
        zp = self.as_float(zero_point)
        rounded = self.op("Round", steps)
        above = self.op("Greater", rounded, self.op("Sub", self.const(low - 0.5), zp))
        below = self.op("Less", rounded, self.op("Sub", self.const(high + 0.5), zp))
        inside = self.op("Cast", self.op("And", above, below), to=FLOAT)
        masked = self.op("Mul", steps, inside)
        k = _stop_scale(elem)
        # Round passes no gradient: `stopped` has the value of `masked` and no adjoint, so
        # `carrier` is exactly 0 with gradient `inside`.
        stopped = self.op("Mul", self.op("Round", self.op("Mul", masked, self.const(k))),
                          self.const(1.0 / k))
        carrier = self.op("Sub", masked, stopped)
        return self.op("Add", q, carrier)

    def clamp_as_relu(self, x: str, half_step: str, label: str) -> tuple[str, str]:
        """(Relu(x), its straight-through stand-in) for a quantizer whose zero point is the
        bottom of its range. Relu(x) quantizes to the same integers as x, and is the node the
        pathway masks and guided backprop hooks. The stand-in has the value of Relu(x) where
        x >= −half_step and the gradient of the bare estimate: 1 for x >= −half_step (values
        that round into the range), 0 below; Relu alone would gate at 0 instead. The Relu is
        named `label`/Relu (the tensor it clamps), as pathway layers are listed by name."""
        relu = self.op("Relu", x, node_name=f"{label}/Relu")
        # -half_step <= x <= 0: Relu passes nothing there (its gate is y > 0), x itself does.
        near = self.op("And", self.op("Not", self.op("Less", x, self.op("Neg", half_step))),
                       self.op("Not", self.op("Greater", x, self.const(0.0))))
        below = self.op("Mul", x, self.op("Cast", near, to=FLOAT))
        return relu, self.op("Add", relu, below)

    def quantize(self, x: str, scale: str, zero_point: str | None, elem: int,
                 relu: bool = False, rank: int | None = None, attrs: dict | None = None,
                 domain: str = "") -> str:
        """The shadow of QuantizeLinear(x, scale, zero_point, **attrs): its integers from ONNX
        Runtime's own QuantizeLinear (of `domain`: com.microsoft's takes 16-bit types before
        opset 21), its gradient straight through. `relu` puts an explicit Relu in front (the
        clamp at the zero point stands for it: see quantized.py)."""
        attrs = dict(attrs or {})
        shape = self.axis_shape(scale, attrs.get("axis"), rank)
        scale32 = self.as_float(scale, shape)
        x32 = x if self.types.get(x, FLOAT) == FLOAT else self.op("Cast", x, to=FLOAT)
        if relu:
            x, x32 = self.clamp_as_relu(x32, self.op("Mul", scale32, self.const(0.5)), x)
        zp = self.zero_point(zero_point, elem)
        integers = self.op("QuantizeLinear", x, scale, zp, domain=domain, **attrs)
        if domain:  # shape inference cannot type a contrib op's output: say it is integer
            self.value_info.append(helper.make_tensor_value_info(integers, elem, None))
        q = self.op("Cast", integers, to=FLOAT)
        steps = self.op("Div", x32, scale32)
        return self.straight_through(q, steps, self.as_float(zp, shape) if shape else zp, elem)

    def requantize(self, steps: str, zero_point: str | None, elem: int,
                   relu: bool = False, label: str = "") -> str:
        """The shadow of saturate(Round(steps) + zero_point): the requantization that ends
        QLinearConv, QLinearMatMul and QGemm, where `steps` = accumulator × scale ratio;
        `label` names a restored Relu (the op's output)."""
        value = steps
        if relu:
            value, steps = self.clamp_as_relu(steps, self.const(0.5), label or steps)
        zp = self.zero_point(zero_point, elem)
        q = self.op("Cast", self.op("QuantizeLinear", value, self.const(1.0), zp), to=FLOAT)
        return self.straight_through(q, steps, zp, elem)

    def dequantize(self, shadow: str, scale: str, zero_point: str | None,
                   axis: int | None = None, rank: int | None = None,
                   out: str | None = None) -> str:
        """(shadow − zero_point) × scale, as DequantizeLinear computes it."""
        shape = self.axis_shape(scale, axis, rank)
        centred = shadow if not zero_point else \
            self.op("Sub", shadow, self.as_float(zero_point, shape))
        scaled = self.op("Mul", centred, self.as_float(scale, shape),
                         out=out if self.elem(scale, FLOAT) == FLOAT else None)
        if self.elem(scale, FLOAT) != FLOAT:
            return self.op("Cast", scaled, to=self.elem(scale), out=out)
        return scaled

    def axis_shape(self, param: str, axis: int | None, rank: int | None) -> tuple | None:
        """The broadcast shape of a per-axis scale or zero point; None for a per-tensor one."""
        value = self.value(param)
        if value is None or value.size == 1:  # a run-time scale is a scalar (dynamic)
            return None
        if rank is None:
            raise ValueError(f"per-axis quantization parameter '{param}' on a tensor of "
                             "unknown rank")
        axis = (1 if axis is None else axis) % rank
        return tuple(-1 if i == axis else 1 for i in range(rank))


class _Constants(dict):
    """Initializer and Constant values, decoded only when asked for (weights stay protos)."""

    def __init__(self, graph: onnx.GraphProto):
        super().__init__()
        self._protos = {t.name: t for t in graph.initializer
                        if t.data_location != TensorProto.EXTERNAL}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and \
                    node.attribute[0].name == "value":
                self._protos[node.output[0]] = node.attribute[0].t

    def get(self, name, default=None):
        if not super().__contains__(name) and name in self._protos:
            self[name] = numpy_helper.to_array(self._protos[name])
        return super().get(name, default)

    def __contains__(self, name) -> bool:
        return super().__contains__(name) or name in self._protos
