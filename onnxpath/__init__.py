"""onnxpath: feature attribution for ONNX models as deployed."""

from .explainer import Explainer
from .explanation import Explanation
from .methods import METHODS
from .model import load_model

__version__ = "0.1.0"
__all__ = ["METHODS", "Explainer", "Explanation", "load_model", "__version__"]
