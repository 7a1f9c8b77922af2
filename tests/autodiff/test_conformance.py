"""Op conformance: every op of the default ONNX domain that onnx marks Differentiable, up to the
newest opset ONNX Runtime runs, has either a single-op case whose gradient matches float64
central differences, or an entry in NOT_DIFFERENTIATED saying why not (and it is then refused
in one line). An op with neither fails, so a new onnx release cannot slip an op through.

The oracle is `onnx.reference.ReferenceEvaluator` on a float64 copy of the model, differentiated
numerically element by element, as JAX's lax_autodiff_test checks its primitives against
numerical derivatives. onnxpath's gradient graph runs in float32 in ONNX Runtime.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, defs, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxpath.autodiff import RULES, SEED, grad_name, gradient_graph
from onnxpath.errors import OnnxPathError
from onnxpath.ort.sessions import make_session
from tests.autodiff.conformance_cases import CASES, NOT_DIFFERENTIATED, UNMARKED_CASES, Case
from tests.autodiff.conformance_reference import FLOAT64_FIXES
from tests.oracle import record, relative_error

TOLERANCE = 1e-4
STEP = 1e-5
DIFFERENTIABLE = defs.OpSchema.DifferentiationCategory.Differentiable
NON_DIFFERENTIABLE = defs.OpSchema.DifferentiationCategory.NonDifferentiable


@functools.cache
def newest_opset() -> int:
    """The newest default-domain opset that both onnx defines and ONNX Runtime loads."""
    for version in range(defs.onnx_opset_version(), 0, -1):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)])
        try:
            make_session(model)
            return version
        except Exception:  # noqa: BLE001 -- any refusal means "not this opset"
            continue
    raise AssertionError("ONNX Runtime loads no opset")


def differentiable_ops() -> list[str]:
    """Default-domain ops whose newest schema (at `newest_opset`) has a Differentiable input."""
    opset, names = newest_opset(), set()
    for schema in defs.get_all_schemas_with_history():
        if schema.domain not in ("", "ai.onnx") or schema.since_version > opset:
            continue
        newest = defs.get_schema(schema.name, opset, schema.domain)
        if not newest.deprecated and any(p.differentiation_category == DIFFERENTIABLE
                                          for p in newest.inputs):
            names.add(schema.name)
    return sorted(names)


def _differentiable_positions(case: Case, opset: int) -> list[bool]:
    params = list(defs.get_schema(case.op, opset).inputs)
    flags = []
    for k in range(len(case.inputs)):
        param = params[min(k, len(params) - 1)]
        flags.append(case.unmarked or param.differentiation_category != NON_DIFFERENTIABLE)
    return flags


def _axes_as_attribute(case: Case, opset: int) -> Case:
    """Before opset 18 the reductions take `axes` as an attribute, not an input."""
    schema = defs.get_schema(case.op, opset)
    if "axes" not in case.inputs or "axes" not in schema.attributes:
        return case
    inputs = {k: v for k, v in case.inputs.items() if k != "axes"}
    return Case(**{**case.__dict__, "inputs": inputs,
                   "attrs": {**case.attrs, "axes": [int(a) for a in case.inputs["axes"]]}})


def build(case: Case, opset: int | None = None) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The single-op model and its feeds: differentiable float inputs are graph inputs, the
    rest initializers."""
    opset = opset or newest_opset()
    case = _axes_as_attribute(case, opset)
    graph_inputs, initializers, feeds = [], [], {}
    for (name, value), differentiable in zip(case.inputs.items(),
                                             _differentiable_positions(case, opset), strict=True):
        if value is None:
            continue
        value = np.asarray(value)
        if value.dtype == np.float32 and differentiable and name not in case.fixed:
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                              value.shape))
            feeds[name] = value
        else:
            initializers.append(numpy_helper.from_array(value, name))
    outputs = [f"out{k}" for k in range(case.outputs)]
    node = helper.make_node(case.op, [n if v is not None else "" for n, v in case.inputs.items()],
                            outputs, **case.attrs)
    graph = helper.make_graph([node], case.id, graph_inputs,
                              [helper.make_tensor_value_info(outputs[case.output],
                                                             TensorProto.UNDEFINED, None)],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(model)
    typed = next((v.type for v in [*inferred.graph.value_info, *inferred.graph.output]
                  if v.name == outputs[case.output] and v.type.tensor_type.elem_type), None)
    if typed is not None:
        model.graph.output[0].type.CopyFrom(typed)
    else:
        model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return model, feeds


def float64_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    double = onnx.ModelProto()
    double.CopyFrom(model)
    _to_float64(double.graph)
    return double


def _to_float64(graph: onnx.GraphProto) -> None:
    """float32 to float64 in place: typed values, initializers, casts, subgraphs (Scan/Loop)."""
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init).astype(np.float64)
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    for node in graph.node:
        for attribute in node.attribute:
            # the casts the gradient graph makes to the float type
            if node.op_type == "Cast" and attribute.name == "to" and \
                    attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.DOUBLE
            for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else \
                    list(attribute.graphs):
                _to_float64(subgraph)
        if node.op_type == "GroupNormalization":  # its body computes in its stash type
            kept = [a for a in node.attribute if a.name != "stash_type"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("stash_type", TensorProto.DOUBLE)])


