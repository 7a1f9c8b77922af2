"""Tables: a skl2onnx MLPClassifier (committed, built by make_tabular.py) read from a CSV with a
header. The per-feature gradient equals a float64 numpy reference computed from the model's own
weights; features are named from the header; --out writes a CSV of scores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxpath.io.table import read_csv
from onnxpath.report.charts import number
from tests.io.io_helpers import run_cli

DATA = Path(__file__).resolve().parent / "data"
MODEL, ROWS = DATA / "mlp_classifier.onnx", DATA / "customers.csv"


def reference_gradient(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pre-softmax logits, d logit_t / d x for every class t), float64, from the weights."""
    weights = {i.name: numpy_helper.to_array(i).astype(np.float64)
               for i in onnx.load(MODEL).graph.initializer}
    layers = [("coefficient", "intercepts"), ("coefficient1", "intercepts1"),
              ("coefficient2", "intercepts2")]
    h, jacobian = x.astype(np.float64), np.eye(x.shape[-1])
    for k, (w, b) in enumerate(layers):
        z = h @ weights[w] + weights[b].ravel()
        jacobian = jacobian @ weights[w]
        if k < len(layers) - 1:
            jacobian = jacobian * (z > 0)
            z = np.maximum(z, 0)
        h = z
    return h, jacobian


def test_csv_rows_gradient_matches_numpy_float64(capsys, tmp_path):
    code, lines, err = run_cli(capsys, MODEL, ROWS, "-m", "gradient", "-o", tmp_path)
    assert code == 0, err
    names, rows = read_csv(ROWS)
    assert len(lines) == len(rows)
    worst = 0.0
    for line, row in zip(lines, rows, strict=True):
        assert line["error"] is None
        logits, jacobian = reference_gradient(row)
        target = int(np.argmax(logits))
        assert line["target"] == target
        expected = jacobian[:, target]
        scores = np.array([f["score"] for f in line["features"]])
        assert [f["name"] for f in line["features"]] == names
        np.testing.assert_allclose([f["value"] for f in line["features"]], row, rtol=1e-6)
        error = np.abs(scores - expected).max() / np.abs(expected).max()
        worst = max(worst, error)
        with open(line["outputs"]["csv"]) as handle:
            written = list(csv.DictReader(handle))
        assert [r["feature"] for r in written] == names
        np.testing.assert_allclose([float(r["score"]) for r in written], scores, rtol=1e-7)
        assert np.load(line["outputs"]["npy"]).shape == (len(names),)
    print(f"\n[table] skl2onnx MLP gradient vs float64 numpy: max relative error {worst:.2e}")
    assert worst <= 1e-5


