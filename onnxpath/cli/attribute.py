"""`onnxpath attribute`: one JSON line per input on stdout, maps and overlays in --out."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
import typer

from ..errors import InputError, OnnxPathError, UsageError
from ..explainer import Explainer
from ..imaging import PRESETS, Preprocess, load_input, preset_for
from ..inputs import expand_inputs, output_stems
from ..labels import model_labels, read_labels, resolve_target
from ..methods import METHODS
from ..outputs import save_npy, save_png
from ..render import REDUCTIONS, overlay, reduce_channels
from . import app


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise UsageError(f"{option} takes comma-separated numbers, got '{text}'") from err


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError as err:
        raise UsageError(f"--size takes HxW (e.g. 224x224), got '{text}'") from err
    return h, w


def build_preprocess(explainer: Explainer, preset: str | None, size, mean, std) -> Preprocess:
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown --preset '{preset}'; choose from {', '.join(PRESETS)}")
    prep = PRESETS[preset] if preset else preset_for(explainer.input_shape, explainer.proto)
    changes = {}
    if size:
        changes["size"] = size
    if mean:
        changes["mean"] = mean
    if std:
        changes["std"] = std
    from dataclasses import replace
    return replace(prep, **changes)


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


@app.command()
def attribute(
    model: Path = typer.Argument(..., help="The .onnx model to explain."),
    inputs: list[str] = typer.Argument(..., help="Images, .npy tensors (C×H×W or 1×C×H×W, "
                                       "model input space), directories, globs, or - for stdin."),
    method: str = typer.Option("gradient", "--method", "-m",
                               help=f"Comma-separated methods: {', '.join(METHODS)}."),
    target: str = typer.Option(None, "--target", "-t",
                               help="Class index or label to explain (default: the prediction)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write <stem>.<method>.npy (raw) and "
                             ".png (overlay) here."),
    labels: Path = typer.Option(None, "--labels", help="Labels: .txt one per line, or JSON."),
    preset: str = typer.Option(None, "--preset",
                               help=f"Preprocessing preset: {', '.join(PRESETS)}."),
    size: str = typer.Option(None, "--size", help="Model input size HxW, e.g. 224x224."),
    mean: str = typer.Option(None, "--mean", help="Per-channel mean, e.g. 0.485,0.456,0.406."),
    std: str = typer.Option(None, "--std", help="Per-channel std, e.g. 0.229,0.224,0.225."),
    reduce: str = typer.Option("max-abs", "--reduce",
                               help=f"Channel reduction for the PNG: {', '.join(REDUCTIONS)}."),
    absolute: bool = typer.Option(False, "--abs", help="Gradient: absolute value (Saliency)."),
    prune: float = typer.Option(None, "--prune", help="Pathway: % of neurons to prune (85)."),
    keep: float = typer.Option(None, "--keep", help="Pathway: % of neurons to keep (100-P)."),
    selection: str = typer.Option("contribution", "--selection", help="Pathway: contribution, "
                                  "integrated, learned or random."),
    layers: str = typer.Option("Relu", "--layers", help="Pathway: op types to mask: Relu,Clip."),
    layer_regex: str = typer.Option(None, "--layer-regex", help="Pathway: layer name regex."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Pathway: threshold per layer."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    """Attribute each input's prediction to its pixels.

    Example: onnxpath attribute models/shapes_resnet.onnx models/samples/*.png -m gradient -o out/
    """
    methods = [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method '{','.join(unknown) or method}'; choose from "
                         f"{', '.join(METHODS)}")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown --reduce '{reduce}'; choose from {', '.join(REDUCTIONS)}")
    explainer = Explainer(model, device=device, threads=threads)
    if any(METHODS[m].needs_gradients for m in methods):
        explainer.check_differentiable()
    label_names = read_labels(labels) if labels else model_labels(explainer.proto)
    target_index = resolve_target(target, label_names)
    prep = build_preprocess(explainer, preset, parse_size(size), parse_floats(mean, "--mean"),
                            parse_floats(std, "--std"))
    from .pathway import pathway_options  # here, so this edit stays self-contained
    options = {"absolute": absolute,
               **pathway_options(prune, keep, selection, layers, layer_regex, per_layer)}
    paths = expand_inputs(inputs)
    if not paths:
        raise UsageError("no inputs found")
    stems = output_stems(paths)
    failures = 0
    for path, stem in zip(paths, stems, strict=True):
        for name in methods:
            record = {"input": str(path), "method": name, "target": None, "label": None,
                      "logit": None, "prob": None, "outputs": {}, "params": options_for_json(
                          options), "time_ms": None, "error": None}
            try:
                x, image = load_input(path, explainer.input_shape, prep)
                result = explainer.attribute(x, method=name, target=target_index, **options)
                raw = result.maps[0]
                if not np.isfinite(raw).all():
                    raise InputError("the attribution holds NaN or Inf; nothing written")
                c = int(result.targets[0])
                record.update(target=c, label=label_names[c] if label_names and
                              c < len(label_names) else None,
                              logit=float(result.logits[0]), prob=float(result.probs[0]),
                              time_ms=round(result.time_ms, 2))
                if out is not None:
                    npy = save_npy(out / f"{stem}.{name}.npy", raw)
                    record["outputs"]["npy"] = str(npy)
                    if image is not None:
                        heat = reduce_channels(raw, reduce)
                        png = save_png(out / f"{stem}.{name}.png", overlay(image, heat))
                        record["outputs"]["png"] = str(png)
            except OnnxPathError as err:
                if err.exit_code == 2 and not isinstance(err, InputError):
                    raise
                failures += 1
                record["error"] = str(err)
                if debug:
                    traceback.print_exc()
            except OSError as err:
                failures += 1
                record["error"] = f"cannot write output: {err.strerror} ({err.filename})"
                if debug:
                    traceback.print_exc()
            emit(record)
    return 1 if failures else 0


def options_for_json(options: dict) -> dict:
    return {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool))}
