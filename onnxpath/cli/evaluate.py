"""`onnxpath evaluate`: the papers' evaluation protocols for several methods on one model.

stdout carries the table (methods × metrics, mean ± standard error); progress and per-input
errors go to stderr. `--csv`, `--json` and `--plots` write the full curves; `--out DIR` writes
all of them (and the report) into DIR.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import typer
from PIL import Image

from onnxpath.cli import app
from onnxpath.cli._common import parse_floats
from onnxpath.cli.declare import Flag, command
from onnxpath.cli.jobs import explainer_from, method_list, parse_prune, recipe_from
from onnxpath.cli.options import (
    DEBUG,
    KEEP,
    METHOD,
    MODEL,
    OUTPUT,
    PREPROCESSING_BASIC,
    PREPROCESSING_MORE,
    PRUNE,
    QUIET,
    REPORT_FILE,
    RUNTIME,
)
from onnxpath.errors import InputError, UsageError
from onnxpath.evaluate import METRICS, Settings, evaluate
from onnxpath.evaluate.localisation import shapes_scenes
from onnxpath.evaluate.perturbation import RANKS
from onnxpath.evaluate.plot import write_plots
from onnxpath.evaluate.runner import MASK_METRICS, check_methods, check_metrics
from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input, model_size, to_tensor
from onnxpath.io.inputs import expand_inputs
from onnxpath.io.outputs import check_writable, write_atomic
from onnxpath.io.preprocess import IMAGE_SUFFIXES, Preprocess
from onnxpath.methods import METHODS, check_options, option_names


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    values = parse_floats(text, option)
    if values is None:
        return None
    if any(v != int(v) or v < 1 for v in values):
        raise UsageError(f"{option} takes comma-separated positive integers, got '{text}'")
    return tuple(int(v) for v in values)


def parse_fractions(text: str | None, option: str) -> tuple[float, ...] | None:
    values = parse_floats(text, option)
    if values is not None and any(not 0 < v <= 1 for v in values):
        raise UsageError(f"{option} takes fractions in (0, 1], got '{text}'")
    return values


def parse_value(text: str):
    """One option value: JSON when it parses (numbers, true), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(items: list[str] | None) -> dict:
    """`key=value` method options; values are read as JSON when they parse (numbers, true),
    `key=a,b` is the list [a, b], and one value of an option whose default is a sequence
    (`-o layers=Clip`) is a list of one."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got '{item}'")
        key = key.strip().replace("-", "_")
        parsed = parse_value(value)
        if isinstance(parsed, str) and "," in value:
            parsed = [parse_value(v.strip()) for v in value.split(",") if v.strip()]
        elif not isinstance(parsed, list) and key in sequence_options():
            parsed = [parsed]
        options[key] = parsed
    return options


def sequence_options() -> set[str]:
    """Method options whose default is a tuple or list (e.g. the pathway's `layers`)."""
    import inspect

    return {name for fn in METHODS.values()
            for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and isinstance(p.default, (tuple, list))}


def find_mask(directory: Path, stem: str) -> Path:
    for suffix in (".png", ".npy", *sorted(IMAGE_SUFFIXES)):
        candidate = directory / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise InputError(f"no mask for '{stem}' in {directory} (looked for {stem}.png, .npy, ...)")


def load_mask(path: Path, prep: Preprocess, input_shape: tuple) -> np.ndarray:
    """A bool H×W mask, put through the same resize/crop as its image."""
    if path.suffix.lower() == ".npy":
        mask = np.load(path, allow_pickle=False)
        return np.asarray(mask).squeeze() > 0
    size, _ = model_size(input_shape, prep, prep.layout)
    gray = replace(prep, mean=(0.0,), std=(1.0,), scale=1.0, bgr=False, gray=True,
                   layout="nchw")
    with Image.open(path) as img:
        tensor, _ = to_tensor(img.convert("L"), gray, size, 1)
    return tensor[0] > 127.5


def scene_inputs(explainer: Explainer, prep: Preprocess, count: int, seed: int):
    images, _, masks = shapes_scenes(count, seed)
    size, channels = model_size(explainer.input_shape, prep, prep.layout)
    x = np.stack([to_tensor(Image.fromarray(img), prep, size, channels)[0] for img in images])
    if masks.shape[1:] != tuple(size):
        masks = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
            (size[1], size[0]), Image.Resampling.NEAREST)) > 127 for m in masks])
    return x, masks


