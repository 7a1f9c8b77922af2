"""`onnxpath pathway`: select one input's critical pathway, report it, save or bake it."""

from __future__ import annotations

import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import typer

from onnxpath.autodiff.relu_family import RELU_FAMILY
from onnxpath.cli import app
from onnxpath.cli import options as shared
from onnxpath.cli._common import build_preprocess, load_example, parse_floats, parse_size
from onnxpath.explainer import Explainer
from onnxpath.io.labels import model_labels, read_labels, resolve_target
from onnxpath.io.outputs import write_atomic
from onnxpath.methods.pathway import SELECTIONS, critical_pathway, pathway_gradient
from onnxpath.pathways.network import Pathway, layer_statistics, output_change, probabilities
from onnxpath.pathways.surgery import LocalLinearityWarning, bake_pathway
from onnxpath.tools.export import save_model


def pathway_options(prune: float | None, keep: float | None, selection: str, layers: str,
                    layer_regex: str | None, per_layer: bool) -> dict:
    """The pathway method's keyword options from the CLI flags (shared with `attribute`)."""
    return {"prune_percent": prune, "keep": keep, "selection": selection,
            "layers": tuple(op.strip() for op in layers.split(",") if op.strip()),
            "layer_regex": layer_regex, "per_layer": per_layer}


def mask_arrays(found: Pathway, i: int = 0) -> dict[str, np.ndarray]:
    """What --masks saves: mask_000.. (bool, one example's shape per layer) and their names.
    Keys are indexed because tensor names ('/layer1/Relu_output_0') make poor zip members."""
    arrays = {f"mask_{k:03d}": m[i] for k, m in enumerate(found.masks)}
    arrays["layers"] = np.array([layer.tensor for layer in found.layers])
    arrays["nodes"] = np.array([layer.node for layer in found.layers])
    arrays["prune_percent"] = np.array(found.prune_percent)
    return arrays


@app.command()
def pathway(
    model: Path = typer.Argument(..., help="The .onnx model."),
    input_path: str = typer.Argument(..., metavar="INPUT",
                                     help="One image, or a .npy tensor in model input space."),
    prune: float = typer.Option(None, "--prune", "-p",
                                help="Percentage of neurons to prune (default 85)."),
    keep: float = typer.Option(None, "--keep", help="Percentage to keep: --prune 100-K."),
    selection: str = typer.Option("contribution", "--selection",
                                  help=f"How to select: {', '.join(SELECTIONS)}."),
    layers: str = typer.Option(",".join(RELU_FAMILY), "--layers",
                               help="Activation op types to mask (Clip: lower bound 0 only)."),
    layer_regex: str = typer.Option(None, "--layer-regex",
                                    help="Only layers whose node or tensor name matches."),
    per_layer: bool = typer.Option(False, "--per-layer", help="One threshold per layer."),
    target: str = typer.Option(None, "--target", "-t",
                               help="Class index or label (default: the prediction)."),
    masks: Path = typer.Option(None, "--masks", help="Save the masks to this .npz."),
    export: Path = typer.Option(None, "--export",
                                help="Write the pathway baked into a standalone .onnx model."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    labels: Path = typer.Option(None, "--labels", help="Labels: .txt one per line, or JSON."),
    preset: str = shared.PRESET,
    size: str = shared.SIZE,
    mean: str = shared.MEAN,
    std: str = shared.STD,
    seed: int = typer.Option(0, "--seed", help="Random generator seed (random, learned)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(None, "--threads", help="ONNX Runtime intra-op threads."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build sessions afresh; neither "
                                  "read nor write the on-disk session cache."),
    output: str = typer.Option(None, "--output", help="The model output to explain (default: "
                               "see `onnxpath inspect`)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    report: str = typer.Option(None, "--report", help="Also write an HTML report (layer table, "
                               "kept-fraction chart): FILE.html or DIR/."),
) -> int:
    """Select the critical pathway of one input and report it layer by layer.

    Example: onnxpath pathway resnet.onnx cat.png --prune 75 --masks m.npz --export pruned.onnx
    """
    start = time.perf_counter()
    explainer = Explainer(model, device=device, threads=threads, cache=not no_cache,
                          output=output)
    label_names = read_labels(labels) if labels else model_labels(explainer.proto)
    prep = build_preprocess(explainer, preset, parse_size(size), parse_floats(mean, "--mean"),
                            parse_floats(std, "--std"))
    x = load_example(explainer, Path(input_path), prep)
    x, context, engine = explainer.prepare(x)
    engine.bind(context)
    c = resolve_target(target, label_names)
    if c is None:
        c = int(engine.logits(x).argmax(axis=1)[0])
    options = pathway_options(prune, keep, selection, layers, layer_regex, per_layer)
    with warnings.catch_warnings(record=True) as caught:  # one plain line each, on stderr
        warnings.simplefilter("always", LocalLinearityWarning)
        found = critical_pathway(engine, x, [c], seed=seed, with_activations=True, **options)
    for warning in caught:
        print(f"onnxpath: warning: {warning.message}", file=sys.stderr)
    _, masked_logits = pathway_gradient(found, x, [c])
    record = {
        "input": input_path, "target": c,
        "label": label_names[c] if label_names and c < len(label_names) else None,
        "prob": float(probabilities(found.logits)[0, c]),
        "prob_masked": float(probabilities(masked_logits)[0, c]),
        "output_change": float(output_change(found.logits, masked_logits, [c])[0]),
        "prune_percent": found.prune_percent, "selection": selection,
        "neurons": found.network.neurons,
        "kept": int(sum(np.count_nonzero(m[0]) for m in found.masks)),
        "kept_percent": 100.0 * found.kept_fraction(0),
        "layers": layer_statistics(found, 0), "outputs": {},
    }
    if masks is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **mask_arrays(found))
        record["outputs"]["masks"] = str(write_atomic(masks, buffer.getvalue()))
    if export is not None:
        baked = bake_pathway(found.network.engine.info.proto, found.layers,
                             [m[0] for m in found.masks])
        written = save_model(baked, export, found.network.engine.info.folder)
        record["outputs"]["onnx"] = str(written[0])
    record["time_ms"] = round((time.perf_counter() - start) * 1000, 2)
    if report is not None:
        from onnxpath.report import write_pathway_report
        record["outputs"]["report"] = str(write_pathway_report(
            report, record, {"model": model.name},
            note=lambda text: print(text, file=sys.stderr)))
    if as_json:
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        sys.stdout.write(format_table(record))
    sys.stdout.flush()
    return 0


def format_table(record: dict) -> str:
    rows = [(r["layer"], r["op_type"], f"{r['neurons']:,}", f"{r['kept']:,}",
             f"{r['kept_percent']:.1f}",
             "-" if r["dead_percent"] is None else f"{r['dead_percent']:.1f}")
            for r in record["layers"]]
    header = ("layer", "op", "neurons", "kept", "kept %", "dead %")
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    label = f" ({record['label']})" if record["label"] else ""
    out = [line.format(*header), *(line.format(*row) for row in rows),
           f"total: {record['kept']:,} of {record['neurons']:,} neurons kept "
           f"({record['kept_percent']:.1f}%), prune {record['prune_percent']:g}%, "
           f"selection {record['selection']}",
           f"class {record['target']}{label}: p = {record['prob']:.4f}, masked "
           f"{record['prob_masked']:.4f}, output change |dp|/p = {record['output_change']:.4f}"]
    for kind, path in record["outputs"].items():
        out.append(f"wrote {kind}: {path}")
    return "\n".join(out) + "\n"
