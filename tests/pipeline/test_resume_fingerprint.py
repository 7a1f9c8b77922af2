"""Resume cannot lie: a rerun into the same --out re-emits a finished input's lines only when
nothing that can change a byte of them changed. Every option of `attribute` (enumerated from
the command itself, so a new option is checked as soon as it exists) is changed between two
runs into one --out, and the second run must recompute; only the options of ALLOWED, which
cannot change a result, are exempt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import typer
from fingerprint_models import assets

import onnxpath.cli
from onnxpath.cli import main
from onnxpath.run.resume import STATE


class Case(NamedTuple):
    """Run `base` on `kind`'s model and inputs, then `base + changed` into the same --out."""

    kind: str  # image, segmenter, text, table or series
    base: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    model: str | None = None  # the second run's model, when it is what changes


PATHWAY, IG = ("-m", "pathway"), ("-m", "integrated-gradients", "--steps", "4")
SMOOTHGRAD, GRADCAM = ("-m", "smoothgrad", "--samples", "2"), ("-m", "gradcam")
OCCLUSION = ("-m", "occlusion", "--window", "4", "--stride", "4")
RISE, LIME = ("-m", "rise", "--rise-masks", "8"), ("-m", "lime", "--samples", "16")
LRP, NEURON = ("-m", "lrp"), ("-m", "gradient", "--layer", "c", "--neuron", "0,1,1")
SEGMENTATION = ("--output", "seg")
TEXT = ("--text", "a good film", "--tokenizer", "@tok1")

# What to change for each option; "@name" is a file of fingerprint_models.assets.
CASES: dict[str, Case] = {
    "MODEL": Case("image", model="@image2"),
    "--method": Case("image", (), ("-m", "input-x-gradient")),
    "--target": Case("image", (), ("--target", "1")),
    "--labels": Case("image", ("--labels", "@labels1"), ("--labels", "@labels2")),
    "--preset": Case("image", (), ("--preset", "caffe")),
    "--preprocess": Case("image", (), ("--preprocess", "@pp1")),
    "--size": Case("image", (), ("--size", "16x16")),
    "--resize": Case("image", (), ("--resize", "14")),
    "--crop": Case("image", ("--resize", "14"), ("--no-crop",)),  # --resize crops
    "--mean": Case("image", (), ("--mean", "0.2,0.2,0.2")),
    "--std": Case("image", (), ("--std", "0.5,0.5,0.5")),
    "--scale": Case("image", (), ("--scale", "1")),
    "--bgr": Case("image", (), ("--bgr",)),
    "--layout": Case("image", ("--size", "3x12"), ("--layout", "nhwc")),
    "--gray": Case("image", (), ("--gray",)),
    "--reduce": Case("image", (), ("--reduce", "sum")),
    "--colormap": Case("image", (), ("--colormap", "magma")),
    "--normalise": Case("image", (), ("--normalise", "minmax")),
    "--percentile": Case("image", (), ("--percentile", "90")),
    "--alpha": Case("image", (), ("--alpha", "0.3")),
    "--abs": Case("image", (), ("--abs",)),
    "--prune": Case("image", PATHWAY, ("--prune", "50")),
    "--keep": Case("image", PATHWAY, ("--keep", "30")),
    "--selection": Case("image", PATHWAY, ("--selection", "random")),
    "--layers": Case("image", PATHWAY, ("--layers", "Relu")),
    "--layer-regex": Case("image", PATHWAY, ("--layer-regex", "relu")),
    "--per-layer": Case("image", PATHWAY, ("--per-layer",)),
    "--steps": Case("image", IG, ("--steps", "5")),
    "--rule": Case("image", IG, ("--rule", "riemann-left")),
    "--baseline": Case("image", (*IG, "--baseline", "@baseline1"), ("--baseline", "@baseline2")),
    "--internal-batch-size": Case("image", IG, ("--internal-batch-size", "2")),
    "--samples": Case("image", SMOOTHGRAD, ("--samples", "3")),
    "--noise": Case("image", SMOOTHGRAD, ("--noise", "0.5")),
    "--variant": Case("image", SMOOTHGRAD, ("--variant", "square")),
    "--seed": Case("image", SMOOTHGRAD, ("--seed", "1")),
    "--layer": Case("image", GRADCAM, ("--layer", "c")),
    "--relu": Case("image", GRADCAM, ("--relu",)),
    "--window": Case("image", OCCLUSION, ("--window", "6")),
    "--stride": Case("image", OCCLUSION, ("--stride", "2")),
    "--fill": Case("image", OCCLUSION, ("--fill", "0.5")),
    "--rise-masks": Case("image", RISE, ("--rise-masks", "9")),
    "--cells": Case("image", RISE, ("--cells", "3")),
    "--probability": Case("image", RISE, ("--probability", "0.3")),
    "--segments": Case("image", LIME, ("--segments", "grid:4")),
    "--score": Case("image", LIME, ("--score", "logit")),
    "--kernel-width": Case("image", LIME, ("--kernel-width", "0.5")),
    "--composite": Case("image", LRP, ("--composite", "zplus")),
    "--epsilon": Case("image", LRP, ("--epsilon", "0.5")),
    "--gamma": Case("image", (*LRP, "--composite", "gamma"), ("--gamma", "1")),
    "--box": Case("image", (*LRP, "--composite", "epsilon-gamma-box"), ("--box", "-2,2")),
    "--zero-bias": Case("image", LRP, ("--zero-bias",)),
    "--neuron": Case("image", NEURON, ("--neuron", "1,1,1")),
    "--precision": Case("image", (), ("--precision", "model")),
    "--output": Case("image", (), ("--output", "aux")),
    "--wrt": Case("image", (), ("--wrt", "xs")),
    "--target-index": Case("segmenter", (*SEGMENTATION, "--target-index", "0,1,1"),
                           ("--target-index", "1,2,2")),
    "--region": Case("segmenter", (*SEGMENTATION, "--region", "@region1"),
                     ("--region", "@region2")),
    "--fallback": Case("image", (), ("--fallback", "occlusion")),
    "--side-by-side": Case("image", (), ("--side-by-side",)),
    "--text": Case("text", TEXT, ("--text", "a bad film")),
    "--tokenizer": Case("text", TEXT, ("--tokenizer", "@tok2")),
    "--token-reduce": Case("text", TEXT, ("--token-reduce", "l2")),
    "--features": Case("table", ("--features", "@names1"), ("--features", "@names2")),
    "--sample-rate": Case("series", ("--sample-rate", "100"), ("--sample-rate", "200")),
}

