"""Run the evaluation protocols for several methods on one model and a batch of inputs.

Maps are computed once per method (for the original model's predicted class, unless targets
are given) and reduced to pixel heat maps with the paper's signed max-abs rule; every protocol
then works on arrays. Progress goes to the `progress` callback (the CLI sends it to stderr).
The Captum and Quantus metrics (`map_metrics.MAP_METRICS`) read the raw maps instead, of any
float input (tables too); "all" means the protocols, "captum-quantus" those metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.evaluate import (
    faithfulness,
    localisation,
    perturbation,
    road,
    robustness,
    sanity,
    sensitivity,
)
from onnxpath.evaluate.map_metrics import MAP_METRICS, MapMetrics
from onnxpath.evaluate.report import Report, Score, Series
from onnxpath.explainer import Explainer
from onnxpath.io.render import reduce_channels
from onnxpath.methods import METHODS

PROTOCOLS = ("lerf", "morf", "deletion", "insertion", "road", "sensitivity-n", "sanity",
             "pointing-game", "relevance-mass")
METRICS = PROTOCOLS + MAP_METRICS
GROUPS = {"all": PROTOCOLS, "captum-quantus": MAP_METRICS}
MASK_METRICS = ("pointing-game", "relevance-mass")
LERF_FRACTIONS = tuple(i / 100 for i in range(1, 11))


@dataclass
class Settings:
    """Every protocol parameter, with the papers' defaults."""

    fractions: tuple[float, ...] = LERF_FRACTIONS  # lerf/morf
    fill: float | tuple[float, ...] = 0.0  # model-input space; 0 = the dataset mean
    rank: str = "signed"  # signed max-abs map, its magnitude (abs), or channel maximum (max)
    step: int | None = None  # deletion/insertion pixels per step; None = image width
    road_fractions: tuple[float, ...] = road.ROAD_FRACTIONS
    road_noise: float = 0.01
    ns: tuple[int, ...] = sensitivity.SENSITIVITY_NS
    samples: int = 32  # sensitivity-n subsets per n and image
    sanity_images: int | None = None  # None = every image
    sanity_steps: int | None = None  # None = every cascade step
    sanity_std: float = 0.1  # also mprt's
    infidelity_samples: int = faithfulness.INFIDELITY_SAMPLES
    infidelity_std: float = faithfulness.INFIDELITY_STD
    infidelity_normalize: bool = False
    sensitivity_samples: int = robustness.SENSITIVITY_SAMPLES  # max-sensitivity
    sensitivity_radius: float = robustness.SENSITIVITY_RADIUS
    faithfulness_runs: int = faithfulness.FAITHFULNESS_RUNS
    faithfulness_subset: int = faithfulness.FAITHFULNESS_SUBSET
    monotonicity_step: int | None = None  # per step; None = C × W (H steps), 1 if not images
    lipschitz_samples: int = robustness.LIPSCHITZ_SAMPLES
    lipschitz_std: float = robustness.LIPSCHITZ_STD
    tolerance: float | None = None  # pointing game, px; None = 15 px scaled from 224 px
    batch_size: int | None = None  # None = the fastest measured for the model (batching.py)
    seed: int = 0
    method_options: dict = field(default_factory=dict)


def check_metrics(metrics: Sequence[str], have_masks: bool) -> list[str]:
    """The metrics named, groups expanded ("all": the protocols, without the mask metrics when
    there are no masks)."""
    unknown = [m for m in metrics if m not in METRICS and m not in GROUPS]
    if unknown:
        raise UsageError(f"unknown metric '{unknown[0]}'; choose from "
                         f"{', '.join(GROUPS)}, {', '.join(METRICS)}")
    if not have_masks and any(m in MASK_METRICS for m in metrics):
        raise UsageError("pointing-game and relevance-mass need ground-truth masks: give "
                         "--truth DIR or --scenes N")
    named = [n for m in metrics for n in GROUPS.get(m, (m,))]
    return list(dict.fromkeys(m for m in named if have_masks or m not in MASK_METRICS))


