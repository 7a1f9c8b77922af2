"""The Captum and Quantus metrics in `evaluate`, one method each, mixed into `Evaluation`.

Each reads the method's raw maps (`Evaluation.maps`, the model input's shape) and the
original targets; the formulas, defaults and papers are in `faithfulness`, `robustness`,
`complexity` and below. Max-sensitivity, local Lipschitz and the model-randomisation test
re-run the method through `Evaluation.maps_for`, the same Explainer path as the maps.

Model-randomisation test (Adebayo et al. 2018, Quantus `MPRT`, formerly
`ModelParameterRandomisation`): the parametric layers are randomised cumulatively from the
output backwards (Quantus's `layer_order="top_down"`); after each step the map is recomputed
for the original target class (Quantus's y_batch, not the randomised model's argmax) and
compared with the original map by Spearman's rank correlation of |a|/max|a| over every input
element (Quantus's `correlation_spearman`, abs=True, normalise=True). The score is the
correlation after the last step (Quantus's `return_last_correlation`); the series holds every
step. Lower is better. The layers and their redraw are `sanity.cascade`'s (an ONNX graph
carries no framework initialiser to call, as Quantus calls torch's `reset_parameters`), so
`--sanity-steps`, `--sanity-images` and the seed apply here too.
"""

from __future__ import annotations

import numpy as np

from onnxpath.errors import UsageError
from onnxpath.evaluate import complexity, faithfulness, robustness, sanity
from onnxpath.evaluate.conventions import flat, normalise_by_max
from onnxpath.evaluate.report import Score, Series
from onnxpath.evaluate.similarity import spearman

MAP_METRICS = ("infidelity", "max-sensitivity", "faithfulness-correlation", "monotonicity",
               "local-lipschitz", "complexity", "sparseness", "mprt")


class MapMetrics:
    """Mixed into `Evaluation`, which supplies explainer, x, methods, settings, maps, targets,
    report, progress, forward and maps_for."""

    def _score(self, column: str, method: str, values, better: str, meaning: str) -> None:
        self.report.scores.append(Score(column, method, np.asarray(values, dtype=np.float64),
                                        better, meaning))

    def _infidelity(self) -> None:
        s = self.settings
        for method in self.methods:
            values = faithfulness.infidelity(self.forward, self.x, self.maps[method],
                                             self.targets, s.infidelity_samples,
                                             s.infidelity_std, s.infidelity_normalize,
                                             s.batch_size, s.seed)
            self._score("infidelity", method, values, "lower",
                        f"Captum infidelity, {s.infidelity_samples} N(0, "
                        f"{s.infidelity_std:g}²) perturbations")

    def _faithfulness_correlation(self) -> None:
        s = self.settings
        try:
            for method in self.methods:
                values = faithfulness.faithfulness_correlation(
                    self.forward, self.x, self.maps[method], self.targets, s.faithfulness_runs,
                    s.faithfulness_subset, s.batch_size, s.seed)
                self._score("faithfulness-correlation", method, values, "higher",
                            f"Pearson r over {s.faithfulness_runs} random subsets of "
                            f"{s.faithfulness_subset} features set to black")
        except ValueError as err:
            raise UsageError(f"{err}; give a smaller --faithfulness-subset") from err

    def _monotonicity(self) -> None:
        s = self.settings
        image = self.x.ndim == 4  # C × W per step (H steps); elsewhere Quantus's 1
        step = s.monotonicity_step or (self.x.shape[1] * self.x.shape[-1] if image else 1)
        for method in self.methods:
            curves = faithfulness.monotonicity_curves(self.forward, self.x, self.maps[method],
                                                      self.targets, step, s.batch_size)
            xs = list(np.arange(1, curves.shape[1] + 1) / curves.shape[1])
            self.report.series.append(Series("monotonicity", "prob", method, xs,
                                             "fraction of features inserted", curves,
                                             "higher"))
            self._score("monotonicity", method, faithfulness.monotonic(curves), "higher",
                        f"share of inputs whose p(class) never falls as features are inserted "
                        f"({step} per step)")

    def _max_sensitivity(self) -> None:
        s = self.settings
        for method in self.methods:
            values = robustness.max_sensitivity(self._explain(method), self.x,
                                                self.maps[method], self.targets,
                                                s.sensitivity_samples, s.sensitivity_radius,
                                                s.seed)
            self._score("max-sensitivity", method, values, "lower",
                        f"Captum sensitivity_max, {s.sensitivity_samples} samples, radius "
                        f"{s.sensitivity_radius:g}")

    def _local_lipschitz(self) -> None:
        s = self.settings
        for method in self.methods:
            values = robustness.local_lipschitz(self._explain(method), self.x,
                                                self.maps[method], self.targets,
                                                s.lipschitz_samples, s.lipschitz_std, s.seed)
            self._score("local-lipschitz", method, values, "lower",
                        f"Quantus local Lipschitz estimate, {s.lipschitz_samples} samples, "
                        f"std {s.lipschitz_std:g}")

    def _complexity(self) -> None:
        for method in self.methods:
            self._score("complexity", method, complexity.complexity(self.maps[method]),
                        "lower", "entropy of the fractional contributions |a|/Σ|a|")

    def _sparseness(self) -> None:
        for method in self.methods:
            self._score("sparseness", method, complexity.sparseness(self.maps[method]),
                        "higher", "Gini index of |a|")

    def _explain(self, method: str):
        return lambda x, targets: self.maps_for(x, method, targets)

    def _mprt(self) -> None:
        s = self.settings
        count = len(self.x) if s.sanity_images is None else min(s.sanity_images, len(self.x))
        x, targets = self.x[:count], self.targets[:count]
        original = {m: mprt_ready(self.maps[m][:count]) for m in self.methods}
        steps, names = [], []
        results: dict[str, list[list[float]]] = {m: [] for m in self.methods}
        for step, node, randomised in sanity.randomised_explainers(
                self.explainer, s.sanity_steps, s.seed, s.sanity_std, "mprt"):
            steps.append(step)
            names.append(node)
            for method in self.methods:
                after = mprt_ready(self.maps_for(x, method, targets, randomised))
                results[method].append([spearman(a, b) for a, b in
                                        zip(original[method], after, strict=True)])
            self.progress(f"mprt: {step} layer(s) randomised, down to '{node}'")
            del randomised  # drop this step's sessions before the next step builds its own
        for method in self.methods:
            values = np.asarray(results[method], dtype=np.float64).T  # (N, steps)
            self.report.series.append(Series("mprt", "spearman", method, steps,
                                             "layers randomised (from the output)", values,
                                             "lower"))
            self._score("mprt", method, values[:, -1], "lower",
                        f"Spearman of |maps| after randomising {steps[-1]} layers, for the "
                        "original class")
        self.report.notes["mprt_layers"] = dict(zip(map(str, steps), names, strict=True))


def mprt_ready(maps: np.ndarray) -> np.ndarray:
    """(N, features) |a|/max|a|, the form Quantus's MPRT correlates."""
    return np.abs(flat(normalise_by_max(maps)))
