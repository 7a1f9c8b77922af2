"""Independent oracles for the ONNX autodiff: torch autograd in float64, and central finite
differences on a float64 copy of the ONNX model for ops torch cannot express.

Every check compares the gradient of `sum(seed * output)` that onnxpath's gradient graph computes
in float32 with the oracle's, by the max relative error max|a - b| / max|b|.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxpath.autodiff import SEED, grad_name, gradient_graph
from onnxpath.engine.gradient import GradientEngine, one_hot
from onnxpath.intake.model import normalise
from onnxpath.ort.sessions import make_session

TOLERANCE = 1e-4
COSINE_FLOOR = 0.9999

# (test id, error) of every check, for the per-family summary conftest.py prints.
RECORD: list[tuple[str, float]] = []
CURRENT_TEST = ""


def record(error: float) -> float:
    RECORD.append((CURRENT_TEST, error))
    return error


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    diff = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def cosine(actual: np.ndarray, expected: np.ndarray) -> float:
    a, e = np.ravel(actual).astype(np.float64), np.ravel(expected).astype(np.float64)
    return float(a @ e / (np.linalg.norm(a) * np.linalg.norm(e)))


# --- torch modules, exported ---------------------------------------------------------------

def randomise_batchnorm(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Random running statistics and affine terms, so BN is not the identity in eval mode."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                m.weight.copy_(0.5 + torch.rand(c, generator=generator))
                m.bias.copy_(0.2 * torch.randn(c, generator=generator))
    return module.eval()


def export(module: torch.nn.Module, x: np.ndarray, opset: int = 17,
           dynamic_batch: bool = False, exporter: str = "torchscript") -> onnx.ModelProto:
    """torch.onnx's TorchScript exporter, or (`exporter="dynamo"`) the torch.export-based one,
    which writes opset 18+ graphs with other patterns (axes as inputs, decomposed ops)."""
    if exporter == "dynamo":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dims = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
            program = torch.onnx.export(module.eval(), (torch.from_numpy(x),), dynamo=True,
                                        dynamic_shapes=dims, verbose=False)
        return program.model_proto
    buffer = io.BytesIO()
    axes = {"x": {0: "N"}, "logits": {0: "N"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), buffer, dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["logits"],
                          dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def torch_gradient(module: torch.nn.Module, x: np.ndarray, seed: np.ndarray):
    """(output, d sum(seed * output) / dx), both by the module itself in float64."""
    reference = copy.deepcopy(module).double().eval()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = reference(xt)
    (y * torch.from_numpy(seed.astype(np.float64))).sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


def onnx_gradient(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray):
    """(logits, input gradient) through the product path: normalise, then GradientEngine."""
    info = normalise(model, x.shape)
    logits, grads, _ = GradientEngine(info).gradients(x, seed)
    return logits, grads[info.input_name]


def check_module(module: torch.nn.Module, shape: Sequence[int], classes: Sequence[int] = (0, 1),
                 seed: int = 0, dynamic_batch: bool = False, opset: int = 17,
                 model_hook: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
                 exporter: str = "torchscript") -> float:
    """Export `module`, then compare onnxpath's input gradient of the seeded logits with torch's.

    Returns the max relative error; asserts it (and the forward pass) against TOLERANCE.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    model = export(module, x, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter)
    if model_hook is not None:
        model = model_hook(model)
    expected_y, _ = torch_gradient(module, x, np.zeros((1,), np.float32))
    seed_array = one_hot(classes, expected_y.shape[-1]) if expected_y.ndim == 2 else \
        rng.standard_normal(expected_y.shape).astype(np.float32)
    expected_y, expected_g = torch_gradient(module, x, seed_array)
    logits, grad = onnx_gradient(model, x, seed_array)
    assert relative_error(logits, expected_y) <= TOLERANCE, "forward pass differs from torch"
    error = relative_error(grad, expected_g)
    assert error <= TOLERANCE, f"input gradient max relative error {error:.3g}"
    return record(error)


# --- ONNX graphs built by hand ------------------------------------------------------------

def graph_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, np.ndarray],
                constants: Sequence[str] = (), opset: int = 17,
                output: str = "y") -> onnx.ModelProto:
    """A model over `nodes`: float arrays not in `constants` become graph inputs, the rest
    initializers (weights, shapes, indices)."""
    assert output not in inputs, f"an input may not be named like the output '{output}'"
    graph_inputs, initializers = [], []
    for name, value in inputs.items():
        if value is None:
            continue
        if value.dtype.kind == "f" and name not in constants:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, value.shape))
        else:
            initializers.append(numpy_helper.from_array(value, name))
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
    graph = helper.make_graph(list(nodes), "case", graph_inputs, [out], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def node_model(op_type: str, inputs: dict[str, np.ndarray | None], attrs: dict | None = None,
               constants: Sequence[str] = (), opset: int = 17) -> onnx.ModelProto:
    """One node `op_type(*inputs) -> y`; a None input is an absent optional input."""
    node = helper.make_node(op_type, [n if v is not None else "" for n, v in inputs.items()],
                            ["y"], **(attrs or {}))
    return graph_model([node], inputs, constants, opset)


def differentiable_inputs(model: onnx.ModelProto) -> list[str]:
    return [i.name for i in model.graph.input
            if i.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE)]


