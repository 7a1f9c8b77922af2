"""One small single-op case per differentiable ONNX op, and the ops deliberately left without a
gradient rule, for `test_conformance.py`.

A case names its inputs (float arrays are differentiated when onnx marks that input
Differentiable, unless the case lists it in `fixed`; every other input is an initializer), its
attributes, and which output is differentiated. Inputs are tiny, so float64 central differences
on every element stay cheap, and kept away from kinks (|x| = 0 for Abs, ties for Max) so the
differences are meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.oracle import randn


@dataclass
class Case:
    op: str
    inputs: dict[str, np.ndarray | None]
    attrs: dict = field(default_factory=dict)
    fixed: tuple[str, ...] = ()  # float inputs held constant (the rule refuses or ignores them)
    output: int = 0  # the differentiated output
    outputs: int = 1
    label: str = ""
    unmarked: bool = False  # every float input is differentiated, whatever onnx marks


    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}" if self.label else self.op


def uniform(*shape: int, low: float, high: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 31 * len(shape) + sum(shape))
    return (low + (high - low) * rng.random(shape)).astype(np.float32)


def ints(*values) -> np.ndarray:
    return np.asarray(values, np.int64)


def away_from_zero(*shape: int, seed: int = 0) -> np.ndarray:
    x = randn(*shape, seed=seed)
    return np.where(np.abs(x) < 0.2, x + np.sign(x) * 0.3 + 0.05, x).astype(np.float32)


X23 = randn(2, 3)
X234 = randn(2, 3, 4)
IMAGE = randn(1, 2, 4, 4, seed=3)


def unary(op: str, x: np.ndarray | None = None, label: str = "", **attrs) -> Case:
    return Case(op, {"x": X234 if x is None else x}, attrs, label=label)


def rnn_inputs(gates: int, hidden: int = 2, seq: int = 3, batch: int = 2, size: int = 3,
               directions: int = 1) -> dict[str, np.ndarray]:
    return {"X": randn(seq, batch, size, seed=1),
            "W": 0.5 * randn(directions, gates * hidden, size, seed=2),
            "R": 0.5 * randn(directions, gates * hidden, hidden, seed=3),
            "B": 0.3 * randn(directions, 2 * gates * hidden, seed=4)}


def _cases() -> list[Case]:
    positive = uniform(2, 3, 4, low=0.3, high=2.0)
    within_one = uniform(2, 3, 4, low=-0.8, high=0.8)
    return [
        unary("Abs", away_from_zero(2, 3, 4)),
        unary("Acos", within_one), unary("Asin", within_one), unary("Atanh", within_one),
        unary("Acosh", uniform(2, 3, 4, low=1.2, high=3.0)),
        unary("Asinh"), unary("Atan"), unary("Cos"), unary("Cosh"), unary("Sin"), unary("Sinh"),
        unary("Tan", within_one),
        Case("Add", {"a": X234, "b": randn(3, 1, seed=1)}),
        Case("Sub", {"a": randn(4, seed=1), "b": X234}),
        Case("Mul", {"a": X234, "b": randn(2, 1, 4, seed=1)}),
        Case("Div", {"a": X234, "b": uniform(3, 1, low=0.5, high=2.0)}),
        Case("AveragePool", {"x": randn(1, 2, 5, 5)},
             {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        Case("BatchNormalization", {"x": X234, "scale": randn(3, seed=1), "B": randn(3, seed=2),
                                    "mean": randn(3, seed=3), "var": uniform(3, low=0.5, high=1.5)},
             fixed=("scale", "B", "mean", "var")),
        Case("Cast", {"x": X234}, {"to": TensorProto.DOUBLE}),
        Case("CastLike", {"x": X234, "like": np.zeros((1,), np.float64)}),
        unary("Celu", alpha=0.7), unary("Elu", alpha=0.6), unary("Selu"), unary("Mish"),
        unary("Softsign"), unary("Swish", alpha=0.8), unary("ThresholdedRelu", alpha=0.3),
        unary("Shrink", bias=0.2, lambd=0.5), unary("Erf"), unary("Exp"),
        unary("Log", positive), unary("Sqrt", positive), unary("Reciprocal", positive),
        unary("Neg"), unary("Relu"), unary("Sigmoid"), unary("Softplus"), unary("Tanh"),
        unary("Gelu"), unary("Gelu", approximate="tanh", label="tanh"),
        unary("LeakyRelu", alpha=0.1), unary("HardSigmoid"), unary("HardSwish"),
        unary("Identity"), unary("Dropout"),
        unary("Softmax", axis=1), unary("LogSoftmax", axis=-1), unary("Hardmax", axis=1),
        Case("CenterCropPad", {"x": randn(3, 5), "shape": ints(4, 3)}),
        Case("Clip", {"x": X234, "min": np.float32(-0.5), "max": np.float32(0.6)},
             fixed=("min", "max")),
        Case("Col2Im", {"x": randn(1, 8, 4), "image_shape": ints(3, 3),
                        "block_shape": ints(2, 2)}),
        Case("Compress", {"x": randn(3, 4), "condition": np.asarray([True, False, True])},
             {"axis": 0}),
        Case("Concat", {"a": X23, "b": randn(2, 2, seed=1)}, {"axis": 1}),
        Case("Conv", {"x": randn(1, 2, 5, 5), "w": randn(3, 2, 3, 3, seed=1),
                      "bias": randn(3, seed=2)},
             {"strides": [2, 2], "pads": [1, 1, 1, 1]}, fixed=("w", "bias")),
        Case("ConvTranspose", {"x": randn(1, 2, 3, 3), "w": randn(2, 3, 3, 3, seed=1)},
             {"strides": [2, 2]}, fixed=("w",)),
        Case("CumSum", {"x": randn(2, 4), "axis": np.asarray(1, np.int64)}),
        Case("CumSum", {"x": randn(2, 4), "axis": np.asarray(-1, np.int64)},
             {"exclusive": 1, "reverse": 1}, label="exclusive_reverse"),
        Case("CumProd", {"x": away_from_zero(2, 4), "axis": np.asarray(1, np.int64)}),
        Case("DepthToSpace", {"x": randn(1, 8, 2, 3)}, {"blocksize": 2}),
        Case("DepthToSpace", {"x": randn(1, 8, 2, 3)}, {"blocksize": 2, "mode": "CRD"},
             label="CRD"),
        Case("SpaceToDepth", {"x": randn(1, 2, 4, 6)}, {"blocksize": 2}),
        Case("Det", {"x": randn(2, 3, 3)}),
        Case("Einsum", {"a": randn(2, 2, 3), "b": randn(2, 3, 4, seed=1)},
             {"equation": "bij,bjk->bik"}),
        Case("Einsum", {"a": randn(3, 4), "b": randn(4, seed=1)}, {"equation": "ij,j->i"},
             label="matvec"),
        Case("Einsum", {"a": randn(2, 3, 4)}, {"equation": "...ij->...j"}, label="sum_ellipsis"),
        Case("Einsum", {"a": randn(2, 3, 4), "b": randn(4, 5, seed=1)}, {"equation": "bij,jk"},
             label="implicit_output"),
        Case("Einsum", {"a": randn(2, 3, 2, 4), "b": randn(2, 3, 5, 4, seed=1)},
             {"equation": "bhqd,bhkd->bhqk"}, label="attention_scores"),
        Case("Einsum", {"a": randn(3, 4), "b": randn(5, seed=1)}, {"equation": "ij,k->jk"},
             label="summed_alone"),
        Case("Expand", {"x": randn(3, 1), "shape": ints(2, 3, 4)}),
        Case("Flatten", {"x": X234}, {"axis": 2}),
        Case("Gather", {"x": randn(4, 3), "i": ints([0, 2], [3, 0])}, {"axis": 0}),
        Case("GatherElements", {"x": randn(3, 4), "i": ints([0, 3], [1, 1], [2, 0])},
             {"axis": 1}),
        Case("GatherND", {"x": X234, "i": ints([0, 1], [1, 2], [0, 1])}),
        Case("Gemm", {"a": X23, "b": randn(4, 3, seed=1), "c": randn(4, seed=2)},
             {"alpha": 0.5, "beta": 1.5, "transB": 1}),
        Case("MatMul", {"a": X234, "b": randn(4, 2, seed=1)}),
        Case("GlobalAveragePool", {"x": IMAGE}), Case("GlobalMaxPool", {"x": IMAGE}),
        Case("GlobalLpPool", {"x": IMAGE}, {"p": 2}),
        Case("LpPool", {"x": IMAGE}, {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2}),
        Case("MaxPool", {"x": IMAGE}, {"kernel_shape": [2, 2], "strides": [2, 2]}, outputs=2),
        Case("LRN", {"x": IMAGE}, {"size": 3}),
        Case("GridSample", {"x": randn(2, 2, 3, 4), "grid": uniform(2, 2, 3, 2, low=-1.2,
                                                                    high=1.2)},
             fixed=("grid",)),
        Case("GridSample", {"x": randn(1, 2, 3, 4), "grid": uniform(1, 3, 3, 2, low=-1.2,
                                                                    high=1.2, seed=1)},
             {"align_corners": 1, "padding_mode": "border"}, fixed=("grid",),
             label="align_corners_border"),
        Case("GridSample", {"x": randn(1, 2, 3, 4), "grid": uniform(1, 3, 3, 2, low=-1.2,
                                                                    high=1.2, seed=2)},
             {"mode": "nearest"}, fixed=("grid",), label="nearest"),
        Case("GroupNormalization", {"x": randn(2, 4, 3), "scale": randn(4, seed=1),
                                    "bias": randn(4, seed=2)}, {"num_groups": 2}),
        Case("InstanceNormalization", {"x": X234, "scale": randn(3, seed=1),
                                       "B": randn(3, seed=2)}, fixed=("scale", "B")),
        Case("LpNormalization", {"x": randn(2, 4)}, {"axis": 1, "p": 2}),
        Case("LpNormalization", {"x": away_from_zero(2, 4)}, {"axis": 0, "p": 1}, label="p1"),
        Case("MeanVarianceNormalization", {"x": randn(2, 3, 4, 2)}),
        Case("LSTM", rnn_inputs(4), {"hidden_size": 2}, outputs=3),
        Case("LSTM", rnn_inputs(4), {"hidden_size": 2}, outputs=3, output=2, label="Y_c"),
        Case("LSTM", rnn_inputs(4, directions=2), {"hidden_size": 2, "direction":
                                                  "bidirectional"}, outputs=3, output=1,
             label="bidirectional_Y_h"),
        Case("LSTM", {**rnn_inputs(4), "lengths": None, "h0": randn(1, 2, 2, seed=5),
                      "c0": randn(1, 2, 2, seed=6), "P": randn(1, 6, seed=7)},
             {"hidden_size": 2}, outputs=3, label="peepholes_initial_state"),
        Case("GRU", rnn_inputs(3), {"hidden_size": 2}, outputs=2),
        Case("GRU", {**rnn_inputs(3, directions=2), "lengths": np.asarray([3, 3], np.int32)},
             {"hidden_size": 2, "direction": "bidirectional"}, outputs=2,
             label="bidirectional_full_lengths"),
        Case("GRU", rnn_inputs(3), {"hidden_size": 2, "linear_before_reset": 1}, outputs=2,
             output=1, label="linear_before_reset"),
        Case("RNN", rnn_inputs(1), {"hidden_size": 2}, outputs=2),
        Case("RNN", rnn_inputs(1), {"hidden_size": 2, "direction": "reverse"}, outputs=2,
             output=1, label="reverse"),
        Case("Max", {"a": X234, "b": randn(3, 1, seed=1), "c": randn(4, seed=2)}),
        Case("Min", {"a": X234, "b": randn(3, 1, seed=1)}),
        Case("Mean", {"a": X234, "b": randn(4, seed=1)}),
        Case("Sum", {"a": X234, "b": randn(3, 1, seed=1), "c": randn(4, seed=2)}),
        Case("MaxRoiPool", {"x": IMAGE, "rois": np.asarray([[0, 0, 0, 3, 2]], np.float32)},
             {"pooled_shape": [2, 2]}, fixed=("rois",)),
        Case("MaxUnpool", {"x": randn(1, 1, 2, 2), "i": ints([[[0, 3], [9, 14]]])},
             {"kernel_shape": [2, 2], "strides": [2, 2]}),
        Case("Mod", {"a": X234, "b": uniform(4, low=0.4, high=0.9)}, {"fmod": 1}, fixed=("b",)),
        Case("NegativeLogLikelihoodLoss", {"x": randn(3, 4), "t": ints(1, 0, 3),
                                           "w": uniform(4, low=0.5, high=1.5)},
             {"reduction": "mean"}, fixed=("w",)),
        Case("SoftmaxCrossEntropyLoss", {"x": randn(3, 4), "t": ints(1, 0, 3)},
             {"reduction": "mean"}),
        Case("PRelu", {"x": X234, "slope": randn(3, 1, seed=1)}),
        Case("Pad", {"x": X23, "pads": ints(1, 0, 0, 2)}),
        Case("Pad", {"x": randn(3, 4), "pads": ints(1, 2, 1, 1)}, {"mode": "reflect"},
             label="reflect"),
        Case("Pow", {"x": positive, "p": randn(4, seed=1)}),
        Case("ReduceL1", {"x": away_from_zero(2, 3, 4), "axes": ints(1)}, {"keepdims": 0}),
        Case("ReduceL2", {"x": X234, "axes": ints(0, 2)}),
        Case("ReduceLogSum", {"x": positive, "axes": ints(-1)}),
        Case("ReduceLogSumExp", {"x": X234, "axes": ints(1)}, {"keepdims": 0}),
        Case("ReduceMax", {"x": X234, "axes": ints(1)}),
        Case("ReduceMin", {"x": X234, "axes": ints(2)}, {"keepdims": 0}),
        Case("ReduceMean", {"x": X234, "axes": ints(0, 2)}),
        Case("ReduceProd", {"x": away_from_zero(2, 3, 4), "axes": ints(1)}),
        Case("ReduceSum", {"x": X234, "axes": ints(1)}, {"keepdims": 0}),
        Case("ReduceSumSquare", {"x": X234}),
        Case("Reshape", {"x": X234, "shape": ints(4, 6)}),
        Case("Resize", {"x": randn(1, 1, 2, 3), "roi": None,
                        "scales": np.asarray([1, 1, 2, 2], np.float32)}, {"mode": "linear"},
             fixed=("scales",)),
        Case("ScatterElements", {"x": randn(3, 4), "i": ints([1, 0, 2, 1]),
                                 "u": randn(1, 4, seed=1)}, {"axis": 0}),
        Case("ScatterND", {"x": randn(4, 3), "i": ints([1], [3]), "u": randn(2, 3, seed=1)}),
        Case("Slice", {"x": randn(3, 5), "starts": ints(0, 1), "ends": ints(2, 5),
                       "axes": ints(0, 1), "steps": ints(1, 2)}),
        Case("Split", {"x": randn(2, 6), "split": ints(2, 4)}, {"axis": 1}, outputs=2,
             output=1),
        Case("Squeeze", {"x": randn(2, 1, 3), "axes": ints(1)}),
        Case("Unsqueeze", {"x": X23, "axes": ints(0)}),
        Case("SwiGLU", {"a": X234, "b": randn(2, 3, 4, seed=1)}, {"alpha": 1.2}),
        Case("TensorScatter", {"cache": randn(2, 5, 3), "update": randn(2, 2, 3, seed=1),
                               "at": ints(0, 2)}),
        Case("TensorScatter", {"cache": randn(2, 5, 3), "update": randn(2, 2, 3, seed=1),
                               "at": ints(1, 4)}, {"mode": "circular"}, label="circular"),
        Case("TensorScatter", {"cache": randn(1, 4, 2, 3), "update": randn(1, 2, 2, 3, seed=1)},
             {"axis": 1}, label="axis1_no_indices"),
        Case("Tile", {"x": X23, "repeats": ints(2, 1)}),
        Case("TopK", {"x": randn(2, 5), "k": ints(3)}, outputs=2),
        Case("TopK", {"x": randn(4, 3), "k": ints(2)}, {"axis": 0, "largest": 0}, outputs=2,
             label="smallest_axis0"),
        Case("Compress", {"x": randn(2, 3), "condition": np.asarray([True, False, True, True])},
             label="flattened"),
        Case("ScatterND", {"x": randn(4, 3), "i": ints([1], [1]), "u": randn(2, 3, seed=1)},
             {"reduction": "add"}, label="add_repeated"),
        Case("ScatterElements", {"x": randn(3, 4), "i": ints([1, 0], [2, 1]),
                                 "u": randn(2, 2, seed=1)}, {"axis": 1, "reduction": "add"},
             label="add"),
        Case("Einsum", {"a": randn(2, 1, 2, 3), "b": randn(1, 3, 3, 4, seed=1)},
             {"equation": "...ij,...jk->...ik"}, label="broadcast_ellipsis"),
        Case("ReduceProd", {"x": np.asarray([[0.0, 1.5, -2.0], [0.0, 0.0, 3.0]], np.float32),
                            "axes": ints(1)}, label="zeros"),
        Case("Transpose", {"x": X234}, {"perm": [2, 0, 1]}),
        Case("Trilu", {"x": randn(3, 4), "k": np.asarray(1, np.int64)}, {"upper": 0}),
        Case("Where", {"c": np.asarray([[True, False, True]]), "a": X23,
                       "b": randn(2, 1, seed=1)}),
        Case("CausalConvWithState", {"x": randn(1, 2, 4), "w": randn(2, 1, 3, seed=1)},
             fixed=("w",), outputs=2),
        Case("LinearAttention", {"q": randn(1, 2, 4), "k": randn(1, 2, 4, seed=1),
                                 "v": randn(1, 2, 4, seed=2)},
             {"q_num_heads": 1, "kv_num_heads": 1, "update_rule": "linear"}, outputs=2),
        Case("LinearAttention", {"q": randn(1, 3, 8), "k": 0.5 * randn(1, 3, 4, seed=1),
                                 "v": randn(1, 3, 4, seed=2),
                                 "state": np.zeros((1, 1, 4, 4), np.float32),
                                 "decay": -uniform(1, 3, 1, low=0.1, high=0.5),
                                 "beta": uniform(1, 3, 1, low=0.2, high=0.8)},
             {"q_num_heads": 2, "kv_num_heads": 1}, outputs=2, label="gated_delta_gqa"),
    ]


def _scan_body() -> onnx.GraphProto:
    """s' = s + x_t * w, y_t = tanh(s'): a running sum with a per-step output."""
    typed = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("s", "x_t")]
    nodes = [helper.make_node("Mul", ["x_t", "w"], ["m"]), helper.make_node("Add", ["s", "m"],
                                                                            ["s2"]),
             helper.make_node("Tanh", ["s2"], ["y_t"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("s2", "y_t")]
    w = numpy_helper.from_array(np.asarray([0.5, -1.5], np.float32), "w")
    return helper.make_graph(nodes, "scan_body", typed, outputs, [w])


def _loop_body() -> onnx.GraphProto:
    """A for loop: v' = 0.9 v + sin(v), each v' also collected."""
    typed = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])]
    nodes = [helper.make_node("Identity", ["cond"], ["cond_out"]),
             helper.make_node("Sin", ["v"], ["sv"]),
             helper.make_node("Mul", ["v", "decay"], ["dv"]),
             helper.make_node("Add", ["dv", "sv"], ["v2"]),
             helper.make_node("Identity", ["v2"], ["v2_scan"])]
    outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
               helper.make_tensor_value_info("v2", TensorProto.FLOAT, [2]),
               helper.make_tensor_value_info("v2_scan", TensorProto.FLOAT, [2])]
    decay = numpy_helper.from_array(np.asarray(0.9, np.float32), "decay")
    return helper.make_graph(nodes, "loop_body", typed, outputs, [decay])


def _unmarked_cases() -> list[Case]:
    """Ops whose float inputs onnx leaves Unknown (not marked Differentiable) though models
    differentiate through them: transformer blocks at opset 23+, sequence reversal."""
    return [
        Case("LayerNormalization", {"x": X234, "scale": randn(4, seed=1), "bias": randn(4, seed=2)},
             {"axis": -1}, fixed=("scale", "bias")),
        Case("RMSNormalization", {"x": X234, "scale": randn(4, seed=1)}),
        Case("RotaryEmbedding", {"x": randn(2, 2, 3, 4), "cos": randn(5, 2, seed=1),
                                 "sin": randn(5, 2, seed=2), "positions": ints([0, 1, 2],
                                                                                [2, 3, 4])},
             fixed=("cos", "sin")),
        Case("RotaryEmbedding", {"x": randn(2, 3, 12), "cos": randn(2, 3, 2, seed=1),
                                 "sin": randn(2, 3, 2, seed=2)},
             {"interleaved": 1, "num_heads": 2, "rotary_embedding_dim": 4},
             fixed=("cos", "sin"), label="interleaved_partial_3d"),
        Case("Attention", {"q": randn(1, 2, 3, 4), "k": randn(1, 2, 3, 4, seed=1),
                           "v": randn(1, 2, 3, 4, seed=2)}),
        Case("Attention", {"q": randn(1, 2, 3, 4), "k": randn(1, 2, 3, 4, seed=1),
                           "v": randn(1, 2, 3, 4, seed=2)}, {"is_causal": 1}, label="causal"),
        Case("AffineGrid", {"theta": randn(2, 2, 3), "size": ints(2, 1, 3, 4)}),
        Case("AffineGrid", {"theta": randn(1, 2, 3), "size": ints(1, 1, 3, 4)},
             {"align_corners": 1}, label="align_corners"),
        Case("AffineGrid", {"theta": randn(1, 3, 4), "size": ints(1, 1, 2, 3, 4)},
             label="volumetric"),
        Case("GridSample", {"x": randn(2, 2, 3, 4), "grid": uniform(2, 2, 3, 2, low=-1.2,
                                                                    high=1.2, seed=3)},
             label="grid_too"),
        Case("GridSample", {"x": randn(1, 2, 3, 4), "grid": uniform(1, 3, 3, 2, low=-1.2,
                                                                    high=1.2, seed=4)},
             {"align_corners": 1, "padding_mode": "border"}, label="grid_too_border"),
        Case("ReverseSequence", {"x": randn(3, 2), "lengths": ints(2, 3)},
             {"batch_axis": 1, "time_axis": 0}),
        Case("Scan", {"s0": randn(2), "x": randn(4, 2, seed=1)},
             {"body": _scan_body(), "num_scan_inputs": 1}, outputs=2, output=1),
        Case("Scan", {"s0": randn(2), "x": randn(4, 2, seed=1)},
             {"body": _scan_body(), "num_scan_inputs": 1}, outputs=2, output=0,
             label="final_state"),
        Case("Loop", {"trips": np.asarray(3, np.int64), "cond": np.asarray(True),
                      "v0": randn(2)}, {"body": _loop_body()}, outputs=2, output=1),
        Case("Loop", {"trips": np.asarray(3, np.int64), "cond": np.asarray(True),
                      "v0": randn(2)}, {"body": _loop_body()}, outputs=2, output=0,
             label="final_state"),
    ]


CASES: list[Case] = _cases()
UNMARKED_CASES: list[Case] = [Case(**{**c.__dict__, "unmarked": True}) for c in _unmarked_cases()]

# Ops deliberately without a rule, each with the reason. test_conformance.py checks that each is
# refused in one line (and, for ops ONNX Runtime cannot run, that it still cannot).
NOT_DIFFERENTIATED: dict[str, str] = {
    "Swish": "ONNX Runtime 1.32 has no kernel for it (opset 24); its rule is ready",
    "SwiGLU": "ONNX Runtime 1.32 has no kernel for it (opset 28); its rule is ready",
    "MaxRoiPool": "ONNX Runtime 1.32 has no kernel for its opset 22 version",
    "GlobalLpPool": "ONNX Runtime 1.32 has no kernel for its opset 22 version; its rule is ready",
}