def central_differences(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                        seed: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(output, d sum(seed * output) / d input) by the reference evaluator in float64."""
    reference = ReferenceEvaluator(float64_copy(model), new_ops=FLOAT64_FIXES)
    feeds64 = {k: v.astype(np.float64) for k, v in feeds.items()}
    seed64 = seed.astype(np.float64)

    def objective(values) -> float:
        return float(np.sum(seed64 * reference.run(None, values)[0]))

    grads = {}
    for name, base in feeds64.items():
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            shifted = base.copy()
            shifted[index] += STEP
            up = objective({**feeds64, name: shifted})
            shifted[index] -= 2 * STEP
            grad[index] = (up - objective({**feeds64, name: shifted})) / (2 * STEP)
        grads[name] = grad
    return np.asarray(reference.run(None, feeds64)[0]), grads


GRADIENT_CASES = [c for c in CASES if c.op not in NOT_DIFFERENTIATED] + UNMARKED_CASES
VERIFIED: set[str] = set()


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=[c.id for c in GRADIENT_CASES])
def test_gradient_matches_central_differences(case: Case):
    check(case, newest_opset())
    VERIFIED.add(case.op)


OLDER_OPSET = 17  # torch.onnx's TorchScript exporter writes it by default


def _valid_at(case: Case, opset: int) -> bool:
    """Whether the case is a valid model at `opset` too (the op existed, with these inputs and
    attributes), and ONNX Runtime runs it."""
    try:
        model, feeds = build(case, opset)
        make_session(model).run(None, feeds)
        return True
    except Exception:  # noqa: BLE001 -- any refusal means "not at this opset"
        return False


OLDER_CASES = [c for c in GRADIENT_CASES if _valid_at(c, OLDER_OPSET)]


@pytest.mark.parametrize("case", OLDER_CASES, ids=[c.id for c in OLDER_CASES])
def test_gradient_at_an_older_opset(case: Case):
    """The same case where it is also valid at opset 17: rules emit ops in the model's own
    opset (axes as attributes, older signatures), and function bodies may be missing there."""
    check(case, OLDER_OPSET)


def check(case: Case, opset: int) -> None:
    model, feeds = build(case, opset)
    of, wrt = model.graph.output[0].name, list(feeds)
    session = make_session(gradient_graph(model, of, wrt))
    forward = make_session(model).run(None, feeds)[0]
    seed = np.random.default_rng(7).standard_normal(np.shape(forward)).astype(forward.dtype)
    values = session.run([of, *(grad_name(w) for w in wrt)], {**feeds, SEED: seed})
    expected_y, expected = central_differences(model, feeds, seed)
    forward_error = relative_error(values[0], expected_y)
    errors = {w: relative_error(g, expected[w]) for w, g in zip(wrt, values[1:], strict=True)}
    print(f"{case.id} at opset {opset}: forward {forward_error:.2g}, gradient by input {errors}")
    assert forward_error <= TOLERANCE, "ONNX Runtime and the reference compute other functions"
    assert max(errors.values()) <= TOLERANCE, f"max relative error by input: {errors}"
    record(max(errors.values()))


@pytest.mark.parametrize("op", sorted(NOT_DIFFERENTIATED))
def test_not_differentiated_ops_are_refused_in_one_line(op: str):
    """Refused by onnxpath (no rule), or by ONNX Runtime (no kernel) when loading the model.
    When either changes, this fails: give the op a rule, its case, and drop the entry."""
    case = next(c for c in CASES if c.op == op)
    model, feeds = build(case)
    no_kernel = NOT_DIFFERENTIATED[op].startswith("ONNX Runtime")
    with pytest.raises(OnnxPathError) as refusal:
        if no_kernel:
            make_session(model)
        else:
            gradient_graph(model, model.graph.output[0].name, list(feeds))
    message = str(refusal.value)
    print(f"{op}: {NOT_DIFFERENTIATED[op]}; refused: {message}")
    assert "\n" not in message and (op in message or no_kernel)
    if no_kernel and op in RULES:  # the rule waits for the kernel: check it in the reference
        of, wrt = model.graph.output[0].name, list(feeds)
        graph = ReferenceEvaluator(float64_copy(gradient_graph(model, of, wrt)),
                                   new_ops=FLOAT64_FIXES)
        forward = ReferenceEvaluator(model, new_ops=FLOAT64_FIXES).run(None, feeds)[0]
        seed = np.random.default_rng(7).standard_normal(np.shape(forward))
        values = graph.run([grad_name(w) for w in wrt],
                           {**{k: v.astype(np.float64) for k, v in feeds.items()}, SEED: seed})
        _, expected = central_differences(model, feeds, seed)
        errors = [relative_error(g, expected[w]) for w, g in zip(wrt, values, strict=True)]
        print(f"{op}: its rule in the reference evaluator, relative error {max(errors):.2g}")
        assert max(errors) <= TOLERANCE


def test_every_differentiable_op_has_a_case_or_a_reason():
    ops = differentiable_ops()
    with_case = {c.op for c in CASES}
    missing = [op for op in ops if op not in with_case]
    unlisted = [op for op in NOT_DIFFERENTIATED if op not in ops]
    correct = [op for op in ops if op in with_case and op not in NOT_DIFFERENTIATED]
    print(f"\nopset {newest_opset()}: {len(correct)} of {len(ops)} differentiable ops have a "
          f"gradient rule checked against central differences ({len(VERIFIED & set(ops))} "
          "verified in "
          "this run); not differentiated: "
          + "; ".join(f"{op} ({why})" for op, why in sorted(NOT_DIFFERENTIATED.items()))
          + "; also checked, though onnx does not mark them Differentiable: "
          + ", ".join(sorted({c.op for c in UNMARKED_CASES})))
    assert not missing, f"ops with neither a case nor a NOT_DIFFERENTIATED entry: {missing}"
    assert not unlisted, f"NOT_DIFFERENTIATED names ops that are not differentiable: {unlisted}"