def test_npy_rows_are_named_by_features_file(capsys, tmp_path):
    names = ["a", "b", "c", "d", "e", "f"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    np.save(tmp_path / "row.npy", read_csv(ROWS)[1][0])
    code, lines, err = run_cli(capsys, MODEL, tmp_path / "row.npy", "--features",
                               tmp_path / "names.txt", "-m", "integrated-gradients")
    assert code == 0, err
    assert [f["name"] for f in lines[0]["features"]] == names


@pytest.mark.parametrize("method", ["input-x-gradient", "smoothgrad", "occlusion", "rise",
                                    "lime", "kernel-shap", "pathway"])
def test_every_method_on_a_table(capsys, method):
    code, lines, err = run_cli(capsys, MODEL, ROWS, "-m", method, "--samples", "64")
    assert code == 0, err
    assert all(line["error"] is None and len(line["features"]) == 6 for line in lines)


def test_bad_csv_is_one_error_line(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d,e,f\n1,2,3,x,5,6\n")
    code, lines, err = run_cli(capsys, MODEL, bad, ROWS)
    assert code == 1
    assert "not a number" in lines[0]["error"] and lines[1]["error"] is None
    assert "Traceback" not in err


@pytest.mark.parametrize("prune", [50, 80])
def test_pathway_on_a_relu_mlp_is_exact(tmp_path, prune):
    """A torch ReLU MLP on table rows: the pathway gradient equals the float64 torch oracle
    of tests/pathways/reference.py."""
    import warnings

    import torch
    from torch import nn

    from onnxpath.explainer import Explainer
    from onnxpath.methods.pathway import critical_pathway
    from tests.pathways.reference import (
        torch_contributions,
        torch_pathway_gradient,
        torch_select,
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                          nn.Linear(16, 3)).eval()
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 6),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    x = read_csv(ROWS)[1][:1]
    explainer = Explainer(path, cache=False, feature_names=read_csv(ROWS)[0])
    engine = explainer.engine(x.shape)
    c = int(engine.logits(x).argmax())
    result = explainer.attribute(x, "pathway", c, prune_percent=prune)
    assert result.feature_names == read_csv(ROWS)[0]
    found = critical_pathway(engine, x, [c], prune_percent=prune)
    masks = torch_select(torch_contributions(model, x.astype(np.float64), c), prune)
    same = sum(int((m[0] == r).sum()) for m, r in zip(found.masks, masks, strict=True))
    assert same == sum(r.size for r in masks)
    expected = torch_pathway_gradient(model, x.astype(np.float64), c, masks)
    error = np.abs(result.maps[0] - expected).max() / np.abs(expected).max()
    print(f"\n[table] pathway P={prune} on a ReLU MLP: max relative error {error:.2e}")
    assert error <= 1e-5


def test_top_k_explains_each_of_the_best_classes(capsys, tmp_path):
    code, lines, err = run_cli(capsys, MODEL, ROWS, "-m", "gradient", "--target", "top2",
                               "-o", tmp_path)
    assert code == 0, err
    rows = read_csv(ROWS)[1]
    assert len(lines) == 2 * len(rows)
    for k, row in enumerate(rows):
        logits, jacobian = reference_gradient(row)
        best = list(np.argsort(-logits)[:2])
        pair = lines[2 * k: 2 * k + 2]
        assert [line["target"] for line in pair] == best
        for line in pair:
            expected = jacobian[:, line["target"]]
            assert np.allclose([f["score"] for f in line["features"]], expected, rtol=1e-5,
                               atol=1e-7 * np.abs(expected).max())
            assert f".class{line['target']}." in line["outputs"]["npy"]


def test_report_of_a_table_run_has_a_bar_per_feature_and_errors_in_place(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d,e,f\n1,2,3,x,5,6\n")
    page = tmp_path / "report.html"
    code, lines, err = run_cli(capsys, MODEL, ROWS, bad, "-m", "gradient", "--report", page)
    assert code == 1 and "Traceback" not in err  # the bad row fails, the rest are explained
    good = [line for line in lines if line["error"] is None]
    html = page.read_text()
    assert html.count('<section class="row"') == len(lines)
    assert html.count('class="chart bars"') == len(good)
    # One bar per feature, each labelled with the record's own score (rounded for reading).
    for line in good:
        for feature in line["features"]:
            assert (f"{feature['name']} = {number(feature['value'], 6)}: "
                    f"{number(feature['score'])}") in html
    assert "not a number" in html


def test_same_named_tables_in_two_folders_never_share_output_files(capsys, tmp_path):
    names, rows = read_csv(ROWS)
    for folder, sign in (("a", 1), ("b", -1)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.csv").write_text(
            ",".join(names) + "\n" + "".join(",".join(f"{sign * v:.6f}" for v in row) + "\n"
                                             for row in rows))
    out = tmp_path / "out"
    code, lines, err = run_cli(capsys, MODEL, tmp_path / "a" / "x.csv", tmp_path / "b" / "x.csv",
                               "-m", "gradient", "-o", out)
    assert code == 0, err
    written = [line["outputs"]["npy"] for line in lines]
    assert len(set(written)) == len(lines) == 2 * len(rows)  # before: b's rows overwrote a's
    for line in lines:
        scores = np.array([f["score"] for f in line["features"]], dtype=np.float32)
        np.testing.assert_array_equal(np.load(line["outputs"]["npy"]), scores)


def test_a_table_run_resumes_row_by_row_and_adding_a_file_renames_nothing(capsys, tmp_path):
    """The image runs' resume, per example: a rerun re-emits finished rows without touching
    their files, redoes exactly the rows whose markers are gone, and the manifest keeps
    every output name when a same-named file joins."""
    from onnxpath.run.resume import STATE

    names, rows = read_csv(ROWS)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "x.csv").write_text(ROWS.read_text())
    first, out = tmp_path / "a" / "x.csv", tmp_path / "out"
    code, lines, _ = run_cli(capsys, MODEL, first, "-m", "gradient", "-o", out)
    assert code == 0 and len(lines) == len(rows)
    assert len(list((out / STATE / "done").iterdir())) == len(rows)
    inodes = {p.name: p.stat().st_ino for p in out.glob("*.*")}

    (out / STATE / "done" / "x.row2.json").unlink()
    code, again, _ = run_cli(capsys, MODEL, first, "-m", "gradient", "-o", out)
    assert code == 0
    redone = {name for name, ino in inodes.items() if (out / name).stat().st_ino != ino}
    assert redone == {"x.row2.gradient.npy", "x.row2.gradient.csv", "x.row2.gradient.png"}
    strip = [{k: v for k, v in line.items() if k != "time_ms"} for line in lines]
    assert [{k: v for k, v in line.items() if k != "time_ms"} for line in again] == strip
    assert [line["time_ms"] for k, line in enumerate(again) if k != 2] == \
        [line["time_ms"] for k, line in enumerate(lines) if k != 2]  # re-emitted as they were

    code, both, _ = run_cli(capsys, MODEL, first, tmp_path / "b" / "x.csv", "-m", "gradient",
                            "-o", out)
    assert code == 0 and len(both) == 2 * len(rows)
    assert both[:len(rows)] == again  # a/x.csv keeps its names and its finished lines
    assert {Path(line["outputs"]["npy"]).name for line in both[len(rows):]} == \
        {f"b_x.row{i}.gradient.npy" for i in range(len(rows))}

    code, fresh, _ = run_cli(capsys, MODEL, first, "-m", "gradient", "-o", out, "--no-resume")
    assert code == 0 and all((out / name).stat().st_ino != ino for name, ino in inodes.items()
                             if name.startswith("x.row"))


def test_npz_collects_every_row_map_also_from_a_resumed_run(capsys, tmp_path):
    """--npz was silently ignored for tables; now each record names its member, which equals
    the map written beside it, also for rows re-emitted from a previous run's markers."""
    from onnxpath.run.resume import STATE

    out, npz = tmp_path / "out", tmp_path / "maps.npz"
    code, lines, _ = run_cli(capsys, MODEL, ROWS, "-m", "gradient,occlusion", "-o", out,
                             "--npz", npz)
    assert code == 0 and len(lines) == 8

    def check(records):
        with np.load(npz) as bundle:
            assert sorted(bundle.files) == sorted(r["outputs"]["npz_key"] for r in records)
            for record in records:
                assert record["outputs"]["npz"] == str(npz)
                np.testing.assert_array_equal(bundle[record["outputs"]["npz_key"]],
                                              np.load(record["outputs"]["npy"]))

    check(lines)
    (out / STATE / "done" / "customers.row1.json").unlink()
    code, again, _ = run_cli(capsys, MODEL, ROWS, "-m", "gradient,occlusion", "-o", out,
                             "--npz", npz)
    assert code == 0 and len(again) == 8
    check(again)  # three rows read back from --out, one computed again
