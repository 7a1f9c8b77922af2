"""`onnxpath attribute`: one JSON line per input and method on stdout, maps and overlays in
--out. The loop itself is `onnxpath.run.loop`; this module parses options."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import typer

from onnxpath.autodiff.relu_family import RELU_FAMILY
from onnxpath.cli import app
from onnxpath.cli import options as shared
from onnxpath.cli._common import (
    build_preprocess,
    make_explainer,
    parse_floats,
    parse_scale,
    parse_size,
)
from onnxpath.errors import UsageError
from onnxpath.io.image import model_size
from onnxpath.io.inputs import expand_inputs
from onnxpath.io.labels import model_labels, read_labels
from onnxpath.io.modality import takes_images
from onnxpath.io.outputs import check_writable
from onnxpath.io.render import COLORMAPS, NORMALISATIONS, REDUCTIONS
from onnxpath.io.storage import location
from onnxpath.io.table import read_names
from onnxpath.io.text import load_tokenizer
from onnxpath.methods import METHODS
from onnxpath.run.job import Job, Style, parse_target
from onnxpath.run.loop import RunLoop, emit_json

__all__ = ["attribute", "build_preprocess", "parse_floats", "parse_size"]


ENGINES = ("local", "ray")


def parse_provider_options(items: list[str] | None) -> dict[str, str] | None:
    """`--provider-option KEY=VALUE`, repeatable."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--provider-option takes KEY=VALUE, got '{item}'")
        options[key.strip()] = value.strip()
    return options or None


def check_choice(value: str, choices, option: str) -> str:
    if value not in choices:
        raise UsageError(f"unknown {option} '{value}'; choose from {', '.join(choices)}")
    return value