def file_inputs(explainer: Explainer, prep: Preprocess, items: list[str],
                masks_dir: Path | None):
    paths = expand_inputs(items)
    if masks_dir is not None:
        masks_root = masks_dir.resolve()
        paths = [p for p in paths if masks_root not in p.resolve().parents]
    if not paths:
        raise UsageError("no inputs found")
    tensors, masks, failures = [], [], 0
    for path in paths:
        try:
            x, _ = load_input(path, explainer.input_shape, prep)
            mask = None
            if masks_dir is not None:
                mask = load_mask(find_mask(masks_dir, path.stem), prep, explainer.input_shape)
                if mask.shape != x.shape[-2:]:
                    raise InputError(f"{path}: mask shape {mask.shape} differs from the "
                                     f"input's {x.shape[-2:]}")
        except InputError as err:
            failures += 1
            print(f"onnxpath: skipped: {err}", file=sys.stderr)
            continue
        tensors.append(x)
        masks.append(mask)
    if not tensors:
        raise UsageError("none of the inputs could be read")
    return (np.stack(tensors), np.stack(masks) if masks_dir is not None else None, failures)


ARGS = (
    MODEL,
    Flag("inputs", list[str], typer.Argument(None, help="Images or .npy tensors, directories, "
                                             "globs, or - for stdin. Optional with "
                                             "--scenes.")),
)
# The protocols' settings. --masks, --seed, --fill, --tolerance, --out, --json and
# --batch-size differ from the flags of those names elsewhere (tests/cli/test_vocabulary.py
# says how and why).
PROTOCOLS = (
    METHOD,
    Flag("metrics", str, typer.Option("all", "--metrics", help="Comma-separated: all, "
                                      f"{', '.join(METRICS)}.")),
    Flag("masks", Path, typer.Option(None, "--masks", help="Ground-truth masks <stem>.png (or "
                                     ".npy) for pointing-game and relevance-mass.")),
    Flag("scenes", int, typer.Option(None, "--scenes", help="Evaluate on N generated shapes "
                                     "scenes with masks (the demo model's localisation "
                                     "benchmark).")),
    Flag("seed", int, typer.Option(0, "--seed", help="Seed for scenes, subsets, tie-breaks, "
                                   "noise.")),
    Flag("fractions", str, typer.Option(None, "--fractions", help="lerf/morf fractions "
                                        "(default 0.01,0.02,...,0.1).")),
    Flag("fill", str, typer.Option("zero", "--fill", help="Removed-pixel value in model "
                                   "space: zero (the dataset mean of normalised inputs), mean "
                                   "(of these inputs), or numbers per channel.")),
    Flag("rank", str, typer.Option("signed", "--rank", help="Rank pixels by the signed "
                                   "max-abs map (signed, the paper), its magnitude (abs), or "
                                   "the channel maximum of the raw map (max, the authors' "
                                   "RoarTorch evaluation code).")),
    Flag("step", int, typer.Option(None, "--step", help="deletion/insertion pixels per step "
                                   "(default: the image width).")),
    Flag("road_fractions", str, typer.Option(None, "--road-fractions", help="ROAD fractions "
                                             "(default 0.1,...,0.5,0.7,0.9).")),
    Flag("ns", str, typer.Option(None, "--ns", help="sensitivity-n subset sizes in pixels "
                                 "(default 1,4,16,64,256,1024).")),
    Flag("subsets", int, typer.Option(32, "--subsets", help="sensitivity-n subsets per n and "
                                      "image.")),
    # The old spelling of --subsets (attribute's --samples counts a method's samples).
    Flag("samples", int, typer.Option(None, "--samples", hidden=True, help="Old spelling of "
                                      "--subsets.")),
    Flag("sanity_images", int, typer.Option(None, "--sanity-images", help="Use only the first "
                                            "N inputs for the sanity check (default: all).")),
    Flag("sanity_steps", int, typer.Option(None, "--sanity-steps", help="Evaluate N cascade "
                                           "steps spread evenly (default: every parametric "
                                           "layer).")),
    Flag("tolerance", float, typer.Option(None, "--tolerance", help="Pointing-game tolerance "
                                          "in px (default: 15 px at 224, scaled to the "
                                          "input).")),
    Flag("option", list[str], typer.Option(None, "--set", "--option", help="Method option "
                                           "KEY=VALUE, e.g. --set steps=32 (repeatable; a key "
                                           "no method takes is an error).")),
    PRUNE,
    KEEP,
)
WRITE = (
    Flag("out", Path, typer.Option(None, "--out", "-o", help="Write eval.csv, eval.json, "
                                   "plots/ and report.html here (--csv, --json, --plots and "
                                   "--report name their own).")),
    Flag("csv_path", Path, typer.Option(None, "--csv", help="Write every score and curve as "
                                        "CSV.")),
    Flag("json_path", Path, typer.Option(None, "--json", help="Write the report as JSON.")),
    Flag("plots", Path, typer.Option(None, "--plots", help="Write one PNG per curve here.")),
    REPORT_FILE,
    Flag("batch_size", int, typer.Option(None, "--batch-size", "-b", help="Inputs per forward "
                                         "run (default: the fastest, measured once for the "
                                         "model).")),
)


