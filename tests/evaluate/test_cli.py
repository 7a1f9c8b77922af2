"""`onnxpath evaluate`: the table (or --json) on stdout, CSV/JSON/plots, ground-truth masks,
exit codes, the old spellings."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import pytest
from eval_models import conv_bn_model
from PIL import Image

from onnxpath.cli import main

FAST = ["--ns", "1,16", "--subsets", "4", "--step", "64", "--sanity-steps", "2",
        "--road-fractions", "0.2,0.8", "-q"]


@pytest.fixture
def dataset(tmp_path):
    """A 16x16 model, three PNG inputs and their masks, one input without a mask."""
    model = tmp_path / "convbn.onnx"
    onnx.save(conv_bn_model(), model)
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(
            images / f"{name}.png")
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[4:12, 3:9] = 255
        Image.fromarray(mask).save(masks / f"{name}.png")
    return model, images, masks


def run(capsys, *args):
    code = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_all_metrics_write_table_csv_json_and_plots(capsys, dataset, tmp_path):
    model, images, masks = dataset
    out = tmp_path / "out"
    code, stdout, err = run(capsys, model, images, "--truth", masks, "-m", "gradient",
                            "--csv", out / "eval.csv", "-o", out, "--plots", out / "plots",
                            *FAST)
    assert code == 0, err
    header, rule, row = stdout.splitlines()
    assert header.split()[0] == "method" and "pointing-game" in header
    assert row.startswith("gradient") and "±" in row
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert {r["metric"] for r in rows if r["measure"] == "score"} == {
        "lerf", "morf", "deletion", "insertion", "road-morf", "road-lerf", "sensitivity-n",
        "sanity-first", "sanity-last", "pointing-game", "relevance-mass"}
    assert all(r["n"] == "3" for r in rows if r["measure"] == "score")
    report = json.loads((out / "eval.json").read_text())
    assert report["images"] == 3 and report["methods"] == ["gradient"]
    assert report["settings"]["road_fractions"] == [0.2, 0.8]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "lerf.png" in plots and "sanity-spearman_abs.png" in plots
    assert Image.open(out / "plots" / "deletion.png").size == (720, 460)


def test_missing_mask_skips_that_input_and_exits_1(capsys, dataset):
    model, images, masks = dataset
    (masks / "c.png").unlink()
    code, stdout, err = run(capsys, model, images, "--truth", masks, "--metrics",
                            "pointing-game,relevance-mass", "-q")
    assert code == 1
    assert "no mask for 'c'" in err
    assert stdout.count("gradient") == 1


@pytest.mark.parametrize("args, message", [
    (["--metrics", "lerff"], "unknown metric 'lerff'"),
    (["-m", "nope"], "unknown method 'nope'"),
    (["--metrics", "pointing-game"], "need ground-truth masks: give --truth DIR or --scenes N"),
    (["--truth", "nowhere"], "--truth nowhere is not a directory"),
    (["--subsets", "0"], "--subsets must be at least 1, got 0"),
    (["--sanity-images", "0"], "--sanity-images must be at least 1, got 0"),
    (["--sanity-steps", "-2"], "--sanity-steps must be at least 1, got -2"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--scenes", "0"], "--scenes must be at least 1, got 0"),
    (["--pointing-tolerance", "-1"], "--pointing-tolerance must be at least 0 px, got -1"),
    (["--removed-fill", "grey"], "--removed-fill takes zero, mean or numbers per channel, got "
                                 "'grey'"),
    (["--rank", "up"], "unknown --rank 'up'"),
    (["--fractions", "0,0.5"], "--fractions takes fractions in (0, 1]"),
])
def test_usage_errors_exit_2_with_one_line(capsys, dataset, args, message):
    model, images, _ = dataset
    code, stdout, err = run(capsys, model, images, *args)
    assert code == 2 and stdout == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_shapes_scenes_benchmark(capsys, tmp_path):
    model = tmp_path / "convbn64.onnx"
    onnx.save(conv_bn_model(size=64), model)
    code, stdout, err = run(capsys, model, "--scenes", "3", "--metrics",
                            "lerf,pointing-game,relevance-mass", "-q")
    assert code == 0, err
    assert "pointing-game" in stdout.splitlines()[0]


def test_out_folder_holds_csv_json_plots_and_report(capsys, dataset, tmp_path):
    """-o is --out, a folder, as in attribute (it was --option here); --csv still wins."""
    model, images, _ = dataset
    out, csv_file = tmp_path / "out", tmp_path / "mine.csv"
    code, stdout, err = run(capsys, model, images, "-o", out, "--csv", csv_file, "--metrics",
                            "lerf,deletion", *FAST)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "plots", "report.html"]
    assert csv_file.exists() and "lerf.png" in {p.name for p in (out / "plots").iterdir()}
    assert json.loads((out / "eval.json").read_text())["methods"] == ["gradient"]


def test_method_options_by_set_option_prune_and_aliases(capsys, dataset, tmp_path):
    model, images, _ = dataset
    settings = []
    for args in (["--methods", "pathway,saliency", "--set", "selection=random", "-p", "70"],
                 ["-m", "pathway,saliency", "--option", "selection=random", "--set",
                  "prune_percent=70"],
                 ["-m", "pathway,Saliency", "--set", "selection=random", "--keep", "30"]):
        out = tmp_path / str(len(settings))
        code, _, err = run(capsys, model, images, *args, "--metrics", "lerf", "-o", out, *FAST)
        assert code == 0, err
        report = json.loads((out / "eval.json").read_text())
        assert report["methods"] == ["pathway", "gradient"]
        settings.append(report["settings"]["method_options"])
    assert settings[0] == settings[1] == {"absolute": True, "selection": "random",
                                          "prune_percent": 70}
    assert settings[2] == {"absolute": True, "selection": "random", "keep": 30}


def test_subsets_and_its_old_spelling(capsys, dataset, tmp_path):
    model, images, _ = dataset
    for flag in ("--subsets", "--samples"):
        out = tmp_path / flag.strip("-")
        code, _, err = run(capsys, model, images, "--metrics", "sensitivity-n", flag, "3",
                           "--ns", "1", "-o", out, "-q")
        assert code == 0, err
        assert json.loads((out / "eval.json").read_text())["settings"]["samples"] == 3
        assert ("--samples is now --subsets" in err) == (flag == "--samples")


@pytest.mark.parametrize("args, message", [
    (["-m", "pathway", "--set", "prune=50"],
     "unknown method option 'prune' for pathway; did you mean 'prune_percent'?"),
    (["--set", "foo=1"],
     "unknown method option 'foo' for gradient (valid: absolute, layer, neuron)"),
    (["-m", "gradiant"], "did you mean 'gradient'?"),
    (["-m", "pathway", "-o", "prune_percent=50"],
     "-o is --out, an output folder, in every command: give the method option as --set "
     "prune_percent=50"),
    (["-m", "pathway", "--prune", "70", "--set", "prune_percent=60"], "disagree"),
    (["-m", "rise", "--set", "masks=0"], "--set masks must be at least 1, got 0"),
    (["-m", "smoothgrad", "--set", "noise=-2"], "--set noise must be above 0"),
])
def test_option_mistakes_are_one_line_usage_errors(capsys, dataset, args, message):
    model, images, _ = dataset
    code, stdout, err = run(capsys, model, images, *args, "-q")
    assert code == 2 and stdout == ""
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_json_prints_the_report_on_stdout(capsys, dataset, tmp_path):
    """--json means what it means in every command: one JSON object on stdout (the report
    -o DIR writes as eval.json), instead of the table."""
    model, images, _ = dataset
    out = tmp_path / "out"
    code, stdout, err = run(capsys, model, images, "--metrics", "lerf", "--json", "--csv",
                            tmp_path / "e.csv", *FAST)
    assert code == 0, err
    assert len(stdout.splitlines()) == 1
    printed = json.loads(stdout)
    assert printed["methods"] == ["gradient"] and "lerf" in printed["summary"]["gradient"]
    code, _, err = run(capsys, model, images, "--metrics", "lerf", "-o", out, *FAST)
    assert code == 0, err
    written = json.loads((out / "eval.json").read_text())
    assert written["summary"] == printed["summary"]


@pytest.mark.parametrize("old, new, metrics, value, setting", [
    ("--tolerance", "--pointing-tolerance", "pointing-game", "3", ("tolerance", 3.0)),
    ("--fill", "--removed-fill", "lerf", "0.5", ("fill", 0.5)),
    ("--samples", "--subsets", "sensitivity-n", "3", ("samples", 3)),
    ("--masks", "--truth", "relevance-mass", None, None),
])
def test_old_spellings_still_work_with_a_warning(capsys, dataset, tmp_path, old, new, metrics,
                                                  value, setting):
    model, images, masks = dataset
    out = tmp_path / "out"
    given = [old, str(masks) if value is None else value]
    truth = [] if old == "--masks" else ["--truth", masks]
    fast = FAST[:FAST.index("--subsets")] + FAST[FAST.index("--subsets") + 2:]
    code, stdout, err = run(capsys, model, images, "--metrics", metrics, *given, *truth,
                            "-o", out, *fast)
    assert code == 0, err
    assert f"onnxpath: warning: evaluate {old} is now {new} (" in err
    assert len([line for line in err.splitlines() if "warning" in line]) == 1
    assert metrics in stdout.splitlines()[0]
    if setting is not None:
        key, expected = setting
        assert json.loads((out / "eval.json").read_text())["settings"][key] == expected


def test_json_file_is_the_old_spelling_of_out(capsys, dataset, tmp_path):
    """evaluate --json FILE wrote the report there: it still does, with a warning, the table
    still on stdout; --json before the model, too."""
    model, images, _ = dataset
    for args in ([model, images, "--json", tmp_path / "a.json"],
                 ["--json", tmp_path / "b.json", model, images]):
        code, stdout, err = run(capsys, *args, "--metrics", "lerf", *FAST)
        assert code == 0, err
        assert "evaluate --json FILE is now -o DIR (DIR/eval.json) or --json" in err
        assert stdout.splitlines()[0].split()[0] == "method"
    for name in ("a.json", "b.json"):
        assert json.loads((tmp_path / name).read_text())["methods"] == ["gradient"]


def test_sanity_images_past_the_inputs_is_said(capsys, dataset):
    model, images, _ = dataset
    code, stdout, err = run(capsys, model, images, "--metrics", "sanity", "--sanity-images",
                            "9", "--sanity-steps", "1", "-q")
    assert code == 0, err
    assert err.strip() == ("onnxpath: warning: --sanity-images 9: there are 3 inputs; the "
                           "sanity check uses all 3")
