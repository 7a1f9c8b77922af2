"""Recurrent layers (LSTM, GRU, RNN), unrolled over their time steps into MatMul, Add and
activations, and differentiated through the unrolled graph: backpropagation through time.

The equations are the ONNX spec's (gate order i, o, f, c for LSTM and z, r, h for GRU; bias
Wb then Rb). The sequence length must be known once the shapes are inferred, as it is for the
fixed-length text and audio models users export; every step differentiates with the ordinary
rules.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import rule
from onnxpath.autodiff.rules.functions import Body, differentiate_body

ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
DEFAULTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


class _Cell:
    """What every step of one direction shares: the input projections, the recurrence weights,
    the summed biases, the activations."""

    def __init__(self, node: Node, body: Body, b: GraphBuilder, direction: int, hidden: int):
        self.body, self.b, self.hidden = body, b, hidden
        gates = GATES[node.op_type]
        pick = b.ints([direction])

        def weight(i: int) -> str:  # [gates*H, K] of this direction, transposed for MatMul
            return body.op("Transpose", body.op("Squeeze", body.op("Gather", node.inputs[i],
                                                                   pick, axis=0), b.ints([0])))

        self.w, self.r = weight(1), weight(2)
        self.wb = self.rb = None
        if node.input(3):
            bias = body.op("Squeeze", body.op("Gather", node.inputs[3], pick, axis=0),
                           b.ints([0]))
            self.wb, self.rb = body.op("Split", bias, b.ints([gates * hidden] * 2), outputs=2,
                                       axis=0)
        self.peephole = None
        if node.input(7):
            p = body.op("Squeeze", body.op("Gather", node.inputs[7], pick, axis=0), b.ints([0]))
            self.peephole = body.op("Split", p, b.ints([hidden] * 3), outputs=3, axis=0)
        names = _activations(node) or DEFAULTS[node.op_type] * (direction + 1)
        per_direction = len(DEFAULTS[node.op_type])
        self.f = names[direction * per_direction:(direction + 1) * per_direction]
        self.r_h = None  # GRU: the h gate's recurrence weight alone, when reset comes first

    def activate(self, k: int, x: str) -> str:
        return self.body.op(self.f[k], x)

    def state(self, node: Node, i: int, direction: int, x0: str) -> str:
        """initial_h / initial_c of this direction, or zeros [batch, H]."""
        body, b = self.body, self.b
        if node.input(i):
            return body.op("Squeeze", body.op("Gather", node.inputs[i], b.ints([direction]),
                                              axis=0), b.ints([0]))
        zero = helper.make_tensor("value", b.float_type, [1], [0.0])
        shape = body.op("Concat", body.op("Shape", x0, start=0, end=1), b.ints([self.hidden]),
                        axis=0)
        return body.op("ConstantOfShape", shape, value=zero)


def sequence_length(node: Node, b: GraphBuilder) -> int:
    shape = b.shape(node.inputs[0])
    if shape is None or not isinstance(shape[0], int):
        raise ValueError(f"{node.op_type} over a sequence whose length is unknown after shape "
                         "inference: export the model at a fixed length")
    return shape[0]


def _activations(node: Node) -> list[str]:
    """The activation ops named (attribute strings arrive as bytes, in any case)."""
    names = [a.decode() if isinstance(a, bytes) else a for a in node.attr("activations") or []]
    return [ACTIVATIONS.get(n.lower(), n) for n in names]


def _check(node: Node, b: GraphBuilder) -> None:
    if node.attr("layout", 0):
        raise NotImplementedError(f"{node.op_type} with layout=1")
    if node.attr("clip") is not None:
        raise NotImplementedError(f"{node.op_type} with clip")
    if node.attr("input_forget", 0):
        raise NotImplementedError("LSTM with input_forget=1")
    unknown = set(_activations(node)) - set(ACTIVATIONS.values())
    if unknown:
        raise NotImplementedError(f"{node.op_type} activations {sorted(unknown)}")
    if node.input(4):
        lengths = b.constant_value(node.inputs[4])
        seq = sequence_length(node, b)
        if lengths is None or not np.all(lengths == seq):
            raise NotImplementedError(f"{node.op_type} with sequence_lens shorter than the "
                                      "sequence")


def _step(node: Node, cell: _Cell, xw: str, h: str, c: str | None):
    """One time step: (new h, new c)."""
    body, b, hidden = cell.body, cell.b, cell.hidden
    op = node.op_type
    gates = GATES[op]
    hr = body.op("MatMul", h, cell.r)
    if op == "GRU":
        xz, xr, xh = body.op("Split", xw, b.ints([hidden] * 3), outputs=3, axis=-1)
        hz, hr_, hh = body.op("Split", hr, b.ints([hidden] * 3), outputs=3, axis=-1)
        bias = ([None] * 3, [None] * 3) if cell.wb is None else (
            body.op("Split", cell.wb, b.ints([hidden] * 3), outputs=3, axis=0),
            body.op("Split", cell.rb, b.ints([hidden] * 3), outputs=3, axis=0))

        def add(*terms):
            terms = [t for t in terms if t is not None]
            return terms[0] if len(terms) == 1 else body.op("Sum", *terms)

        z = cell.activate(0, add(xz, hz, bias[0][0], bias[1][0]))
        r = cell.activate(0, add(xr, hr_, bias[0][1], bias[1][1]))
        if node.attr("linear_before_reset", 0):
            candidate = add(xh, body.op("Mul", r, add(hh, bias[1][2])), bias[0][2])
        else:
            rh = body.op("MatMul", body.op("Mul", r, h), cell.r_h)
            candidate = add(xh, rh, bias[0][2], bias[1][2])
        h_tilde = cell.activate(1, candidate)
        one_minus_z = body.op("Sub", b.scalar(1.0), z)
        return body.op("Add", body.op("Mul", one_minus_z, h_tilde), body.op("Mul", z, h)), None
    total = body.op("Add", xw, hr)
    if cell.wb is not None:
        total = body.op("Sum", total, cell.wb, cell.rb)
    if op == "RNN":
        return cell.activate(0, total), None
    i, o, f, g = body.op("Split", total, b.ints([hidden] * gates), outputs=gates, axis=-1)
    if cell.peephole is not None:
        pi, po, pf = cell.peephole
        i = body.op("Add", i, body.op("Mul", pi, c))
        f = body.op("Add", f, body.op("Mul", pf, c))
    i, f, g = cell.activate(0, i), cell.activate(0, f), cell.activate(1, g)
    c = body.op("Add", body.op("Mul", f, c), body.op("Mul", i, g))
    if cell.peephole is not None:
        o = body.op("Add", o, body.op("Mul", cell.peephole[1], c))
    h = body.op("Mul", cell.activate(0, o), cell.activate(2, c))
    return h, c


@rule("LSTM", "GRU", "RNN")
def recurrent(node: Node, dy, b: GraphBuilder):
    _check(node, b)
    x = node.inputs[0]
    seq = sequence_length(node, b)
    hidden = node.attr("hidden_size")
    direction = node.attr("direction", "forward")
    directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    body = Body(b)
    steps = body.op("Split", x, b.ints([1] * seq), outputs=seq, axis=0) if seq > 1 else [x]
    xs = [body.op("Squeeze", s, b.ints([0])) for s in steps]
    ys, finals_h, finals_c = [], [], []
    for d, name in enumerate(directions):
        cell = _Cell(node, body, b, d, hidden)
        if node.op_type == "GRU":
            # Rh multiplies (r * h) when the reset comes first: keep it apart from Rz, Rr.
            _, _, cell.r_h = body.op("Split", cell.r, b.ints([hidden] * 3), outputs=3, axis=-1)
        h = cell.state(node, 5, d, xs[0])
        c = cell.state(node, 6, d, xs[0]) if node.op_type == "LSTM" else None
        outputs = [None] * seq
        for t in (range(seq) if name == "forward" else reversed(range(seq))):
            h, c = _step(node, cell, body.op("MatMul", xs[t], cell.w), h, c)
            outputs[t] = h
        ys.append(outputs)
        finals_h.append(h)
        finals_c.append(c)

    def stack(tensors: list[str], axis: int) -> str:
        parts = [body.op("Unsqueeze", t, b.ints([axis])) for t in tensors]
        return parts[0] if len(parts) == 1 else body.op("Concat", *parts, axis=axis)

    results = [stack([stack([ys[d][t] for d in range(len(directions))], 0) for t in range(seq)],
                     0), stack(finals_h, 0)]
    if node.op_type == "LSTM":
        results.append(stack(finals_c, 0))
    renamed = {o: r for o, r in zip(node.outputs, results, strict=False) if o}
    return differentiate_body(node, dy, b, body.nodes, renamed)
