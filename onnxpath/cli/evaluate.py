"""`onnxpath evaluate`: the papers' evaluation protocols for several methods on one model.

stdout carries the table (methods × metrics, mean ± standard error); progress and per-input
errors go to stderr. `--csv`, `--json` and `--plots` write the full curves.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import typer
from PIL import Image

from onnxpath.cli import app
from onnxpath.cli import options as shared
from onnxpath.cli._common import build_preprocess, parse_floats, parse_scale, parse_size
from onnxpath.errors import InputError, UsageError
from onnxpath.evaluate import METRICS, Settings, evaluate
from onnxpath.evaluate.localisation import shapes_scenes
from onnxpath.evaluate.perturbation import RANKS
from onnxpath.evaluate.plot import write_plots
from onnxpath.evaluate.runner import MASK_METRICS, check_methods, check_metrics
from onnxpath.explainer import Explainer
from onnxpath.io.image import load_input, model_size, to_tensor
from onnxpath.io.inputs import expand_inputs
from onnxpath.io.outputs import write_atomic
from onnxpath.io.preprocess import IMAGE_SUFFIXES, Preprocess
from onnxpath.methods import METHODS


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
            raise UsageError(f"--option takes key=value, got '{item}'")
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


@app.command("evaluate")
def evaluate_command(
    model: Path = typer.Argument(..., help="The .onnx model."),
    inputs: list[str] = typer.Argument(None, help="Images or .npy tensors, directories, globs, "
                                       "or - for stdin. Optional with --scenes."),
    methods: str = typer.Option("gradient", "--methods", "-m",
                                help=f"Comma-separated methods: {', '.join(METHODS)}."),
    metrics: str = typer.Option("all", "--metrics",
                                help=f"Comma-separated: all, {', '.join(METRICS)}."),
    masks: Path = typer.Option(None, "--masks", help="Ground-truth masks <stem>.png (or .npy) "
                               "for pointing-game and relevance-mass."),
    scenes: int = typer.Option(None, "--scenes", help="Evaluate on N generated shapes scenes "
                               "with masks (the demo model's localisation benchmark)."),
    seed: int = typer.Option(0, "--seed", help="Seed for scenes, subsets, tie-breaks, noise."),
    fractions: str = typer.Option(None, "--fractions", help="lerf/morf fractions "
                                  "(default 0.01,0.02,...,0.1)."),
    fill: str = typer.Option("zero", "--fill", help="Removed-pixel value in model space: zero "
                             "(the dataset mean of normalised inputs), mean (of these "
                             "inputs), or numbers per channel."),
    rank: str = typer.Option("signed", "--rank", help="Rank pixels by the signed max-abs map "
                             "(signed, the paper), its magnitude (abs), or the channel maximum "
                             "of the raw map (max, the authors' RoarTorch evaluation code)."),
    step: int = typer.Option(None, "--step", help="deletion/insertion pixels per step "
                             "(default: the image width)."),
    road_fractions: str = typer.Option(None, "--road-fractions",
                                       help="ROAD fractions (default 0.1,...,0.5,0.7,0.9)."),
    ns: str = typer.Option(None, "--ns", help="sensitivity-n subset sizes in pixels "
                           "(default 1,4,16,64,256,1024)."),
    samples: int = typer.Option(32, "--samples", help="sensitivity-n subsets per n and image."),
    sanity_images: int = typer.Option(None, "--sanity-images", help="Use only the first N "
                                      "inputs for the sanity check (default: all)."),
    sanity_steps: int = typer.Option(None, "--sanity-steps", help="Evaluate N cascade steps "
                                     "spread evenly (default: every parametric layer)."),
    tolerance: float = typer.Option(None, "--tolerance", help="Pointing-game tolerance in px "
                                    "(default: 15 px at 224, scaled to the input)."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Method option key=value, "
                                     "e.g. -o prune_percent=70 (repeatable)."),
    csv_path: Path = typer.Option(None, "--csv", help="Write every score and curve as CSV."),
    json_path: Path = typer.Option(None, "--json", help="Write the report as JSON."),
    plots: Path = typer.Option(None, "--plots", help="Write one PNG per curve here."),
    report_path: str = typer.Option(None, "--report", help="Write an HTML report: the table, "
                                    "every curve and the sanity cascade (FILE.html or DIR/)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Inputs per forward run "
                                   "(default: the fastest, measured once for the model)."),
    preset: str = shared.PRESET,
    size: str = shared.SIZE,
    mean: str = shared.MEAN,
    std: str = shared.STD,
    preprocess: Path = shared.PREPROCESS,
    resize: int = shared.RESIZE,
    crop: bool = shared.CROP,
    scale: str = shared.SCALE,
    bgr: bool = shared.BGR,
    layout: str = shared.LAYOUT,
    gray: bool = shared.GRAY,
    output: str = typer.Option(None, "--output", help="The model output to explain (default: "
                               "see `onnxpath inspect`)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build sessions afresh; neither "
                                  "read nor write the on-disk session cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    """Score attribution methods with the papers' protocols; print a methods × metrics table.

    Example: onnxpath evaluate models/shapes_resnet.onnx --scenes 100
    -m pathway,gradient,integrated-gradients,guided-backprop,gradcam --csv eval.csv --plots plots/
    """
    start = time.perf_counter()
    method_names = check_methods([m.strip() for m in methods.split(",") if m.strip()])
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    have_masks = masks is not None or scenes is not None
    metric_names = check_metrics(metric_names, have_masks)
    if rank not in RANKS:
        raise UsageError(f"unknown --rank '{rank}'; choose {', '.join(RANKS)}")
    if masks is not None and not masks.is_dir():
        raise UsageError(f"--masks {masks} is not a directory")
    if scenes is None and not inputs:
        raise UsageError("give inputs, or --scenes N to generate the shapes benchmark")
    if step is not None and step < 1:
        raise UsageError(f"--step must be at least 1, got {step}")
    explainer = Explainer(model, device=device, threads=threads, cache=not no_cache,
                          output=output)
    if any(METHODS[m].needs_gradients for m in method_names):
        explainer.check_differentiable()
    prep = build_preprocess(explainer, preset, parse_size(size), parse_floats(mean, "--mean"),
                            parse_floats(std, "--std"), config=preprocess, resize=resize,
                            crop=crop, scale=parse_scale(scale), bgr=bgr, layout=layout,
                            gray=gray)
    failures = 0
    if scenes is not None:
        x, gt_masks = scene_inputs(explainer, prep, scenes, seed)
    else:
        x, gt_masks, failures = file_inputs(explainer, prep, inputs, masks)
    if x.ndim != 4:
        raise UsageError(f"evaluate needs image-shaped inputs (C×H×W); got {x.shape[1:]}")
    settings = Settings(
        fractions=parse_fractions(fractions, "--fractions") or Settings.fractions,
        fill=parse_fill(fill, x), rank=rank, step=step,
        road_fractions=parse_fractions(road_fractions, "--road-fractions")
        or Settings.road_fractions,
        ns=parse_ints(ns, "--ns") or Settings.ns, samples=samples,
        sanity_images=sanity_images, sanity_steps=sanity_steps, tolerance=tolerance,
        batch_size=batch_size, seed=seed, method_options=parse_options(option))
    progress = None if quiet else (lambda message: print(f"onnxpath: {message}",
                                                         file=sys.stderr, flush=True))
    if progress:
        progress(f"{len(x)} inputs, methods {', '.join(method_names)}, metrics "
                 f"{', '.join(metric_names)}")
    report = evaluate(explainer, x, method_names, metric_names, settings,
                      gt_masks if any(m in MASK_METRICS for m in metric_names) else None,
                      progress=progress)
    report.notes["total_seconds"] = round(time.perf_counter() - start, 2)
    if scenes is not None:
        report.notes["inputs"] = f"{scenes} shapes scenes, seed {seed}"
    sys.stdout.write(report.table() + "\n")
    sys.stdout.flush()
    if csv_path is not None:
        write_atomic(csv_path, report.csv().encode())
    if json_path is not None:
        write_atomic(json_path, (json.dumps(report.as_json(), indent=1) + "\n").encode())
    if report_path is not None:
        from onnxpath.report import write_evaluate_report
        page = write_evaluate_report(report_path, report.as_json(), {"model": model.name},
                                     report.cascade)
        if progress:
            progress(f"wrote the report {page}")
    if plots is not None:
        written = write_plots(report, plots)
        if progress:
            progress(f"wrote {len(written)} plots to {plots}")
    if progress:
        progress(f"done in {report.notes['total_seconds']:.1f} s")
    return 1 if failures else 0


def parse_fill(text: str, x: np.ndarray) -> float | tuple[float, ...]:
    if text == "zero":
        return 0.0
    if text == "mean":
        return tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
    values = parse_floats(text, "--fill")
    if len(values) not in (1, x.shape[1]):
        raise UsageError(f"--fill takes 1 or {x.shape[1]} values, got {len(values)}")
    return values[0] if len(values) == 1 else values
