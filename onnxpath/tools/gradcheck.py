"""Check a model's gradient graph against finite differences, in ONNX Runtime itself.

Along K random directions v, the directional derivative from the gradient graph, ⟨∇f(x), v⟩,
is compared with the central difference (f(x + h·v) − f(x − h·v)) / 2h, where f is the target
logit. ORT has no float64 Conv on the CPU, so both sides run in float32 and the step is scaled
to the input (h = eps × RMS of x): large enough that float32 rounding in the forward pass stays
small against the change it measures, small enough that few ReLU kinks are crossed. The
differences themselves are taken in float64.

The error of one direction is |numeric − analytic| / max(|numeric|, |analytic|, ‖∇f‖ / 10).
For v drawn from N(0, I), |⟨∇f, v⟩| is typically ‖∇f‖, so the floor only keeps a direction that
happens to be nearly orthogonal to the gradient from dividing noise by almost nothing. A wrong
rule (a missing transpose, a dropped term) gives errors of order 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from onnx import helper

from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer

DEFAULT_EPS = 1e-3
DEFAULT_TOLERANCE = 1e-1
STEP_FACTORS = (3.0, 1.0, 1 / 3)
CHUNK = 16  # examples per forward run, to bound memory on 224×224 models
DEFAULT_DIRECTIONS = 8
DEFAULT_SIZE = 224  # for dynamic spatial dims when no input is given
TOKENS = 8  # for the dynamic length of an integer (token id) input when no input is given


@dataclass
class Direction:
    analytic: float  # ⟨∇f(x), v⟩ from the gradient graph
    numeric: float  # central finite difference along v, at the best of the steps
    relative_error: float
    step: float  # the h that gave `numeric`


@dataclass
class GradCheck:
    target: int
    logit: float
    shape: tuple[int, ...]  # of the one example checked
    eps: float
    steps: tuple[float, ...]  # eps × RMS(x) × STEP_FACTORS
    tolerance: float
    gradient_norm: float
    directions: list[Direction] = field(default_factory=list)

    @property
    def worst_relative_error(self) -> float:
        return max((d.relative_error for d in self.directions), default=0.0)

    @property
    def median_relative_error(self) -> float:
        return float(np.median([d.relative_error for d in self.directions])) \
            if self.directions else 0.0

    @property
    def passed(self) -> bool:
        return self.worst_relative_error <= self.tolerance

    def to_json(self) -> dict:
        record = asdict(self)
        record["shape"] = list(self.shape)
        record["steps"] = list(self.steps)
        record.update(worst_relative_error=self.worst_relative_error,
                      median_relative_error=self.median_relative_error, passed=self.passed)
        return record


def random_input(explainer: Explainer, size: tuple[int, int] | None = None,
                 seed: int = 0) -> np.ndarray:
    """One example of the model's input shape, N(0, 1) like a normalised image."""
    dims = list(explainer.input_shape[1:])
    if not dims:
        raise UsageError("the model input has no per-example dims to check")
    spatial = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    fill = list(size) if size else [DEFAULT_SIZE] * 2
    for k, i in enumerate(spatial):
        # channels-first images have the dynamic dims last; reuse the last given size beyond two
        dims[i] = fill[min(k, len(fill) - 1)]
    rng = np.random.default_rng(seed)
    if explainer.input_dtype is not None and np.dtype(helper.tensor_dtype_to_np_dtype(
            explainer.input_dtype)).kind in "iub":
        # Integer inputs (token ids, pixels): small valid values; the check runs in the float
        # tensor computed from them. Dynamic sequence dims take TOKENS, not image sizes.
        dims = [d if isinstance(explainer.input_shape[1 + i], int) or len(dims) != 1
                else TOKENS for i, d in enumerate(dims)]
        return rng.integers(0, 2, dims).astype(np.int64)
    return rng.standard_normal(dims).astype(np.float32)


def check_gradient(explainer: Explainer, x: np.ndarray, *, target: int | None = None,
                   directions: int = DEFAULT_DIRECTIONS, eps: float = DEFAULT_EPS,
                   tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> GradCheck:
    """Compare the gradient graph of `explainer`'s model at one example `x` with central
    finite differences along `directions` random directions."""
    if directions < 1:
        raise UsageError(f"--directions must be at least 1, got {directions}")
    if not eps > 0:
        raise UsageError(f"--eps must be positive, got {eps}")
    explainer.check_differentiable()
    # Differences are taken where the gradient is: in the attributed tensor (the input, or
    # the float tensor computed from an integer input), the model's other inputs held fixed.
    # `x` is one example's array, or a dict of arrays by input name (an .npz).
    batch, context, engine = explainer.prepare(x)
    if len(batch) != 1:
        raise UsageError(f"check one example at a time; got a batch of {len(batch)}")
    result = explainer.attribute(x, method="gradient", target=target)
    grad = result.maps[0].astype(np.float64)
    c = int(result.targets[0])
    engine.bind(context)

    # A stream apart from random_input's, so no direction is the input itself.
    rng = np.random.default_rng([seed, 1])
    v = rng.standard_normal((directions, *batch.shape[1:]))
    analytic = v.reshape(directions, -1) @ grad.reshape(-1)
    norm = float(np.linalg.norm(grad))
    floor = max(norm, np.finfo(np.float32).tiny)
    scale = max(float(np.sqrt(np.mean(np.square(batch, dtype=np.float64)))), 1e-3)
    steps = tuple(eps * scale * k for k in STEP_FACTORS)

    best = [Direction(float(a), float("nan"), float("inf"), 0.0) for a in analytic]
    for h in steps:
        numeric = (target_logits(engine, batch + h * v, c)
                   - target_logits(engine, batch - h * v, c)) / (2 * h)
        errors = np.abs(numeric - analytic) / np.maximum(
            np.maximum(np.abs(numeric), np.abs(analytic)), floor)
        for k, (n, e) in enumerate(zip(numeric, errors, strict=True)):
            if e < best[k].relative_error:
                best[k] = Direction(float(analytic[k]), float(n), float(e), h)
    return GradCheck(target=c, logit=float(result.logits[0]), shape=tuple(batch.shape[1:]),
                     eps=eps, steps=steps, tolerance=tolerance, gradient_norm=norm,
                     directions=best)


def target_logits(engine, points: np.ndarray, target: int) -> np.ndarray:
    from onnxpath.methods._common import logits_rows

    return logits_rows(engine, points.astype(np.float32), CHUNK)[:, target].astype(np.float64)