@command(app, ARGS, PROTOCOLS, WRITE, PREPROCESSING_BASIC, PREPROCESSING_MORE, OUTPUT,
         RUNTIME, QUIET, DEBUG, name="evaluate")
def evaluate_command(o: SimpleNamespace) -> int:
    """Score attribution methods with the papers' protocols; print a methods × metrics table.

    Example: onnxpath evaluate models/shapes_resnet.onnx --scenes 100
    -m pathway,gradient,integrated-gradients,guided-backprop,gradcam --prune 70 -o eval/
    """
    start = time.perf_counter()
    method_names, metric_names, options = check_request(o)
    explainer = explainer_from(o)
    if any(METHODS[m].needs_gradients for m in method_names):
        explainer.check_differentiable()
    prep = recipe_from(o, explainer)
    failures = 0
    if o.scenes is not None:
        x, gt_masks = scene_inputs(explainer, prep, o.scenes, o.seed)
    else:
        x, gt_masks, failures = file_inputs(explainer, prep, o.inputs, o.masks)
    if x.ndim != 4:
        raise UsageError(f"evaluate needs image-shaped inputs (C×H×W); got {x.shape[1:]}")
    settings = settings_from(o, x, options)
    progress = None if o.quiet else (lambda message: print(f"onnxpath: {message}",
                                                           file=sys.stderr, flush=True))
    if progress:
        progress(f"{len(x)} inputs, methods {', '.join(method_names)}, metrics "
                 f"{', '.join(metric_names)}")
    report = evaluate(explainer, x, method_names, metric_names, settings,
                      gt_masks if any(m in MASK_METRICS for m in metric_names) else None,
                      progress=progress)
    report.notes["total_seconds"] = round(time.perf_counter() - start, 2)
    if o.scenes is not None:
        report.notes["inputs"] = f"{o.scenes} shapes scenes, seed {o.seed}"
    sys.stdout.write(report.table() + "\n")
    sys.stdout.flush()
    write_outputs(o, report, progress)
    if progress:
        progress(f"done in {report.notes['total_seconds']:.1f} s")
    return 1 if failures else 0


def check_request(o: SimpleNamespace) -> tuple[list[str], list[str], dict]:
    """The methods, metrics and method options asked for, and the flags that can be checked
    before the model loads (so a typo fails at once, not after a minute of setup)."""
    methods, implied = method_list(o)
    method_names = check_methods(methods)
    options = method_options(o, method_names, implied)
    metric_names = [m.strip() for m in o.metrics.split(",") if m.strip()]
    have_masks = o.masks is not None or o.scenes is not None
    metric_names = check_metrics(metric_names, have_masks)
    if o.rank not in RANKS:
        raise UsageError(f"unknown --rank '{o.rank}'; choose {', '.join(RANKS)}")
    if o.masks is not None and not o.masks.is_dir():
        raise UsageError(f"--masks {o.masks} is not a directory")
    if o.scenes is None and not o.inputs:
        raise UsageError("give inputs, or --scenes N to generate the shapes benchmark")
    if o.step is not None and o.step < 1:
        raise UsageError(f"--step must be at least 1, got {o.step}")
    check_out(o)
    return method_names, metric_names, options


