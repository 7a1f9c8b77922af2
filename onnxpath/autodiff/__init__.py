"""Reverse-mode autodiff that emits the gradient graph as plain ONNX."""

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import RULES, rule
from onnxpath.autodiff.walk import SEED, grad_name, gradient_graph, missing_rules

__all__ = ["GraphBuilder", "Node", "RULES", "SEED", "grad_name", "gradient_graph", "missing_rules",
           "rule"]