# Options that cannot change a byte of a result, each with the reason.
ALLOWED = {
    # Which inputs, not how: each input's own content is compared (the tests below).
    "INPUTS": "the inputs themselves; each one's content is checked on its own",
    "--out": "where results go",
    "--npz": "one more copy of the maps, rebuilt whole on every run",
    "--quiet": "stderr only",
    "--debug": "stderr only",
    "--resume": "whether markers are read at all",
    # How fast, and on what: the same computation (resume.job_fingerprint).
    "--batch-size": "how many inputs share an ONNX Runtime call",
    "--threads": "ONNX Runtime threads",
    "--no-cache": "whether sessions come from the on-disk cache",
    "--device": "the same graph on another execution provider",
    "--provider-option": "execution-provider tuning (memory limits, ...)",
    # --engine ray runs the same loop and writes byte-for-byte the plain CLI's files
    # (docs/cluster.md, tests/distributed).
    "--engine": "Ray: the same results", "--address": "Ray: where", "--actors": "Ray: how wide",
    "--cpus-per-actor": "Ray: how wide", "--gpus-per-actor": "Ray: how wide",
    "--ray-timeout": "Ray: how long to wait for the cluster",
    # The HTML report is rewritten by every run; it is not a result under --out.
    "--report": "the report", "--report-every": "the report", "--report-at-end": "the report",
}

INPUTS = {"image": ("@photo",), "segmenter": ("@photo",), "text": (), "table": ("@rows",),
          "series": ("@signal",)}
COMMON = {"image": ("--size", "12x12"), "segmenter": (), "text": (), "table": (), "series": ()}


def option_names() -> list[str]:
    """Every parameter of `attribute`: an argument by its name, an option by its first long
    spelling (--crop for --crop/--no-crop)."""
    command = typer.main.get_command(onnxpath.cli.app).commands["attribute"]
    return [param.name.upper() if param.param_type_name == "argument"
            else next(o for o in param.opts if o.startswith("--")) for param in command.params]


CHECKED = [name for name in option_names() if name not in ALLOWED]


