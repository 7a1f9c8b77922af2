"""onnxpath: feature attribution for ONNX models as deployed.

The public face: `Explainer` (a model, ready to attribute), its result `Explanation`, the method
registry `METHODS` and `load_model`. The package's folders are its layers, each importing only
from those below it (the import-linter contract in pyproject.toml):

    cli → tools → report → evaluate → run → io → explainer → explanation → methods
        → pathways → engine → intake → autodiff → ort → errors, version
"""

import sys

from onnxpath.explainer import Explainer
from onnxpath.explanation import Explanation
from onnxpath.intake import model as _model
from onnxpath.intake.model import load_model
from onnxpath.methods import METHODS
from onnxpath.pathways import surgery as _surgery
from onnxpath.version import __version__

# Module paths earlier releases documented, kept importable: `onnxpath.model.WRT_FINDERS`,
# `onnxpath.surgery.insert_masks`.
for _old, _module in (("model", _model), ("surgery", _surgery)):
    sys.modules.setdefault(f"{__name__}.{_old}", _module)
    globals()[_old] = _module

__all__ = ["METHODS", "Explainer", "Explanation", "load_model", "__version__"]
