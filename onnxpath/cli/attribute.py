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
from ..methods import METHODS, effective_params
from ..outputs import save_npy, save_png
from ..render import REDUCTIONS, overlay, reduce_channels
from ..render import side_by_side as compare
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
    # --- pathway ---
    prune: float = typer.Option(None, "--prune", help="Pathway: % of neurons to prune (85)."),
    keep: float = typer.Option(None, "--keep", help="Pathway: % of neurons to keep (100-P)."),
    selection: str = typer.Option("contribution", "--selection", help="Pathway: contribution, "
                                  "integrated, learned or random."),
    layers: str = typer.Option("Relu", "--layers", help="Pathway: op types to mask: Relu,Clip."),
    layer_regex: str = typer.Option(None, "--layer-regex", help="Pathway: layer name regex."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Pathway: threshold per layer."),
    # --- baseline methods: None means "the method's own default" (see each method's doc) ---
    steps: int = typer.Option(None, "--steps", help="integrated-gradients: steps (50)."),
    rule: str = typer.Option(None, "--rule", help="integrated-gradients: gausslegendre, "
                             "riemann-left|right|middle|trapezoid (gausslegendre)."),
    baseline: str = typer.Option(None, "--baseline",
                                 help="integrated-gradients: zero, blur, uniform or FILE.npy."),
    internal_batch_size: int = typer.Option(None, "--internal-batch-size", help="Rows per ONNX "
                                            "Runtime run (IG, SmoothGrad, occlusion, RISE)."),
    samples: int = typer.Option(None, "--samples", help="smoothgrad: noisy copies (5)."),
    noise: str = typer.Option(None, "--noise", help="smoothgrad: sigma, absolute (1.0) or a "
                              "percentage of the input range (15%)."),
    variant: str = typer.Option(None, "--variant", help="smoothgrad: mean, square or var."),
    seed: int = typer.Option(None, "--seed", help="Random seed: smoothgrad, rise, uniform "
                             "baseline (0)."),
    layer: str = typer.Option(None, "--layer", help="gradcam: tensor or node name (default: "
                              "the last 4-D map before global pooling)."),
    relu: bool = typer.Option(None, "--relu/--no-relu", help="gradcam: ReLU the map (off)."),
    window: str = typer.Option(None, "--window", help="occlusion: window, N or HxW (16)."),
    stride: str = typer.Option(None, "--stride", help="occlusion: stride, N or HxW (8)."),
    fill: float = typer.Option(None, "--fill", help="occlusion: value of occluded pixels (0)."),
    masks: int = typer.Option(None, "--rise-masks", help="rise: number of masks (1000)."),
    cells: int = typer.Option(None, "--cells", help="rise: grid cells per side (7)."),
    probability: float = typer.Option(None, "--probability", help="rise: keep probability."),
    fallback: str = typer.Option(None, "--fallback", help="Forward-only method (occlusion, "
                                 "rise) to run when the model has ops without gradient rules."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="With --out: one "
                                      "<stem>.side-by-side.png per input, a panel per method."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    """Attribute each input's prediction to its pixels.

    Example: onnxpath attribute models/shapes_resnet.onnx models/samples/*.png -m gradient -o out/

    Example: onnxpath attribute model.onnx cat.png -m gradient,integrated-gradients,gradcam
    --steps 32 --side-by-side -o out/
    """
    methods = [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method '{','.join(unknown) or method}'; choose from "
                         f"{', '.join(METHODS)}")
    if reduce not in REDUCTIONS:
        raise UsageError(f"unknown --reduce '{reduce}'; choose from {', '.join(REDUCTIONS)}")
    if side_by_side and out is None:
        raise UsageError("--side-by-side writes a figure: give --out DIR")
    explainer = Explainer(model, device=device, threads=threads)
    if fallback is None and any(METHODS[m].needs_gradients for m in methods):
        explainer.check_differentiable()
    label_names = read_labels(labels) if labels else model_labels(explainer.proto)
    target_index = resolve_target(target, label_names)
    prep = build_preprocess(explainer, preset, parse_size(size), parse_floats(mean, "--mean"),
                            parse_floats(std, "--std"))
    from .pathway import pathway_options
    given = dict(steps=steps, rule=rule, baseline=baseline, samples=samples, noise=noise,
                 internal_batch_size=internal_batch_size, variant=variant, seed=seed,
                 layer=layer, relu=relu, window=window, stride=stride, fill=fill, masks=masks,
                 cells=cells, probability=probability)
    options = {"absolute": absolute, **{k: v for k, v in given.items() if v is not None},
               **pathway_options(prune, keep, selection, layers, layer_regex, per_layer)}
    noted: set[str] = set()
    paths = expand_inputs(inputs)
    if not paths:
        raise UsageError("no inputs found")
    stems = output_stems(paths)
    failures = 0
    for path, stem in zip(paths, stems, strict=True):
        records, panels, image = [], [], None
        for asked in methods:
            record = {"input": str(path), "method": asked, "target": None, "label": None,
                      "logit": None, "prob": None, "outputs": {}, "params": effective_params(
                          METHODS[asked], options), "time_ms": None, "error": None,
                      "extras": {}}
            records.append(record)
            try:
                x, image = load_input(path, explainer.input_shape, prep)
                result = explainer.attribute(x, method=asked, target=target_index,
                                             fallback=fallback, **options)
                name = result.method
                if name != asked:
                    record.update(method=name, params=effective_params(METHODS[name], options))
                    if asked not in noted:
                        noted.add(asked)
                        print(f"onnxpath: note: {asked} falls back to {name}: "
                              f"{result.extras[0]['fallback_reason']}", file=sys.stderr)
                record["extras"] = result.extras[0]
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
                    heat = reduce_channels(raw, reduce)
                    panels.append((asked if name == asked else f"{name} (for {asked})", heat))
                    if image is not None:
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
        if side_by_side and panels:
            try:
                figure = save_png(out / f"{stem}.side-by-side.png", compare(image, panels))
                for record in records:
                    record["outputs"]["side_by_side"] = str(figure)
            except OSError as err:
                failures += 1
                records[-1]["error"] = f"cannot write output: {err.strerror} ({err.filename})"
        for record in records:  # one input's lines together, once all its methods are done
            emit(record)
    return 1 if failures else 0
