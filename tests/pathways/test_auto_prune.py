"""`--prune auto`: per input, the largest P whose output change stays within the bound, checked
against an independent scan over fixed P; and the warning for a fixed P that destroys the
prediction."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input
from onnxpath.io.preprocess import preset_for
from onnxpath.methods.pathway import PathwayChangeWarning
from onnxpath.pathways.network import auto_threshold, resolve_prune_percent

from .conftest import image

ROOT = Path(__file__).resolve().parents[2]


def pathway(case, x, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PathwayChangeWarning)
        return case.explainer.attribute(x, method="pathway", **options)


@pytest.mark.parametrize("bound", [5.0, 15.0, 40.0])
def test_auto_keeps_the_change_within_the_bound_and_is_as_sparse_as_a_scan_finds(resnet,
                                                                                 bound):
    x = image(3, n=3)
    auto = pathway(resnet, x, prune_percent=f"auto:{bound:g}")
    for i in range(len(x)):
        chosen = auto.extras[i]["prune_percent"]
        assert auto.extras[i]["output_change"] <= bound / 100 + 1e-9
        # The same P, fixed, gives the same pathway: the same map and change.
        fixed = pathway(resnet, x[i:i + 1], prune_percent=chosen)
        np.testing.assert_array_equal(fixed.maps[0], auto.maps[i])
        assert fixed.extras[0]["output_change"] == pytest.approx(
            auto.extras[i]["output_change"], rel=1e-6, abs=1e-9)
        # An independent scan over fixed P: below the first P whose change exceeds the bound,
        # every P is allowed, so bisection cannot stop more than its resolution short of it.
        scan = np.arange(0.0, 100.0, 1.0)
        changes = [pathway(resnet, x[i:i + 1], prune_percent=p).extras[0]["output_change"]
                   for p in scan]
        first_over = next((p for p, c in zip(scan, changes, strict=True) if c > bound / 100),
                          100.0)
        assert chosen >= first_over - 1.0 - 1e-9 or changes[int(chosen)] <= bound / 100


def test_auto_reports_the_p_it_used_per_input(resnet):
    x = image(5, n=2)
    extras = pathway(resnet, x, prune_percent="auto").extras
    assert all(0.0 <= e["prune_percent"] <= 100.0 for e in extras)
    assert all(e["kept_percent"] == pytest.approx(100 - e["prune_percent"], abs=1.0)
               for e in extras)


def test_a_fixed_p_that_changes_the_output_by_more_than_half_warns():
    # The trained demo model: random tiny nets have near-uniform outputs that barely change.
    explainer = Explainer(ROOT / "models/shapes_resnet.onnx")
    x, _ = load_input(ROOT / "models/samples/star_0.png", explainer.input_shape,
                      preset_for(explainer.input_shape, explainer.proto))
    with pytest.warns(PathwayChangeWarning, match="--prune auto") as caught:
        result = explainer.attribute(x, method="pathway", prune_percent=99.5)
    assert result.extras[0]["output_change"] > 0.5
    assert f"{100 * result.extras[0]['output_change']:.0f}%" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PathwayChangeWarning)
        auto = explainer.attribute(x, method="pathway", prune_percent="auto")
        explainer.attribute(x, method="pathway", prune_percent=85)  # 0.5% change: silent
    assert auto.extras[0]["output_change"] <= 0.15
    assert auto.extras[0]["prune_percent"] > 95  # sparser than 85 and still faithful


def test_prune_values():
    assert resolve_prune_percent("auto", None) == "auto:15"
    assert resolve_prune_percent("AUTO:10", None) == "auto:10"
    assert auto_threshold("auto:10") == pytest.approx(0.10) and auto_threshold(85.0) is None
    assert resolve_prune_percent(None, 30.0) == 70.0
    for bad, keep in (("auto:0", None), ("auto:x", None), ("auto", 20.0), ("most", None),
                      (120.0, None)):
        with pytest.raises(UsageError):
            resolve_prune_percent(bad, keep) if not str(bad).startswith("auto:") \
                else auto_threshold(bad)


def test_random_selection_has_no_scores_to_choose_p(resnet):
    with pytest.raises(UsageError, match="random"):
        resnet.explainer.attribute(image(1), method="pathway", prune_percent="auto",
                                   selection="random")
