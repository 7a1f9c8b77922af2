"""`onnxpath attribute`: one JSON line per input and method on stdout, maps and overlays in
--out. The loop itself is `onnxpath.run.loop`; the flags are declared in `options` and here,
and parsed into the Job by `jobs`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import typer

from onnxpath.cli import app
from onnxpath.cli._common import build_preprocess, parse_floats, parse_size
from onnxpath.cli.declare import Flag, command
from onnxpath.cli.jobs import (
    check_choice,
    explainer_from,
    job_from,
    method_list,
    parse_provider_options,
    ray_cluster,
    style_from,
)
from onnxpath.cli.options import (
    ABS,
    DEBUG,
    DEVICE,
    INTAKE,
    LABELS,
    METHOD,
    METHOD_OPTIONS,
    MODAL,
    NO_CACHE,
    PATHWAY,
    PRECISION,
    PREPROCESSING,
    PROVIDER_OPTION,
    QUIET,
    RAY,
    RENDERING,
    REPORT,
    SURROGATE,
    TARGET,
    THREADS,
)
from onnxpath.errors import UsageError
from onnxpath.io.storage import location
from onnxpath.methods import METHODS
from onnxpath.run.job import Style
from onnxpath.run.loop import RunLoop, emit_json

__all__ = ["attribute", "build_preprocess", "parse_floats", "parse_size"]

ENGINES = ("local", "ray")

ARGS = (
    Flag("model", Path, typer.Argument(..., help="The .onnx model to explain.")),
    Flag("inputs", list[str], typer.Argument(None, help="Images, .npy tensors (C×H×W or "
                                             "1×C×H×W, model input space), directories, "
                                             "globs, or - for stdin; tables (.csv), series "
                                             "(.npy, .csv, .wav), text (.txt, .jsonl, token "
                                             "ids in .npy/.npz).")),
)
# What to explain and where the results go (--out and --batch-size: see
# tests/cli/test_vocabulary.py for how evaluate's and export's differ).
JOB = (
    METHOD,
    TARGET,
    Flag("out", str, typer.Option(None, "--out", "-o", help="Write <stem>.<method>.npy (raw) "
                                  "and .png (overlay) here: a folder, or s3://… / gs://… "
                                  "(fsspec).")),
    Flag("npz", Path, typer.Option(None, "--npz", help="Also collect every raw map in one "
                                   ".npz (keys <stem>.<method>), written as the batch goes.")),
    LABELS,
    Flag("batch_size", int, typer.Option(1, "--batch-size", "-b", help="Inputs per ONNX "
                                         "Runtime run (more helps on a GPU; results come per "
                                         "batch).")),
    QUIET,
)
FALLBACK = Flag("fallback", str, typer.Option(None, "--fallback", help="Forward-only method "
                                              "(occlusion, rise) to run when the model has "
                                              "ops without gradient rules."))
SIDE_BY_SIDE = Flag("side_by_side", bool, typer.Option(False, "--side-by-side", help="With "
                                                       "--out: one <stem>.side-by-side.png "
                                                       "per input, a panel per method."))
RESUME = Flag("resume", bool, typer.Option(True, "--resume/--no-resume", help="With --out: "
                                           "skip inputs a previous run of the same job "
                                           "finished (markers in OUT/.onnxpath), re-printing "
                                           "their lines; --no-resume redoes all."))


@command(app, ARGS, JOB, NO_CACHE, PREPROCESSING, RENDERING, ABS, PATHWAY, METHOD_OPTIONS,
         INTAKE, FALLBACK, MODAL, SURROGATE, SIDE_BY_SIDE, DEVICE, THREADS, PRECISION,
         PROVIDER_OPTION,
         RESUME, RAY, DEBUG, REPORT)
def attribute(o: SimpleNamespace) -> int:
    """Attribute each input's prediction to its pixels: one JSON line per input and method.

    Example: onnxpath attribute models/shapes_resnet.onnx models/samples/ -m gradient -o out/

    Example: find photos -name '*.jpg' | onnxpath attribute resnet50.onnx - --labels
    synset.txt --target top3 -b 8 --npz maps.npz -q | jq -c '[.input, .label, .prob]'

    Example: onnxpath attribute model.onnx cat.png -m gradient,integrated-gradients,gradcam
    --steps 32 --side-by-side -o out/

    Example: onnxpath attribute models/shapes_resnet.onnx models/samples/ -m
    gradient,pathway,gradcam -o out/ --report out/report.html

    Example: onnxpath attribute model.onnx /shared/photos/ -o s3://bucket/run1 --engine ray
    --actors 2-16 --device cuda --gpus-per-actor 0.5

    Example: onnxpath attribute bert.onnx --text "a great film" --tokenizer tokenizer.json
    -m integrated-gradients,lime  (also: rows.csv, signal.wav, reviews.txt, ids.npz)
    """
    methods, implied = method_list(o)
    vars(o).update(implied)
    style = style_from(o)
    if o.side_by_side and o.out is None:
        raise UsageError("--side-by-side writes a figure: give --out DIR")
    check_choice(o.engine, ENGINES, "--engine")
    out = location(o.out) if o.out is not None else None
    provider_options = parse_provider_options(o.provider_option)
    # On Ray the driver only plans: the workers have the device, maybe not this machine.
    explainer = explainer_from(o, device=None if o.engine == "local" else "cpu",
                               provider_options=provider_options)
    if o.fallback is None and any(METHODS[m].needs_gradients for m in methods):
        explainer.check_differentiable()
    job, paths = job_from(o, explainer, methods, style, out)
    sink = partial(emit_json, stream=sys.stdout)  # bound now: on Ray, stdout is stderr
    progress = False if o.quiet else None
    with report_page(o, methods, style) as page:
        if o.engine == "ray":
            from onnxpath.run.ray import run_ray
            failures = run_ray(o.model, paths, job, sink, device=o.device,
                               cluster=ray_cluster(o), threads=o.threads,
                               cache=not o.no_cache, provider_options=provider_options,
                               explainer=explainer, report=page, progress=progress,
                               debug=o.debug)
        else:
            failures = RunLoop(explainer, job, sink, page, progress, o.debug).run(paths)
    return 1 if failures else 0


@contextmanager
def report_page(o: SimpleNamespace, methods: list[str], style: Style):
    """The --report page (None without --report), closed (written) at the end of the run,
    also after an error or Ctrl-C: the page then shows every finished input."""
    if o.report is None:
        yield None
        return
    from onnxpath.report import AttributeReport

    if o.report_every < 1:
        raise UsageError(f"--report-every must be at least 1, got {o.report_every}")
    page = AttributeReport(o.report, every=o.report_every, at_end=o.report_at_end,
                           colormap=style.colormap,
                           meta={"model": o.model.name, "methods": ", ".join(methods),
                                 "colour map": style.colormap},
                           note=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        yield page
    finally:
        page.close()
