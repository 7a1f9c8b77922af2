"""Check a model's gradient graph against finite differences, in ONNX Runtime itself.

Along K random directions v, the directional derivative from the gradient graph, ⟨∇f(x), v⟩,
is compared with the central difference (f(x + h·v) − f(x − h·v)) / 2h, where f is the target
logit. Three things make a correct gradient look wrong, and the check rules them out:

- float32 rounding, which grows as h shrinks. The forward pass and the gradient graph (the very
  graph the rules built) run in a float64 copy (`float64.py`: ORT has no float64 Conv or
  ConvTranspose on the CPU, so they are rewritten as MatMuls), where h can be 1e-5 of what
  float32 needs. A model with another op ORT lacks in float64 is checked in float32, and the
  report names the op. How far the float32 gradient is from the float64 one is reported apart;
- kinks (ReLU, ReLU6 as Clip, max-pooling switching between x − hv and x + hv), which no step
  avoids in float32 on a 224×224 model with millions of activations. Every piecewise node's
  branch is read at x, x + hv and x − hv (`kinks.py`); while any element switched, h shrinks
  (by 4, or by 4 × the number of switched elements) down to a floor. A direction that still
  crosses a kink is reported as such and left out of the verdict; if every one does, the check
  fails as inconclusive rather than pass;
- x itself on a kink (a tie in a max-pool window over a flat background, an exact zero): every
  direction crosses it at any step. In float64 the check then moves a hair away from x (SHIFT)
  and says so.

Without a crossed kink a piecewise-linear model is linear between the two points, so a clean
direction's difference is exact up to rounding. The error of one direction is
|numeric − analytic| / max(|numeric|, |analytic|, ‖∇f‖ / 10): for v drawn from N(0, I),
|⟨∇f, v⟩| is typically ‖∇f‖, so the floor only keeps a direction nearly orthogonal to the
gradient from dividing noise by almost nothing. Correct rules give 1e-6 in float64; a wrong
rule (a missing transpose, a dropped term, a gradient 10 % too large) gives 0.09 or more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from onnx import helper

from onnxpath.autodiff import SEED, grad_name
from onnxpath.engine.gradient import cut_at, rules_key
from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.ort.sessions import make_session, run_session
from onnxpath.tools import kinks
from onnxpath.tools.float64 import float64_copy

DEFAULT_EPS = 1e-3
DEFAULT_TOLERANCE = None  # TOLERANCE by the precision of the differences
TOLERANCE = {"float64": 1e-3, "float32": 1e-1}
FEED_TYPES = {"tensor(double)": np.float64, "tensor(float)": np.float32,
              "tensor(float16)": np.float16}
# The first step, × eps × RMS(x), and the smallest, as a fraction of the first. In float64
# rounding stays far below 1e-4 of the difference down to 1e-10 × RMS; in float32 it takes
# over below about eps / 20.
FIRST_STEP = {"float64": 1e-5, "float32": 3.0}
FLOOR = {"float64": 1e-2, "float32": 1 / 64}
SHRINK = 4.0
MAX_TRIES = 6
SHIFT = 1e-3  # × eps × RMS(x): how far from x a check moves when x itself is on a kink
AGREEMENT = 1e-2  # largest relative gap between the float64 copy's logit and the model's
DEFAULT_DIRECTIONS = 8
DEFAULT_SIZE = 224  # for dynamic spatial dims when no input is given
TOKENS = 8  # for the dynamic length of an integer (token id) input when no input is given


@dataclass
class Direction:
    analytic: float  # ⟨∇f(x), v⟩ from the gradient graph
    numeric: float  # central finite difference along v, at `step`
    relative_error: float
    step: float  # the last h tried: the first one whose two points crossed no kink
    switched_elements: int = 0  # at `step`: elements on another branch than at x
    switched_nodes: int = 0
    tries: int = 1  # steps tried

    @property
    def crossed_kink(self) -> bool:
        return self.switched_elements > 0

    def kinks_text(self) -> str:
        if not self.crossed_kink:
            return "none" if self.tries == 1 else f"none after {self.tries} steps"
        return (f"crossed a kink ({self.switched_elements} element"
                f"{'s' * (self.switched_elements != 1)} of {self.switched_nodes} node"
                f"{'s' * (self.switched_nodes != 1)} switched)")


@dataclass
class GradCheck:
    target: int
    logit: float
    shape: tuple[int, ...]  # of the one example checked
    eps: float
    steps: tuple[float, ...]  # the first step and the floor (FIRST_STEP, FLOOR)
    tolerance: float
    gradient_norm: float
    precision: str = "float64"  # of the finite differences
    precision_note: str = ""  # why they are not in float64
    watched_nodes: int = 0  # piecewise nodes whose branches are compared
    watched_elements: int = 0
    directions: list[Direction] = field(default_factory=list)
    # float64 only: how far the float32 gradient is from the float64 one (relative, L2), and
    # the elements float32 rounding puts on another branch than float64 at x
    float32_gap: float | None = None
    float32_switched_elements: int = 0
    float32_switched_nodes: int = 0
    # When every direction crossed a kink at x itself, the float64 check moves to x + shift·w,
    # w ~ N(0, I); kinks_at_x: the fewest elements any direction switched at x
    shift: float = 0.0
    kinks_at_x: int = 0
    kinks_at_x_nodes: int = 0

    @property
    def clean(self) -> list[Direction]:
        return [d for d in self.directions if not d.crossed_kink]

    @property
    def crossed(self) -> int:
        return len(self.directions) - len(self.clean)

    @property
    def worst_relative_error(self) -> float:
        """Over the directions that crossed no kink (nan when every one did)."""
        return max((d.relative_error for d in self.clean), default=float("nan"))

    @property
    def median_relative_error(self) -> float:
        return float(np.median([d.relative_error for d in self.clean])) if self.clean \
            else float("nan")

    @property
    def passed(self) -> bool:
        return bool(self.clean) and self.worst_relative_error <= self.tolerance

    @property
    def verdict(self) -> str:
        """Why it passes or fails, ending in PASS or FAIL."""
        n, clean = len(self.directions), self.clean
        where = f"{self.precision} central differences" + (
            f" ({self.precision_note})" if self.precision_note else "") + (
            f" at {self.shift:.0e} from x" if self.shift else "")
        left_out = (f"; {self.crossed} crossed a kink even at the smallest step and "
                    f"{'are' if self.crossed > 1 else 'is'} left out" if self.crossed else "")
        if not clean:
            worst = max(d.relative_error for d in self.directions)
            return (f"all {n} directions crossed a kink, even at step {self.steps[-1]:.1e} "
                    f"(relative errors up to {worst:.2e}), so {where} cannot tell a wrong rule "
                    "from the kinks here: inconclusive, FAIL")
        bad = [k for k, d in enumerate(self.directions, 1)
               if not d.crossed_kink and not d.relative_error <= self.tolerance]
        figures = (f"worst relative error {self.worst_relative_error:.2e}, median "
                   f"{self.median_relative_error:.2e}, tolerance {self.tolerance:g}")
        if bad:
            return (f"{len(bad)} of {len(clean)} kink-free directions disagree with {where} "
                    f"(direction{'s' * (len(bad) > 1)} {', '.join(map(str, bad))}; {figures})"
                    f"{left_out}: a gradient rule is wrong, or --tolerance is too tight: FAIL")
        return (f"{len(clean)} of {n} directions agree with {where} ({figures}){left_out}: "
                "PASS")

    def setting(self) -> str:
        what = "gradient graph and differences in float64" if self.precision == "float64" \
            else f"float32 differences ({self.precision_note})" if self.precision_note \
            else "float32 differences"
        return (f"{what}; {self.watched_nodes} piecewise nodes watched ({self.watched_elements} "
                f"elements); steps {self.steps[0]:.1e} down to {self.steps[-1]:.1e}")

    def float32_text(self) -> str:
        ties = self.float32_switched_elements
        why = (f": float32 rounding puts {ties} element{'s' * (ties != 1)} of "
               f"{self.float32_switched_nodes} node{'s' * (self.float32_switched_nodes != 1)} "
               "on the other side of a kink than float64 at x") if ties else ""
        return f"the float32 gradient is {self.float32_gap:.1e} from the float64 one{why}"

    def shift_text(self) -> str:
        return (f"x lies on a kink: every direction switched {self.kinks_at_x} or more elements "
                f"(of {self.kinks_at_x_nodes} node{'s' * (self.kinks_at_x_nodes != 1)}) even at "
                f"the smallest step (a tie in a max-pool window, an exact zero), so the check "
                f"runs at x + {self.shift:.1e}·w, w ~ N(0, I)")

    def report(self, model, source: str) -> str:
        """The text report: a header, one line per direction, the verdict."""
        shape = "×".join(map(str, self.shape))
        lines = [f"{model}: target {self.target} (logit {self.logit:.4g}), input {source}, "
                 f"{shape}, |grad| {self.gradient_norm:.3g}",
                 self.setting()]
        if self.float32_gap is not None:
            lines.append(self.float32_text())
        if self.shift:
            lines.append(self.shift_text())
        lines.append(f"{'direction':>9}  {'<grad, v>':>13}  {'finite diff.':>13}  {'step':>8}  "
                     f"{'rel. error':>10}  kinks")
        for k, d in enumerate(self.directions, 1):
            lines.append(f"{k:>9}  {d.analytic:>13.6e}  {d.numeric:>13.6e}  {d.step:>8.1e}  "
                         f"{d.relative_error:>10.2e}  {d.kinks_text()}")
        lines.append(self.verdict)
        return "\n".join(lines)

    def to_json(self) -> dict:
        record = asdict(self)
        record["shape"] = list(self.shape)
        record["steps"] = list(self.steps)
        for row, d in zip(record["directions"], self.directions, strict=True):
            row["crossed_kink"] = d.crossed_kink
        nan = np.isnan(self.worst_relative_error)
        record.update(worst_relative_error=None if nan else self.worst_relative_error,
                      median_relative_error=None if nan else self.median_relative_error,
                      clean_directions=len(self.clean), crossed_directions=self.crossed,
                      passed=self.passed, verdict=self.verdict)
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
                   tolerance: float | None = DEFAULT_TOLERANCE, seed: int = 0,
                   float64: bool = True) -> GradCheck:
    """Compare the gradient graph of `explainer`'s model at one example `x` with central
    finite differences along `directions` random directions: both in float64 where ORT can
    run them so (unless `float64` is False), else in float32. `tolerance` None: TOLERANCE by
    precision."""
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
    c, logit = int(result.targets[0]), float(result.logits[0])
    engine.bind(context)
    point = batch[0].astype(np.float64)
    probe, gap = Probe(engine, c, float64), {}
    if probe.precision == "float64":
        # The same gradient graph, run in float64: the rules are what is checked, and float32
        # rounding near a kink would put a few elements on the other branch than float64's.
        grad64, why = probe.gradient(point)
        f0, base = probe(point)
        if grad64 is None or not abs(f0 - logit) <= AGREEMENT * max(1.0, abs(logit)):
            why = why or f"the float64 copy's logit {f0:.6g} is not the model's {logit:.6g}"
            probe = Probe(engine, c, False, why)
        else:
            gap = float32_gap(probe, grad, grad64, point, base)
            grad = grad64
    if probe.precision == "float32":
        f0, base = probe(point)

    # A stream apart from random_input's, so no direction is the input itself.
    vs = np.random.default_rng([seed, 1]).standard_normal((directions, *batch.shape[1:]))
    scale = max(float(np.sqrt(np.mean(np.square(point)))), 1e-3)
    first = FIRST_STEP[probe.precision] * eps * scale
    steps = (first, first * FLOOR[probe.precision])
    checked = [along(probe, point, base, v, grad, steps) for v in vs]
    moved = {}
    if probe.precision == "float64" and all(d.crossed_kink for d in checked):
        # Every direction switched elements even at the smallest step: x itself sits on kinks
        # (a tie in a max-pool window over a flat background, an exact zero). The rules are
        # then checked a hair away from x, where no element is at a kink.
        at_kink = min(checked, key=lambda d: d.switched_elements)
        moved = {"shift": SHIFT * eps * scale, "kinks_at_x": at_kink.switched_elements,
                 "kinks_at_x_nodes": at_kink.switched_nodes}
        point = point + moved["shift"] * np.random.default_rng([seed, 2]).standard_normal(
            point.shape)
        grad, base = probe.gradient(point)[0], probe(point)[1]
        checked = [along(probe, point, base, v, grad, steps) for v in vs]
    return GradCheck(target=c, logit=logit, shape=tuple(batch.shape[1:]), eps=eps,
                     steps=steps, gradient_norm=float(np.linalg.norm(grad)),
                     tolerance=TOLERANCE[probe.precision] if tolerance is None else tolerance,
                     precision=probe.precision, precision_note=probe.note,
                     watched_nodes=len(probe.kinks),
                     watched_elements=sum(int(np.size(b)) for b in base) // probe.copies,
                     directions=checked, **gap, **moved)


def float32_gap(probe: Probe, grad32: np.ndarray, grad64: np.ndarray, point: np.ndarray,
                base: list[np.ndarray]) -> dict:
    """How far the float32 gradient (the one attributions use) is from the float64 one, and
    how many elements float32 rounding puts on another branch than float64 at x."""
    f32 = Probe(probe.engine, probe.target, False, "float32")
    elements, nodes = kinks.switched(probe.kinks, base, f32(point)[1])
    gap = float(np.linalg.norm(grad32 - grad64) / max(np.linalg.norm(grad64), 1e-300))
    return {"float32_gap": gap, "float32_switched_elements": elements // probe.copies,
            "float32_switched_nodes": nodes}


def along(probe: Probe, point: np.ndarray, base, v: np.ndarray, grad: np.ndarray,
          steps: tuple[float, float]) -> Direction:
    """One direction: shrink the step until its two points are on x's branch everywhere."""
    h, smallest, tries = steps[0], steps[1], 0
    while True:
        tries += 1
        plus, minus = probe.round(point + h * v), probe.round(point - h * v)
        (f_plus, codes_plus), (f_minus, codes_minus) = probe(plus), probe(minus)
        elements, nodes = kinks.switched(probe.kinks, base, codes_plus, codes_minus)
        elements //= probe.copies
        if not elements or h <= smallest or tries >= MAX_TRIES:
            break
        h = max(h / max(SHRINK, SHRINK * elements), smallest)
    # The points as run (float32 rounds them): the analytic side takes the same step.
    analytic = float(np.vdot(grad, plus - minus)) / (2 * h)
    numeric = (f_plus - f_minus) / (2 * h)
    floor = max(float(np.linalg.norm(grad)) / 10, np.finfo(np.float32).tiny)
    error = abs(numeric - analytic) / max(abs(numeric), abs(analytic), floor)
    return Direction(analytic, float(numeric), float(error), h, elements, nodes, tries)