def graph_gradient(model: onnx.ModelProto, feeds: dict[str, np.ndarray], seed: np.ndarray,
                   wrt: Sequence[str] | None = None):
    """(output, {input: gradient}) from the gradient graph of the model's first output."""
    wrt = list(wrt or differentiable_inputs(model))
    of = model.graph.output[0].name
    session = make_session(gradient_graph(model, of, wrt))
    names = [of, *(grad_name(w) for w in wrt)]
    values = session.run(names, {**feeds, SEED: seed})
    return values[0], dict(zip(wrt, values[1:], strict=True))


def _as_torch(value: np.ndarray, requires_grad: bool) -> torch.Tensor:
    if value.dtype.kind == "f":
        return torch.tensor(value, dtype=torch.float64, requires_grad=requires_grad)
    return torch.from_numpy(value)


def reference_gradient(reference: Callable, args: dict[str, np.ndarray | None],
                       wrt: Sequence[str], seed_for: Callable[[tuple], np.ndarray]):
    """Run `reference(*args)` in float64 torch; return (output, seed, {wrt: gradient})."""
    tensors = {n: None if v is None else _as_torch(v, n in wrt) for n, v in args.items()}
    y = reference(*tensors.values())
    seed = seed_for(tuple(y.shape))
    (y * torch.from_numpy(seed.astype(np.float64))).sum().backward()
    return y.detach().numpy(), seed, {n: tensors[n].grad.numpy() for n in wrt}


def finite_difference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], seed: np.ndarray,
                      wrt: Sequence[str], step: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences of sum(seed * y), element by element, on a float64 copy of `model`
    (ONNX Runtime has float64 CPU kernels for elementwise and indexing ops, not for Conv)."""
    double = to_double(model)
    session = make_session(double)
    feeds64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    seed64 = seed.astype(np.float64)

    def objective(values):
        return float(np.sum(seed64 * session.run(None, values)[0]))

    grads = {}
    for name in wrt:
        base = feeds64[name]
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            shifted = base.copy()
            shifted[index] += step
            up = objective({**feeds64, name: shifted})
            shifted[index] -= 2 * step
            down = objective({**feeds64, name: shifted})
            grad[index] = (up - down) / (2 * step)
        grads[name] = grad
    return grads


def to_double(model: onnx.ModelProto) -> onnx.ModelProto:
    double = copy.deepcopy(model)
    for value in [*double.graph.input, *double.graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for i, init in enumerate(double.graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init).astype(np.float64)
            double.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
    return double


def check_graph(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                reference: Callable | None, args: dict[str, np.ndarray | None] | None = None,
                seed: int = 0, tolerance: float = TOLERANCE) -> float:
    """Compare every input gradient of a hand-built model against `reference` (a float64 torch
    function of `args`, default the feeds) or, when it is None, finite differences."""
    rng = np.random.default_rng(seed + 1000)
    wrt = differentiable_inputs(model)

    def seed_for(shape):
        return rng.standard_normal(shape).astype(np.float32)

    if reference is None:
        forward = make_session(model).run(None, feeds)[0]
        seed_array = seed_for(forward.shape)
        expected_y, expected = forward, finite_difference(model, feeds, seed_array, wrt)
    else:
        expected_y, seed_array, expected = reference_gradient(reference, args or feeds, wrt,
                                                              seed_for)
    y, grads = graph_gradient(model, feeds, seed_array, wrt)
    assert relative_error(y, expected_y) <= tolerance, "the oracle computes another function"
    errors = {n: relative_error(grads[n], expected[n]) for n in wrt}
    assert max(errors.values()) <= tolerance, f"max relative error by input: {errors}"
    return record(max(errors.values()))


def check_node(op_type: str, inputs: dict[str, np.ndarray | None], reference: Callable | None,
               attrs: dict | None = None, constants: Sequence[str] = (), opset: int = 17,
               seed: int = 0, tolerance: float = TOLERANCE) -> float:
    """One-node model checked against `reference(*inputs)` (None: finite differences)."""
    model = node_model(op_type, inputs, attrs, constants, opset)
    feeds = {n: v for n, v in inputs.items()
             if v is not None and v.dtype.kind == "f" and n not in constants}
    return check_graph(model, feeds, reference, inputs, seed, tolerance)


def randn(*shape: int, seed: int = 0, low: float | None = None) -> np.ndarray:
    """float32 normal samples; with `low`, uniform in [low, low + 2] (for Log, Sqrt, ...)."""
    rng = np.random.default_rng(seed + sum(shape) * 7 + len(shape))
    if low is not None:
        return np.asarray(low + 2 * rng.random(shape), dtype=np.float32)
    return np.asarray(rng.standard_normal(shape), dtype=np.float32)
