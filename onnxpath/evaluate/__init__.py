"""Evaluation protocols of the attribution literature, on any ONNX model: pixel perturbation
(LeRF/MoRF), deletion/insertion, ROAD, sensitivity-n, the cascading-randomisation sanity
check, and localisation against ground-truth masks; and Captum's and Quantus's metrics
(infidelity, max-sensitivity, faithfulness correlation, monotonicity, local Lipschitz,
complexity, sparseness, MPRT: `map_metrics`). Each protocol is a function over arrays;
`evaluate` runs several of them for several methods and returns a `Report`.
Imports `run`, `io`, `Explainer` and below; `report` draws its results."""

from onnxpath.evaluate.report import Report, Score, Series
from onnxpath.evaluate.runner import METRICS, Evaluation, Settings, evaluate

__all__ = ["METRICS", "Evaluation", "Report", "Score", "Series", "Settings", "evaluate"]
