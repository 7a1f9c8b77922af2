"""Reverse-mode autodiff that emits the gradient graph as plain ONNX: the rule table (`rules/`,
one small function per op), the walker (`walk`), the node builder (`builder`) and which ops are
ReLU-like (`relu_family`). It knows no exporter and no file; it imports only `errors`."""

from onnxpath.autodiff.builder import GraphBuilder, Node
from onnxpath.autodiff.rules import RULES, rule
from onnxpath.autodiff.walk import SEED, grad_name, gradient_graph, missing_rules

__all__ = ["GraphBuilder", "Node", "RULES", "SEED", "grad_name", "gradient_graph", "missing_rules",
           "rule"]