@app.command()
def attribute(
    model: Path = typer.Argument(..., help="The .onnx model to explain."),
    inputs: list[str] = typer.Argument(None, help="Images, .npy tensors (C×H×W or 1×C×H×W, "
                                       "model input space), directories, globs, or - for "
                                       "stdin; tables (.csv), series (.npy, .csv, .wav), text "
                                       "(.txt, .jsonl, token ids in .npy/.npz)."),
    method: str = typer.Option("gradient", "--method", "-m",
                               help=f"Comma-separated methods: {', '.join(METHODS)}."),
    target: str = typer.Option(None, "--target", "-t",
                               help="Class index, label, or topK (each of the K best "
                               "classes) to explain (default: the prediction)."),
    out: str = typer.Option(None, "--out", "-o", help="Write <stem>.<method>.npy (raw) and "
                            ".png (overlay) here: a folder, or s3://… / gs://… (fsspec)."),
    npz: Path = typer.Option(None, "--npz", help="Also collect every raw map in one .npz "
                             "(keys <stem>.<method>), written as the batch goes."),
    labels: Path = typer.Option(None, "--labels", help="Labels: .txt one per line, or JSON "
                                "(a list, or Keras' imagenet_class_index.json)."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Inputs per ONNX Runtime "
                                   "run (more helps on a GPU; results come per batch)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar on stderr."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build sessions afresh; neither "
                                  "read nor write the on-disk session cache."),
    # --- preprocessing: flags override --preprocess, which overrides --preset ---
    preset: str = shared.PRESET,
    preprocess: Path = shared.PREPROCESS,
    size: str = shared.SIZE,
    resize: int = shared.RESIZE,
    crop: bool = shared.CROP,
    mean: str = shared.MEAN,
    std: str = shared.STD,
    scale: str = shared.SCALE,
    bgr: bool = shared.BGR,
    layout: str = shared.LAYOUT,
    gray: bool = shared.GRAY,
    # --- rendering ---
    reduce: str = typer.Option("max-abs", "--reduce",
                               help=f"Channel reduction for the PNG: {', '.join(REDUCTIONS)}."),
    colormap: str = typer.Option("jet", "--colormap", help=f"PNG colours: "
                                 f"{', '.join(COLORMAPS)} (bwr: signed, blue < 0 < red)."),
    normalise: str = typer.Option("percentile", "--normalise", help=f"Colour scale: "
                                  f"{', '.join(NORMALISATIONS)}."),
    percentile: float = typer.Option(None, "--percentile", help="percentile: clip |map| at "
                                     "this percentile (99); outlier: Captum's cumulative "
                                     "share (98)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity over the gray input."),
    absolute: bool = typer.Option(False, "--abs", help="Gradient: absolute value (Saliency)."),
    # --- pathway ---
    prune: float = typer.Option(None, "--prune", help="Pathway: % of neurons to prune (85)."),
    keep: float = typer.Option(None, "--keep", help="Pathway: % of neurons to keep (100-P)."),
    selection: str = typer.Option("contribution", "--selection", help="Pathway: contribution, "
                                  "integrated, learned or random."),
    layers: str = typer.Option(",".join(RELU_FAMILY), "--layers",
                               help="Pathway: op types to mask (Clip: lower bound 0 only)."),
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
    output: str = typer.Option(None, "--output", help="The model output to explain "
                               "(default: the one reached through Softmax, or named like "
                               "logits/probabilities; see inspect)."),
    wrt: str = typer.Option(None, "--wrt", help="Attribute with respect to this tensor "
                            "(default: the input, or the first float tensor computed from an "
                            "integer input)."),
    target_index: str = typer.Option(None, "--target-index", help="Explain one element of "
                                     "the output, e.g. 3,10,12 (per example, no batch index)."),
    region: Path = typer.Option(None, "--region", help="Segmentation outputs (N×K×H×W): sum "
                                "class logits over this mask (.png/.npy; default: the pixels "
                                "predicted as the class)."),
    fallback: str = typer.Option(None, "--fallback", help="Forward-only method (occlusion, "
                                 "rise) to run when the model has ops without gradient rules."),
    # --- tables, series, text (onnxpath/io) ---
    text: str = typer.Option(None, "--text", help="Text to explain (with --tokenizer)."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="Hugging Face tokenizer.json "
                                   "for raw text (pip install 'onnxpath[text]')."),
    features: Path = typer.Option(None, "--features", help="Feature names, one per line, "
                                  "for the columns of .npy table rows."),
    sample_rate: int = typer.Option(None, "--sample-rate", help="Sample rate of the series "
                                    "(checked against .wav files and the model's metadata)."),
    token_reduce: str = typer.Option("sum", "--token-reduce", help="Per-token score from "
                                     "the T×D map: sum (signed), abs-sum or l2."),
    segments: str = typer.Option(None, "--segments", help="lime, kernel-shap, occlusion: "
                                 "features: grid[:K], slic[:N], each, rows, windows[:K]."),
    score: str = typer.Option(None, "--score", help="lime, kernel-shap: probability or "
                              "logit (probability)."),
    kernel_width: float = typer.Option(None, "--kernel-width", help="lime: kernel width "
                                       "(0.25; 0.75·√M for table features)."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="With --out: one "
                                      "<stem>.side-by-side.png per input, a panel per method."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    provider_option: list[str] = typer.Option(None, "--provider-option", help="ONNX Runtime "
                                              "provider option KEY=VALUE, repeatable, e.g. "
                                              "gpu_mem_limit=4000000000."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="With --out: skip inputs "
                                "a previous run of the same job finished (markers in "
                                "OUT/.onnxpath), re-printing their lines; --no-resume redoes "
                                "all."),
    engine: str = typer.Option("local", "--engine", help="local, or ray (Ray Data; needs "
                               "the ray extra of onnxpath)."),
    address: str = typer.Option(None, "--address", help="ray: cluster address, auto or "
                                "ray://host:10001 (default: RAY_ADDRESS, else a local Ray)."),
    actors: str = typer.Option("2", "--actors", help="ray: actors, N or MIN-MAX to autoscale."),
    cpus_per_actor: float = typer.Option(1.0, "--cpus-per-actor", help="ray: CPUs per actor "
                                         "(also its ONNX Runtime threads)."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="ray: GPU share per "
                                         "actor, e.g. 0.5 (with --device cuda)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    # --- report (onnxpath.report) ---
    report: str = typer.Option(None, "--report", help="Also write an HTML report: FILE.html "
                               "(self-contained) or DIR/ (index.html plus pictures)."),
    report_every: int = typer.Option(25, "--report-every", help="Rewrite the report every N "
                                     "inputs, so a long batch can be watched."),
    report_at_end: bool = typer.Option(False, "--report-at-end", help="Write the report only "
                                       "when the batch ends."),
) -> int:
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
    methods = [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method '{','.join(unknown) or method}'; choose from "
                         f"{', '.join(METHODS)}")
    style = Style(check_choice(reduce, REDUCTIONS, "--reduce"),
                  check_choice(colormap, COLORMAPS, "--colormap"),
                  check_choice(normalise, NORMALISATIONS, "--normalise"), percentile, alpha)
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must lie in [0, 1], got {alpha}")
    if percentile is not None and not 0.0 < percentile <= 100.0:
        raise UsageError(f"--percentile must lie in (0, 100], got {percentile}")
    if side_by_side and out is None:
        raise UsageError("--side-by-side writes a figure: give --out DIR")
    check_choice(engine, ENGINES, "--engine")
    out = location(out) if out is not None else None
    options_for_provider = parse_provider_options(provider_option)
    # On Ray the driver only plans: the workers have the device, maybe not this machine.
    explainer = make_explainer(model, device=device if engine == "local" else "cpu",
                               threads=threads, cache=not no_cache, output=output, wrt=wrt,
                               target_index=target_index, region=region,
                               provider_options=options_for_provider)
    if fallback is None and any(METHODS[m].needs_gradients for m in methods):
        explainer.check_differentiable()
    label_names = read_labels(labels) if labels else model_labels(explainer.proto)
    target_index, top_k = parse_target(target, label_names)
    prep = build_preprocess(explainer, preset, parse_size(size), parse_floats(mean, "--mean"),
                            parse_floats(std, "--std"), config=preprocess, resize=resize,
                            crop=crop, scale=parse_scale(scale), bgr=bgr, layout=layout,
                            gray=gray)
    from onnxpath.cli.pathway import pathway_options
    given = dict(steps=steps, rule=rule, baseline=baseline, samples=samples, noise=noise,
                 internal_batch_size=internal_batch_size, variant=variant, seed=seed,
                 layer=layer, relu=relu, window=window, stride=stride, fill=fill, masks=masks,
                 cells=cells, probability=probability, segments=segments, score=score,
                 kernel_width=kernel_width)
    options = {"absolute": absolute, **{k: v for k, v in given.items() if v is not None},
               **pathway_options(prune, keep, selection, layers, layer_regex, per_layer)}
    if out is not None:
        check_writable(out)
    if npz is not None:
        scheme = str(npz).split("/", 1)[0]  # Path turned s3://b/m.npz into s3:/b/m.npz
        if scheme.endswith(":") and len(scheme) > 2:  # not a Windows drive
            raise UsageError(f"--npz must be a local file, got '{npz}' (use --out for URLs)")
        check_writable(npz.parent, "--npz")
    paths = expand_inputs(inputs or [], exclude=[out] if isinstance(out, Path) else [])
    images = takes_images(explainer, paths, text is not None or tokenizer is not None)
    if not paths and (images or text is None):
        raise UsageError("no inputs found (give images, .npy files, folders, globs or -)"
                         if images else "no inputs found (give files, folders, globs, - or "
                         "--text)")
    if token_reduce not in ("sum", "abs-sum", "l2"):
        raise UsageError(f"--token-reduce takes sum, abs-sum or l2, got '{token_reduce}'")
    if images and len(explainer.input_shape) == 4 and any(
            p.suffix.lower() not in (".npy", ".npz") for p in paths):
        model_size(explainer.input_shape, prep, prep.layout)  # --size problems stop here
    job = Job(methods=methods, target=target_index, top_k=top_k, options=options,
              labels=label_names, fallback=fallback, out=out, npz=npz, resume=resume,
              batch_size=batch_size, prep=prep, side_by_side=side_by_side, style=style,
              tokenizer=load_tokenizer(tokenizer) if tokenizer is not None else None,
              text=text, feature_names=read_names(features) if features is not None else None,
              sample_rate=sample_rate, token_reduce=token_reduce)
    stdout = sys.stdout  # bound now: on Ray, sys.stdout is stderr while the run goes
    progress = False if quiet else None
    with report_page(report, report_every, report_at_end, model, methods, style) as page:
        if engine == "ray":
            from onnxpath.run.ray import run_ray
            failures = run_ray(model, paths, job, partial(emit_json, stream=stdout),
                               device=device, cluster=ray_cluster(address, actors,
                                                                  cpus_per_actor,
                                                                  gpus_per_actor),
                               threads=threads, cache=not no_cache,
                               provider_options=options_for_provider, explainer=explainer,
                               report=page, progress=progress, debug=debug)
        else:
            failures = RunLoop(explainer, job, partial(emit_json, stream=stdout), page,
                               progress, debug).run(paths)
    return 1 if failures else 0


def ray_cluster(address: str | None, actors: str, cpus_per_actor: float,
                gpus_per_actor: float):
    """The --engine ray pool. Imported here, not at the top: the plain CLI never imports it."""
    from onnxpath.run.ray import Cluster, parse_actors
    return Cluster(address, parse_actors(actors), cpus_per_actor, gpus_per_actor)


@contextmanager
def report_page(target: str | None, every: int, at_end: bool, model: Path, methods: list[str],
                style: Style):
    """The --report page (None without --report), closed (written) at the end of the run,
    also after an error or Ctrl-C: the page then shows every finished input."""
    if target is None:
        yield None
        return
    from onnxpath.report import AttributeReport

    if every < 1:
        raise UsageError(f"--report-every must be at least 1, got {every}")
    page = AttributeReport(target, every=every, at_end=at_end, colormap=style.colormap,
                           meta={"model": model.name, "methods": ", ".join(methods),
                                 "colour map": style.colormap},
                           note=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        yield page
    finally:
        page.close()