class Probe:
    """The model's forward pass (float64 where possible) that returns the target logit and
    the branch codes of its piecewise nodes for one point; in float64, also its gradient."""

    def __init__(self, engine, target: int, float64: bool = True, note: str = ""):
        info = engine.info
        self.engine, self.target, self.input_name = engine, target, info.input_name
        model, self.kinks = engine.derived(("gradcheck", "watched"), lambda: kinks.watch(
            cut_at(info.proto, [info.logits]), info.input_name, info.logits))
        self.names = list(dict.fromkeys([info.logits, *(t for k in self.kinks
                                                        for t in k.tensors)]))
        self.session, self.precision, self.note = None, "float64", note
        if float64 and not note:
            self.session, why = engine.derived(("gradcheck", "float64"),
                                               lambda: float64_copy(model, info.folder))
            self.note = why or ""
        if self.session is None:
            self.precision = "float32"
            self.session = engine.derived(("gradcheck", "float32"), lambda: make_session(
                model, engine.device, engine.threads, info.folder))
        self.device = "cpu" if self.precision == "float64" else engine.device
        self.dtype = np.float64 if self.precision == "float64" else np.float32
        first = info.input_shape[0] if info.input_shape else None
        self.copies = first if isinstance(first, int) and first > 1 else 1  # a fixed batch

    def round(self, point: np.ndarray) -> np.ndarray:
        """`point` as the model will see it."""
        return point.astype(self.dtype).astype(np.float64)

    def run(self, session, names: list[str], point: np.ndarray, **extra) -> list[np.ndarray]:
        rows = np.repeat(point[None].astype(self.dtype), self.copies, axis=0)
        feeds = {self.input_name: rows, **self.engine.context_feeds(self.copies), **extra}
        # Each float feed in the type its session declares (float64 copy, float16 model).
        types = {i.name: FEED_TYPES[i.type] for i in session.get_inputs() if i.type in FEED_TYPES}
        feeds = {k: v.astype(types[k]) if k in types and np.asarray(v).dtype.kind == "f" else v
                 for k, v in feeds.items()}
        return run_session(session, names, feeds, self.device)

    def __call__(self, point: np.ndarray) -> tuple[float, list[np.ndarray]]:
        values = dict(zip(self.names, self.run(self.session, self.names, point), strict=True))
        logits = np.asarray(values[self.names[0]])
        return float(logits.reshape(self.copies, -1)[0, self.target]), kinks.codes(
            self.kinks, values)

    def gradient(self, point: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """The gradient graph's result at `point` in float64, or (None, why not)."""
        engine = self.engine
        session, why = engine.derived(
            ("gradcheck", "float64-gradient", rules_key()),
            lambda: float64_copy(engine.gradient_model((self.input_name,)), engine.info.folder))
        if session is None:
            return None, f"its gradient graph: {why}"
        seed = np.zeros((self.copies, engine.num_classes))
        seed[:, self.target] = 1.0
        return self.run(session, [grad_name(self.input_name)], point, **{SEED: seed})[0][0], None
