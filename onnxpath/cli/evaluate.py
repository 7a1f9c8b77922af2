"""`onnxpath evaluate`: the papers' evaluation protocols for several methods on one model.

stdout carries the table (methods × metrics, mean ± standard error), or with `--json` the
full report as one JSON object; progress and per-input errors go to stderr. `--csv` and
`--plots` write the full curves; `--out DIR` writes eval.csv, eval.json, plots/ and the report
into DIR.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import typer

from onnxpath.cli import app
from onnxpath.cli._common import parse_floats
from onnxpath.cli.declare import Flag, command, renamed
from onnxpath.cli.eval_inputs import file_inputs, scene_inputs
from onnxpath.cli.jobs import (
    check_option_values,
    explainer_from,
    method_list,
    parse_prune,
    recipe_from,
)
from onnxpath.cli.options import (
    DEBUG,
    JSON,
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
from onnxpath.errors import UsageError
from onnxpath.evaluate import METRICS, Settings, evaluate, faithfulness, robustness
from onnxpath.evaluate.perturbation import RANKS
from onnxpath.evaluate.plot import write_plots
from onnxpath.evaluate.runner import MASK_METRICS, check_methods, check_metrics
from onnxpath.io.outputs import check_writable, write_atomic
from onnxpath.methods import METHODS, check_options, option_names

__all__ = ["evaluate_command", "parse_options", "scene_inputs"]


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


ARGS = (
    MODEL,
    Flag("inputs", list[str], typer.Argument(None, help="Images or .npy tensors, directories, "
                                             "globs, or - for stdin. Optional with "
                                             "--scenes.")),
)
# The protocols' settings. --seed, --out and --batch-size differ from the flags of those names
# elsewhere (tests/cli/test_vocabulary.py says how and why).
TRUTH = Flag("truth", Path, typer.Option(None, "--truth", help="Ground-truth masks: a folder "
                                         "of <stem>.png (white = object) or <stem>.npy, for "
                                         "pointing-game and relevance-mass."))
REMOVED_FILL = Flag("removed_fill", str, typer.Option(
    "zero", "--removed-fill", help="lerf, morf, deletion: the value removed pixels get, in "
    "model space: zero (the dataset mean of normalised inputs), mean (of these inputs), or "
    "numbers per channel."))
SUBSETS = Flag("subsets", int, typer.Option(32, "--subsets", help="sensitivity-n subsets per "
                                            "n and image."))
POINTING_TOLERANCE = Flag("pointing_tolerance", float, typer.Option(
    None, "--pointing-tolerance", help="Pointing-game tolerance in px (default: 15 px at 224, "
    "scaled to the input)."))
# The Captum and Quantus metrics' sample counts and noise; each default is the library's, but
# where a smaller one keeps a 2-core CPU within minutes (said in the help).
MAP_METRIC_FLAGS = (
    Flag("infidelity_samples", int, typer.Option(
        faithfulness.INFIDELITY_SAMPLES, "--infidelity-samples", help="infidelity: "
        "perturbations per input (Captum's n_perturb_samples).")),
    Flag("infidelity_std", float, typer.Option(
        faithfulness.INFIDELITY_STD, "--infidelity-std", help="infidelity: std of the "
        "Gaussian perturbation, model-input units (Captum's example).")),
    Flag("infidelity_normalize", bool, typer.Option(
        False, "--infidelity-normalize", help="infidelity: scale the map by the best β first "
        "(Captum's normalize=True).")),
    Flag("sensitivity_samples", int, typer.Option(
        robustness.SENSITIVITY_SAMPLES, "--sensitivity-samples", help="max-sensitivity: "
        "perturbed copies re-explained per input (Captum's n_perturb_samples).")),
    Flag("sensitivity_radius", float, typer.Option(
        robustness.SENSITIVITY_RADIUS, "--sensitivity-radius", help="max-sensitivity: L∞ "
        "radius of the uniform noise, model-input units (Captum's perturb_radius).")),
    Flag("faithfulness_runs", int, typer.Option(
        faithfulness.FAITHFULNESS_RUNS, "--faithfulness-runs", help="faithfulness-correlation: "
        "random subsets per input (Quantus's nr_runs).")),
    Flag("faithfulness_subset", int, typer.Option(
        faithfulness.FAITHFULNESS_SUBSET, "--faithfulness-subset", help="faithfulness-"
        "correlation: input elements set to black per subset (Quantus's subset_size).")),
    Flag("monotonicity_step", int, typer.Option(
        None, "--monotonicity-step", help="monotonicity: input elements inserted per step "
        "(default C×W, H steps; Quantus's features_in_step is 1, a run per element).")),
    Flag("lipschitz_samples", int, typer.Option(
        robustness.LIPSCHITZ_SAMPLES, "--lipschitz-samples", help="local-lipschitz: "
        "perturbed copies re-explained per input (Quantus's nr_samples is 200).")),
    Flag("lipschitz_std", float, typer.Option(
        robustness.LIPSCHITZ_STD, "--lipschitz-std", help="local-lipschitz: std of the "
        "Gaussian noise, model-input units (Quantus's perturb_std).")),
)
PROTOCOLS = (
    METHOD,
    Flag("metrics", str, typer.Option("all", "--metrics", help="Comma-separated: all (the "
                                      "protocols), captum-quantus (the library metrics), "
                                      f"{', '.join(METRICS)}.")),
    TRUTH,
    Flag("scenes", int, typer.Option(None, "--scenes", help="Evaluate on N generated shapes "
                                     "scenes with masks (the demo model's localisation "
                                     "benchmark).")),
    Flag("seed", int, typer.Option(0, "--seed", help="Random seed: scenes, sensitivity-n "
                                   "subsets, tie-breaks, noise.")),
    Flag("fractions", str, typer.Option(None, "--fractions", help="lerf/morf fractions "
                                        "(default 0.01,0.02,...,0.1).")),
    REMOVED_FILL,
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
    SUBSETS,
    Flag("sanity_images", int, typer.Option(None, "--sanity-images", help="Use only the first "
                                            "N inputs for the sanity check and mprt (default: "
                                            "all).")),
    Flag("sanity_steps", int, typer.Option(None, "--sanity-steps", help="Evaluate N cascade "
                                           "steps spread evenly (default: every parametric "
                                           "layer); sanity and mprt.")),
    POINTING_TOLERANCE,
    Flag("option", list[str], typer.Option(None, "--set", "--option", help="Method option "
                                           "KEY=VALUE, e.g. --set steps=32 (repeatable; a key "
                                           "no method takes is an error).")),
    PRUNE,
    KEEP,
)
WRITE = (
    Flag("out", Path, typer.Option(None, "--out", "-o", help="Write eval.csv, eval.json, "
                                   "plots/ and report.html here (--csv, --plots and --report "
                                   "name their own).")),
    Flag("csv_path", Path, typer.Option(None, "--csv", help="Write every score and curve as "
                                        "CSV.")),
    Flag("plots", Path, typer.Option(None, "--plots", help="Write one PNG per curve here.")),
    REPORT_FILE,
    JSON,
    Flag("batch_size", int, typer.Option(None, "--batch-size", "-b", help="Inputs per forward "
                                         "run (default: the fastest, measured once for the "
                                         "model).")),
)
# The old spellings, hidden; each still works with a warning. (evaluate --json FILE, from
# before --json meant stdout, is `old_json_file`.)
OLD = (
    renamed("--samples", SUBSETS, "attribute's --samples counts a method's samples"),
    renamed("--masks", TRUTH, "pathway's --masks is the .npz it writes"),
    renamed("--tolerance", POINTING_TOLERANCE, "check-grad's --tolerance is a relative error"),
    renamed("--fill", REMOVED_FILL, "attribute's --fill is occlusion's"),
)


@command(app, ARGS, PROTOCOLS, MAP_METRIC_FLAGS, WRITE, PREPROCESSING_BASIC, PREPROCESSING_MORE,
         OUTPUT, RUNTIME, QUIET, DEBUG, OLD, name="evaluate")
def evaluate_command(o: SimpleNamespace) -> int:
    """Score attribution methods with the papers' protocols; print a methods × metrics table
    (--json: the full report, one JSON object).

    Example: onnxpath evaluate models/shapes_resnet.onnx --scenes 100
    -m pathway,gradient,integrated-gradients,guided-backprop,gradcam --prune 70 -o eval/

    Captum's and Quantus's metrics: onnxpath evaluate models/efficientnet_lite0.onnx
    models/photos/apple.jpg -m gradient --metrics captum-quantus --sanity-steps 3
    """
    start = time.perf_counter()
    o.json_file = old_json_file(o)
    method_names, metric_names, options = check_request(o)
    explainer = explainer_from(o)
    if any(METHODS[m].needs_gradients for m in method_names):
        explainer.check_differentiable()
    prep = recipe_from(o, explainer)
    failures = 0
    if o.scenes is not None:
        x, gt_masks = scene_inputs(explainer, prep, o.scenes, o.seed)
    else:
        x, gt_masks, failures = file_inputs(explainer, prep, o.inputs, o.truth)
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
    sys.stdout.write((json.dumps(report.as_json()) if o.as_json else report.table()) + "\n")
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
    have_masks = o.truth is not None or o.scenes is not None
    if not have_masks and any(m in MASK_METRICS for m in metric_names):
        raise UsageError(f"{' and '.join(m for m in metric_names if m in MASK_METRICS)} "
                         "need ground-truth masks: give --truth DIR or --scenes N")
    metric_names = check_metrics(metric_names, have_masks)
    if o.rank not in RANKS:
        raise UsageError(f"unknown --rank '{o.rank}'; choose {', '.join(RANKS)}")
    if o.truth is not None and not o.truth.is_dir():
        raise UsageError(f"--truth {o.truth} is not a directory")
    if o.scenes is None and not o.inputs:
        raise UsageError("give inputs, or --scenes N to generate the shapes benchmark")
    for flag, value in (("--step", o.step), ("--scenes", o.scenes), ("--subsets", o.subsets),
                        ("--sanity-images", o.sanity_images),
                        ("--sanity-steps", o.sanity_steps), ("--batch-size", o.batch_size),
                        ("--infidelity-samples", o.infidelity_samples),
                        ("--sensitivity-samples", o.sensitivity_samples),
                        ("--faithfulness-runs", o.faithfulness_runs),
                        ("--faithfulness-subset", o.faithfulness_subset),
                        ("--monotonicity-step", o.monotonicity_step),
                        ("--lipschitz-samples", o.lipschitz_samples)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--infidelity-std", o.infidelity_std),
                        ("--sensitivity-radius", o.sensitivity_radius),
                        ("--lipschitz-std", o.lipschitz_std)):
        if not value > 0:
            raise UsageError(f"{flag} must be above 0, got {value:g}")
    if o.removed_fill not in ("zero", "mean"):
        try:
            parse_floats(o.removed_fill, "--removed-fill")
        except UsageError as err:
            raise UsageError(f"--removed-fill takes zero, mean or numbers per channel, got "
                             f"'{o.removed_fill}'") from err
    if o.pointing_tolerance is not None and not o.pointing_tolerance >= 0:
        raise UsageError(f"--pointing-tolerance must be at least 0 px, got "
                         f"{o.pointing_tolerance:g}")
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
    check_option_values(options, lambda key: f"--set {key}")
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
    """The protocols' Settings; --removed-fill mean needs the inputs `x`. --sanity-images past
    the count of inputs is said, not quietly cut."""
    if o.sanity_images is not None and o.sanity_images > len(x):
        print(f"onnxpath: warning: --sanity-images {o.sanity_images}: there are {len(x)} "
              f"inputs; the sanity check uses all {len(x)}", file=sys.stderr, flush=True)
    return Settings(
        fractions=parse_fractions(o.fractions, "--fractions") or Settings.fractions,
        fill=parse_fill(o.removed_fill, x), rank=o.rank, step=o.step,
        road_fractions=parse_fractions(o.road_fractions, "--road-fractions")
        or Settings.road_fractions,
        ns=parse_ints(o.ns, "--ns") or Settings.ns, samples=o.subsets,
        sanity_images=o.sanity_images, sanity_steps=o.sanity_steps,
        tolerance=o.pointing_tolerance, batch_size=o.batch_size, seed=o.seed,
        method_options=options, infidelity_samples=o.infidelity_samples,
        infidelity_std=o.infidelity_std, infidelity_normalize=o.infidelity_normalize,
        sensitivity_samples=o.sensitivity_samples, sensitivity_radius=o.sensitivity_radius,
        faithfulness_runs=o.faithfulness_runs, faithfulness_subset=o.faithfulness_subset,
        monotonicity_step=o.monotonicity_step, lipschitz_samples=o.lipschitz_samples,
        lipschitz_std=o.lipschitz_std)


def old_json_file(o: SimpleNamespace) -> Path | None:
    """`--json FILE` wrote the report to FILE before --json meant "on stdout", as in every
    command: click now takes FILE for an input (evaluate reads no .json), or for the model
    when --json came first. Such a FILE is written as before, with a warning."""
    if not o.as_json:
        return None
    if o.model.suffix.lower() == ".json" and o.inputs and o.inputs[0].endswith(".onnx"):
        file, o.model = o.model, Path(o.inputs.pop(0))
    else:
        files = [i for i in o.inputs or [] if i.lower().endswith(".json")]
        if not files:
            return None
        file = Path(files[-1])
        o.inputs.remove(files[-1])
    print(f"onnxpath: warning: evaluate --json FILE is now -o DIR (DIR/eval.json) or --json "
          f"(the report on stdout); writing {file} this time", file=sys.stderr, flush=True)
    o.as_json = False
    return file


def write_outputs(o: SimpleNamespace, report, progress) -> None:
    """--csv, --report and --plots, after the table (or --json) is on stdout; --out DIR
    names those not given, and eval.json."""
    def path(given, name):
        return given if given is not None or o.out is None else o.out / name

    csv_path, json_path = path(o.csv_path, "eval.csv"), path(o.json_file, "eval.json")
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
    values = parse_floats(text, "--removed-fill")
    if len(values) not in (1, x.shape[1]):
        raise UsageError(f"--removed-fill takes zero, mean, or 1 or {x.shape[1]} numbers, got "
                         f"{len(values)}")
    return values[0] if len(values) == 1 else values
