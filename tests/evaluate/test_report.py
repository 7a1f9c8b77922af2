"""The report's table, CSV and JSON, the Pillow plots, and the runner's checks."""

import json

import numpy as np
import pytest
from eval_models import conv_bn_model
from PIL import Image

from onnxpath import Explainer
from onnxpath.errors import UsageError
from onnxpath.evaluate import Report, Score, Series, Settings, evaluate
from onnxpath.evaluate.plot import write_plots
from onnxpath.evaluate.report import mean_sem


def small_report():
    report = Report(["a", "b"], images=3)
    report.scores.append(Score("lerf", "a", np.array([0.1, 0.2, 0.3]), "lower"))
    report.scores.append(Score("lerf", "b", np.array([0.5, np.nan, 0.7]), "lower"))
    report.series.append(Series("lerf", "abs_frac_change", "a", [0.01, 0.02], "fraction",
                                np.array([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3]]), "lower"))
    return report


def test_mean_and_standard_error_skip_undefined_values():
    mean, sem, n = mean_sem(np.array([0.5, np.nan, 0.7]))
    assert (mean, n) == (pytest.approx(0.6), 2)
    assert sem == pytest.approx(np.std([0.5, 0.7], ddof=1) / np.sqrt(2))


def test_table_csv_and_json():
    report = small_report()
    table = report.table().splitlines()
    assert table[0].split() == ["method", "lerf", "↓"]
    assert table[2].split() == ["a", "0.200", "±", "0.058"]
    rows = report.csv().splitlines()
    assert rows[0] == "method,metric,measure,x,mean,sem,n,better"
    assert rows[1].startswith("a,lerf,score,,0.2,0.057735,3,lower")
    assert rows[-1].startswith("a,lerf,abs_frac_change,0.02,0.2,")
    data = json.loads(json.dumps(report.as_json()))
    assert data["summary"]["b"]["lerf"]["n"] == 2
    assert data["curves"][0]["mean"] == [0.1, 0.2]


def test_plots_are_pngs_with_one_colour_per_method(tmp_path):
    written = write_plots(small_report(), tmp_path)
    assert [p.name for p in written] == ["lerf.png"]
    image = np.asarray(Image.open(written[0]).convert("RGB"))
    assert image.shape == (460, 720, 3)
    assert (np.abs(image.astype(int) - (31, 119, 180)).sum(-1) < 10).sum() > 100


def test_runner_fills_every_column_for_every_method():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[:, 4:12, 4:12] = True
    settings = Settings(ns=(1, 8, 64), samples=6, step=32, sanity_steps=2)
    report = evaluate(Explainer(conv_bn_model()), x, ["gradient"], ["all"], settings, masks)
    assert report.columns() == ["lerf", "morf", "deletion", "insertion", "road-morf",
                                "road-lerf", "sensitivity-n", "sanity-first", "sanity-last",
                                "pointing-game", "relevance-mass"]
    assert all(len(s.values) == 3 for s in report.scores)
    assert report.notes["sanity_layers"] == {"1": "fc", "3": "conv"}


def test_runner_refuses_unknown_names_and_mask_metrics_without_masks():
    explainer = Explainer(conv_bn_model())
    x = np.zeros((1, 3, 16, 16), dtype=np.float32)
    with pytest.raises(UsageError, match="unknown metric 'lerff'"):
        evaluate(explainer, x, ["gradient"], ["lerff"])
    with pytest.raises(UsageError, match="unknown method"):
        evaluate(explainer, x, ["nope"], ["lerf"])
    with pytest.raises(UsageError, match="need ground-truth masks"):
        evaluate(explainer, x, ["gradient"], ["pointing-game"])
