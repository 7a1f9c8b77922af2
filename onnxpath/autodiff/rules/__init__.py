"""The rule table: op type -> function(node, dy, b) -> one gradient name (or None) per input.

`dy[k]` is the gradient of the target with respect to the node's k-th output, or None when that
output does not reach the target. A rule returns None for inputs that are not differentiable or
not needed (`b.needs(name)` is False); the walker drops gradients nobody asked for.

To support an op, add one decorated function to the module of its family.
"""

from __future__ import annotations

from collections.abc import Callable

from onnxpath.autodiff.builder import GraphBuilder, Node

Rule = Callable[[Node, list[str | None], GraphBuilder], list[str | None]]

RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op_type in op_types:
            RULES[op_type] = fn
        return fn

    return register


# Importing the families fills the table.
from onnxpath.autodiff.rules import (  # noqa: E402,F401
    activations,
    control_flow,
    conv,
    einsum,
    elementwise,
    functions,
    index,
    layout,
    linalg,
    lp,
    math,
    norm,
    pool,
    quantized,
    recurrent,
    reduce,
    resize,
    rotary,
    sampling,
    shape,
)
