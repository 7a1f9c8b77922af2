"""Reverse-mode autodiff that emits the gradient graph as plain ONNX."""

from .builder import GraphBuilder, Node
from .rules import RULES, rule
from .walk import SEED, grad_name, gradient_graph, missing_rules

__all__ = ["GraphBuilder", "Node", "RULES", "SEED", "grad_name", "gradient_graph", "missing_rules",
           "rule"]