def method_options(o: SimpleNamespace, methods: list[str], implied: dict) -> dict:
    """--set KEY=VALUE, --prune and --keep, and what an alias implies, each key one that some
    method of `methods` takes."""
    options = {**implied, **parse_options(o.option)}
    for key, value in (("prune_percent", parse_prune(o.prune)), ("keep", o.keep)):
        if value is not None:
            if key in options and options[key] != value:
                raise UsageError(f"--set {key}={options[key]} and --{key.split('_')[0]} "
                                 f"{value:g} disagree; give one" if isinstance(value, float)
                                 else f"--set {key}={options[key]} and --prune {value} "
                                 "disagree; give one")
            options[key] = value
    check_options(methods, options)
    return options


def check_out(o: SimpleNamespace) -> None:
    """--out DIR, writable. `-o KEY=VALUE` was a method option before -o meant --out."""
    if o.out is None:
        return
    key = str(o.out).partition("=")[0].replace("-", "_")
    if "=" in str(o.out) and not o.out.exists() and key in option_names(METHODS):
        raise UsageError(f"-o is --out, an output folder, in every command: give the method "
                         f"option as --set {o.out}")
    check_writable(o.out)


def settings_from(o: SimpleNamespace, x: np.ndarray, options: dict) -> Settings:
    """The protocols' Settings; --fill mean needs the inputs `x`."""
    return Settings(
        fractions=parse_fractions(o.fractions, "--fractions") or Settings.fractions,
        fill=parse_fill(o.fill, x), rank=o.rank, step=o.step,
        road_fractions=parse_fractions(o.road_fractions, "--road-fractions")
        or Settings.road_fractions,
        ns=parse_ints(o.ns, "--ns") or Settings.ns, samples=subsets(o),
        sanity_images=o.sanity_images, sanity_steps=o.sanity_steps, tolerance=o.tolerance,
        batch_size=o.batch_size, seed=o.seed, method_options=options)


def subsets(o: SimpleNamespace) -> int:
    """--subsets, or its old spelling --samples (with a warning)."""
    if o.samples is None:
        return o.subsets
    warnings.warn("evaluate --samples is now --subsets (sensitivity-n subsets per n and "
                  "image); --samples will go", FutureWarning, stacklevel=2)
    return o.samples


def write_outputs(o: SimpleNamespace, report, progress) -> None:
    """--csv, --json, --report and --plots, after the table is on stdout; --out DIR names
    those not given."""
    def path(given, name):
        return given if given is not None or o.out is None else o.out / name

    csv_path, json_path = path(o.csv_path, "eval.csv"), path(o.json_path, "eval.json")
    report_path, plots = path(o.report, "report.html"), path(o.plots, "plots")
    if csv_path is not None:
        write_atomic(csv_path, report.csv().encode())
    if json_path is not None:
        write_atomic(json_path, (json.dumps(report.as_json(), indent=1) + "\n").encode())
    if report_path is not None:
        from onnxpath.report import write_evaluate_report
        page = write_evaluate_report(report_path, report.as_json(), {"model": o.model.name},
                                     report.cascade)
        if progress:
            progress(f"wrote the report {page}")
    if plots is not None:
        written = write_plots(report, plots)
        if progress:
            progress(f"wrote {len(written)} plots to {plots}")


def parse_fill(text: str, x: np.ndarray) -> float | tuple[float, ...]:
    if text == "zero":
        return 0.0
    if text == "mean":
        return tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
    values = parse_floats(text, "--fill")
    if len(values) not in (1, x.shape[1]):
        raise UsageError(f"--fill takes 1 or {x.shape[1]} values, got {len(values)}")
    return values[0] if len(values) == 1 else values