def test_every_option_is_checked_or_allowed():
    names = option_names()
    assert not set(CASES) & set(ALLOWED)
    missing = sorted(set(names) - set(CASES) - set(ALLOWED))
    assert not missing, f"give each a Case, or an ALLOWED reason: {missing}"
    assert len(names) >= 70


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """(kind, base args) → an --out folder the base run finished, made once."""
    return {"root": tmp_path_factory.mktemp("bases")}


def resolve(files: dict[str, Path], args) -> list[str]:
    return [str(files[a[1:]]) if a.startswith("@") else a for a in args]


def attribute(capsys, files, kind: str, args, out: Path, model: str | None = None) -> int:
    code = main(["attribute", *resolve(files, [model or f"@{kind}", *INPUTS[kind]]),
                 "-o", str(out), "-q", *resolve(files, COMMON[kind] + tuple(args))])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    assert code == 0, captured.err
    return code


def markers(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (out / STATE / "done").iterdir()}


def base_run(capsys, files, bases, kind: str, base: tuple[str, ...]) -> Path:
    """The base run's --out, after checking that rerunning the base itself resumes (else a
    recompute would prove nothing)."""
    key = (kind, base)
    if key not in bases:
        out = bases["root"] / f"base{len(bases)}"
        attribute(capsys, files, kind, base, out)
        assert markers(out), "the base run finished its inputs"
        control = out.with_name(out.name + "-control")
        shutil.copytree(out, control)
        before = markers(control)
        attribute(capsys, files, kind, base, control)
        assert markers(control) == before, f"{kind} {base}: the same job must resume"
        bases[key] = out
    return bases[key]


@pytest.mark.parametrize("option", CHECKED)
def test_changing_an_option_redoes_every_input(capsys, tmp_path, files, bases, option):
    assert option in CASES, (f"{option} is new: give it a Case (a change that must redo the "
                             "inputs) or, if it cannot change a result, an ALLOWED reason")
    case = CASES[option]
    out = tmp_path / "out"
    shutil.copytree(base_run(capsys, files, bases, case.kind, case.base), out)
    before = markers(out)
    attribute(capsys, files, case.kind, case.base + case.changed, out, case.model)
    after = markers(out)
    kept = sorted(name for name in before if after.get(name) == before[name])
    assert not kept, f"{option} changed, yet these inputs were resumed: {kept}"


# --- the files options name: by content, not by path ------------------------------------

NAMED_FILES = {  # option: (kind, base args naming "@file", the asset it starts as, then)
    "--baseline": ("image", (*IG, "--baseline", "@file"), "baseline1", "baseline2"),
    "--labels": ("image", ("--labels", "@file"), "labels1", "labels2"),
    "--preprocess": ("image", ("--preprocess", "@file"), "pp1", "pp2"),
    "--region": ("segmenter", (*SEGMENTATION, "--region", "@file"), "region1", "region2"),
    "--features": ("table", ("--features", "@file"), "names1", "names2"),
    "--tokenizer": ("text", ("--text", "a good film", "--tokenizer", "@file"), "tok1", "tok2"),
}


@pytest.mark.parametrize("option", NAMED_FILES)
def test_rewriting_a_file_an_option_names_redoes_every_input(capsys, tmp_path, files, option):
    kind, base, first, then = NAMED_FILES[option]
    named = tmp_path / f"named{files[first].suffix}"
    shutil.copyfile(files[first], named)
    with_file = {**files, "file": named}
    out = tmp_path / "out"
    attribute(capsys, with_file, kind, base, out)
    before = markers(out)
    attribute(capsys, with_file, kind, base, out)
    assert markers(out) == before  # unchanged: resumed
    shutil.copyfile(files[then], named)  # the same path, other content
    attribute(capsys, with_file, kind, base, out)
    after = markers(out)
    assert not [name for name in before if after.get(name) == before[name]]


@pytest.mark.parametrize("change", [("--target-index", "0,1,1", "1,2,2"),
                                    ("--region", "@region1", "@region2")])
def test_another_target_index_or_region_prints_new_lines(capsys, tmp_path, files, change):
    """The segmentation case that used to reprint the old lines."""
    option, first, second = change
    out = tmp_path / "out"
    lines = []
    for value in (first, second, first):
        main(["attribute", str(files["segmenter"]), str(files["photo"]), "-o", str(out), "-q",
              "--output", "seg", *resolve(files, (option, value))])
        lines.append(json.loads(capsys.readouterr().out))
    assert lines[1]["logit"] != lines[0]["logit"]
    assert lines[2]["logit"] == lines[0]["logit"]  # and back