def check_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method '{','.join(unknown)}'; choose from "
                         f"{', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def heat_maps(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) pixel heat: signed max-abs over channels (maps may be (N,C,H,W) or (N,H,W))."""
    return np.stack([reduce_channels(m[0] if m.ndim == 3 and m.shape[0] == 1 else m)
                     for m in maps])


def channel_max(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) the largest channel value, sign included: the pixel key of the authors'
    evaluation code (RoarTorch's `np.max(attribution_map, axis=0)`), `rank="max"`."""
    return maps.max(axis=1) if maps.ndim == 4 else maps


def pixel_sums(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) additive per-pixel attribution (sum over channels), for sensitivity-n."""
    return maps.sum(axis=1) if maps.ndim == 4 else maps


def attribute(explainer: Explainer, x: np.ndarray, method: str, targets, batch_size: int,
              options: dict) -> np.ndarray:
    parts = [explainer.attribute(x[i:i + batch_size], method=method,
                                 target=None if targets is None else targets[i:i + batch_size],
                                 **options).maps for i in range(0, len(x), batch_size)]
    maps = np.concatenate(parts).astype(np.float32)
    if maps.shape[-2:] != x.shape[-2:]:
        raise UsageError(f"method '{method}' returned maps of shape {maps.shape[1:]}, not the "
                         f"input's {x.shape[1:]}")
    return maps


class Evaluation(MapMetrics):
    """One evaluation: the model, the inputs, their maps, and the report being filled."""

    def __init__(self, explainer: Explainer, x: np.ndarray, methods: Sequence[str],
                 settings: Settings, masks: np.ndarray | None = None,
                 targets: np.ndarray | None = None,
                 progress: Callable[[str], None] | None = None):
        if not np.issubdtype(x.dtype, np.floating):
            raise UsageError(f"evaluation perturbs the inputs, and these are {x.dtype} (token "
                             "ids?): it needs float inputs")
        self.explainer = explainer
        self.x = x
        self.methods = check_methods(methods)
        if not settings.batch_size or settings.batch_size < 1:
            settings = replace(settings, batch_size=explainer.fastest_batch(x.shape))
        self.settings = settings
        self.masks = masks
        self.progress = progress or (lambda message: None)
        logits = np.concatenate([self.forward(x[i:i + settings.batch_size])
                                 for i in range(0, len(x), settings.batch_size)])
        self.targets = logits.argmax(axis=1) if targets is None else np.asarray(targets)
        self.maps: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        self.report = Report(list(self.methods), settings=_settings_json(settings),
                             images=len(x))

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.explainer.predict(batch)

    def compute_maps(self) -> None:
        for method in self.methods:
            start = time.perf_counter()
            self.maps[method] = attribute(self.explainer, self.x, method, self.targets,
                                          self.settings.batch_size,
                                          self.settings.method_options)
            self.seconds[method] = time.perf_counter() - start
            self.progress(f"maps: {method} ({self.seconds[method]:.1f} s)")
        self.report.notes["map_seconds"] = {m: round(s, 2) for m, s in self.seconds.items()}

    def maps_for(self, x: np.ndarray, method: str, targets: np.ndarray | None,
                 explainer: Explainer | None = None) -> np.ndarray:
        """`method`'s raw maps of `x`, from this evaluation's explainer (or `explainer`), with
        the evaluation's batch size and method options."""
        return attribute(explainer or self.explainer, x, method, targets,
                         self.settings.batch_size, self.settings.method_options)

    def heat(self, method: str) -> np.ndarray:
        return heat_maps(self.maps[method])

    def ranked(self, method: str) -> np.ndarray:
        """The pixel heat the perturbation and localisation protocols rank by: the signed
        max-abs map, or the channel maximum of the raw map with `rank="max"`."""
        if self.settings.rank == "max":
            return channel_max(self.maps[method])
        return self.heat(method)

    def run(self, metrics: Sequence[str]) -> Report:
        start = time.perf_counter()
        metrics = check_metrics(metrics, self.masks is not None)
        pixel_bound = [m for m in metrics if m not in MAP_METRICS]
        if self.x.ndim != 4 and pixel_bound:
            raise UsageError(f"{', '.join(pixel_bound)}: image inputs (N, C, H, W) only, got "
                             f"{self.x.shape}; the Captum and Quantus metrics "
                             f"({', '.join(MAP_METRICS)}) take any float input")
        if not self.maps:
            self.compute_maps()
        timings = {}
        for metric in metrics:
            t = time.perf_counter()
            getattr(self, "_" + metric.replace("-", "_"))()
            timings[metric] = round(time.perf_counter() - t, 2)
            self.progress(f"{metric}: done ({timings[metric]:.1f} s)")
        self.report.notes["metric_seconds"] = timings
        self.report.seconds = time.perf_counter() - start
        return self.report

    # --- one method per metric -------------------------------------------------------------

    def _pixel(self, order: str) -> None:
        s = self.settings
        for method in self.methods:
            change = perturbation.pixel_perturbation(
                self.forward, self.x, self.ranked(method), self.targets, s.fractions, order,
                s.fill, s.rank, s.batch_size, s.seed)
            better = "lower" if order == "lerf" else "higher"
            self.report.series.append(Series(order, "abs_frac_change", method,
                                             list(s.fractions), "fraction of pixels removed",
                                             change, better))
            self.report.scores.append(Score(order, method, change[:, -1], better,
                                            f"|Δp|/p at {s.fractions[-1]:.0%} removed"))

    def _lerf(self) -> None:
        self._pixel("lerf")

    def _morf(self) -> None:
        self._pixel("morf")

    def _curve(self, mode: str) -> None:
        s = self.settings
        for method in self.methods:
            curve = perturbation.deletion_insertion(
                self.forward, self.x, self.ranked(method), self.targets, mode, s.step, s.fill,
                s.rank, s.batch_size, s.seed)
            x = list(np.linspace(0.0, 1.0, curve.shape[1]))
            better = "lower" if mode == "deletion" else "higher"
            self.report.series.append(Series(mode, "prob", method, x, f"fraction of pixels "
                                             f"{'deleted' if mode == 'deletion' else 'inserted'}",
                                             curve, better))
            self.report.scores.append(Score(mode, method, perturbation.auc(curve), better,
                                            "area under the probability curve"))

    def _deletion(self) -> None:
        self._curve("deletion")

    def _insertion(self) -> None:
        self._curve("insertion")

    def _road(self) -> None:
        s = self.settings
        for order in ("morf", "lerf"):
            better = "lower" if order == "morf" else "higher"
            for method in self.methods:
                probs, accuracy = road.road(self.forward, self.x, self.ranked(method),
                                            self.targets, s.road_fractions, order, s.rank,
                                            s.road_noise, s.batch_size, s.seed)
                xs = list(s.road_fractions)
                name = f"road-{order}"
                self.report.series.append(Series(name, "prob", method, xs,
                                                 "fraction of pixels imputed", probs, better))
                self.report.series.append(Series(name, "accuracy", method, xs,
                                                 "fraction of pixels imputed", accuracy, better))
                self.report.scores.append(Score(name, method, probs.mean(axis=1), better,
                                                "mean target probability over the fractions"))

    def _sensitivity_n(self) -> None:
        s = self.settings
        pixels = self.x.shape[-2] * self.x.shape[-1]
        ns = tuple(n for n in s.ns if n <= pixels)
        drops = sensitivity.output_drops(self.forward, self.x, self.targets, ns, s.samples,
                                         s.fill, s.batch_size, s.seed)
        for method in self.methods:
            corr = sensitivity.sensitivity_n(pixel_sums(self.maps[method]), drops, ns, s.seed)
            self.report.series.append(Series("sensitivity-n", "pearson", method, list(ns),
                                             "n (pixels removed)", corr, "higher"))
            with np.errstate(all="ignore"):
                summary = np.nanmean(np.where(np.isfinite(corr), corr, np.nan), axis=1)
            self.report.scores.append(Score("sensitivity-n", method, summary, "higher",
                                            "Pearson r, mean over n"))

    def _sanity(self) -> None:
        s = self.settings
        count = len(self.x) if s.sanity_images is None else min(s.sanity_images, len(self.x))
        x = self.x[:count]
        original = {m: self.heat(m)[:count] for m in self.methods}
        steps, names = [], []
        results = {m: {k: [] for k in sanity.MEASURES} for m in self.methods}
        for step, node, randomised in sanity.randomised_explainers(
                self.explainer, s.sanity_steps, s.seed, s.sanity_std, "sanity"):
            steps.append(step)
            names.append(node)
            for method in self.methods:
                heat = heat_maps(attribute(randomised, x, method, None, s.batch_size,
                                           s.method_options))
                self.report.cascade.setdefault(method, [original[method][0]]).append(heat[0])
                values = [sanity.compare(a, b) for a, b in zip(original[method], heat,
                                                                strict=True)]
                for k in sanity.MEASURES:
                    results[method][k].append([v[k] for v in values])
            self.progress(f"sanity: {step} layer(s) randomised, down to '{node}'")
            del randomised  # drop this step's sessions before the next step builds its own
        for method in self.methods:
            for k in sanity.MEASURES:
                values = np.asarray(results[method][k], dtype=np.float64).T  # (N, steps)
                self.report.series.append(Series("sanity", k, method, steps,
                                                 "layers randomised (from the output)",
                                                 values, "lower"))
            spearman_abs = np.asarray(results[method]["spearman_abs"], dtype=np.float64)
            self.report.scores.append(Score("sanity-first", method, spearman_abs[0], "lower",
                                            f"Spearman of |maps| after randomising "
                                            f"'{names[0]}'"))
            self.report.scores.append(Score("sanity-last", method, spearman_abs[-1], "lower",
                                            f"Spearman of |maps| after randomising {steps[-1]} "
                                            "layers"))
        self.report.notes["sanity_layers"] = dict(zip(map(str, steps), names, strict=True))

    def _pointing_game(self) -> None:
        for method in self.methods:
            hits = localisation.pointing_game(self.ranked(method), self.masks,
                                              self.settings.tolerance, self.settings.rank)
            self.report.scores.append(Score("pointing-game", method, hits, "higher",
                                            "hit rate of the map's maximum"))
        h, w = self.x.shape[-2:]
        self.report.notes["pointing_tolerance_px"] = (
            self.settings.tolerance if self.settings.tolerance is not None
            else round(localisation.scaled_tolerance((h, w)), 3))

    def _relevance_mass(self) -> None:
        for method in self.methods:
            mass = localisation.relevance_mass(self.ranked(method), self.masks,
                                               self.settings.rank)
            self.report.scores.append(Score("relevance-mass", method, mass, "higher",
                                            "share of positive relevance inside the mask"))


def evaluate(explainer: Explainer, x: np.ndarray, methods: Sequence[str],
             metrics: Sequence[str] = ("all",), settings: Settings | None = None,
             masks: np.ndarray | None = None, targets: np.ndarray | None = None,
             progress: Callable[[str], None] | None = None) -> Report:
    """Evaluate `methods` on inputs `x` (N, C, H, W, model input space) with `metrics`."""
    return Evaluation(explainer, x, methods, settings or Settings(), masks, targets,
                      progress).run(metrics)


def _settings_json(settings: Settings) -> dict:
    out = asdict(settings)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}
