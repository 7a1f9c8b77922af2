"""`onnxpath pathway`: select one input's critical pathway, report it, save or bake it."""

from __future__ import annotations

import io
import json
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import typer

from onnxpath.cli import app
from onnxpath.cli._common import load_example
from onnxpath.cli.declare import Flag, command
from onnxpath.cli.jobs import (
    explainer_from,
    labels_of,
    one_class,
    pathway_options,
    recipe_from,
)
from onnxpath.cli.options import (
    DEBUG,
    JSON,
    LABELS,
    MODEL,
    OUTPUT,
    PATHWAY,
    PREPROCESSING,
    REPORT_FILE,
    RUNTIME,
    TARGET_ONE,
)
from onnxpath.errors import UsageError
from onnxpath.io.outputs import write_atomic
from onnxpath.methods.pathway import critical_pathway, pathway_gradient
from onnxpath.pathways.network import Pathway, layer_statistics, output_change, probabilities
from onnxpath.pathways.surgery import LocalLinearityWarning, bake_pathway
from onnxpath.tools.export import save_model


def mask_arrays(found: Pathway, i: int = 0) -> dict[str, np.ndarray]:
    """What --masks saves: mask_000.. (bool, one example's shape per layer) and their names.
    Keys are indexed because tensor names ('/layer1/Relu_output_0') make poor zip members."""
    arrays = {f"mask_{k:03d}": m[i] for k, m in enumerate(found.masks)}
    arrays["layers"] = np.array([layer.tensor for layer in found.layers])
    arrays["nodes"] = np.array([layer.node for layer in found.layers])
    arrays["prune_percent"] = np.array(found.prune_percent)
    return arrays


ARGS = (
    MODEL,
    Flag("input_path", str, typer.Argument(..., metavar="INPUT", help="One image, or a .npy "
                                           "tensor in model input space.")),
)
# --masks is the pathway's masks, written; --seed seeds what is random here (see
# tests/cli/test_vocabulary.py).
RESULTS = (
    TARGET_ONE,
    Flag("masks", Path, typer.Option(None, "--masks", help="Save the pathway's neuron masks "
                                     "to this .npz.")),
    Flag("export", Path, typer.Option(None, "--export", help="Write the pathway baked into a "
                                      "standalone .onnx model.")),
    JSON,
    LABELS,
)
SEED = Flag("seed", int, typer.Option(0, "--seed", help="Random seed: the random and learned "
                                      "selections."))


@command(app, ARGS, PATHWAY, RESULTS, PREPROCESSING, SEED, RUNTIME, OUTPUT, DEBUG, REPORT_FILE)
def pathway(o: SimpleNamespace) -> int:
    """Select the critical pathway of one input and report it layer by layer.

    Example: onnxpath pathway resnet.onnx cat.png --prune 75 --masks m.npz --export pruned.onnx
    """
    start = time.perf_counter()
    explainer = explainer_from(o)
    label_names = labels_of(o, explainer)  # a model folder's labels and preprocessing too
    prep = recipe_from(o, explainer)
    x = load_example(explainer, Path(o.input_path), prep)
    x, context, engine = explainer.prepare(x)
    engine.bind(context)
    c, logits = one_class(o.target, label_names, "pathway"), engine.logits(x)
    if c is None:
        c = int(logits.argmax(axis=1)[0])
    elif c >= logits.shape[1]:
        raise UsageError(f"target {c} is out of range: the model has {logits.shape[1]} classes")
    with warnings.catch_warnings(record=True) as caught:  # one plain line each, on stderr
        warnings.simplefilter("always", LocalLinearityWarning)
        found = critical_pathway(engine, x, [c], seed=o.seed, with_activations=True,
                                 **pathway_options(o))
    for warning in caught:
        print(f"onnxpath: warning: {warning.message}", file=sys.stderr)
    record = pathway_record(o, found, x, c, label_names)
    write_outputs(o, found, record)
    record["time_ms"] = round((time.perf_counter() - start) * 1000, 2)
    if o.report is not None:
        from onnxpath.report import write_pathway_report
        record["outputs"]["report"] = str(write_pathway_report(
            o.report, record, {"model": o.model.name},
            note=lambda text: print(text, file=sys.stderr)))
    sys.stdout.write(json.dumps(record) + "\n" if o.as_json else format_table(record))
    sys.stdout.flush()
    return 0


def pathway_record(o: SimpleNamespace, found: Pathway, x, c: int,
                   label_names: list[str] | None) -> dict:
    """What the pathway printout (table or --json) and the report show, before the files."""
    _, masked_logits = pathway_gradient(found, x, [c])
    return {
        "input": o.input_path, "target": c,
        "label": label_names[c] if label_names and c < len(label_names) else None,
        "prob": float(probabilities(found.logits)[0, c]),
        "prob_masked": float(probabilities(masked_logits)[0, c]),
        "output_change": float(output_change(found.logits, masked_logits, [c])[0]),
        "prune_percent": found.prune_percent_of(0), "selection": o.selection,
        "neurons": found.network.neurons,
        "kept": int(sum(np.count_nonzero(m[0]) for m in found.masks)),
        "kept_percent": 100.0 * found.kept_fraction(0),
        "layers": layer_statistics(found, 0), "outputs": {},
    }


def write_outputs(o: SimpleNamespace, found: Pathway, record: dict) -> None:
    """--masks and --export, each noted in the record's `outputs`."""
    if o.masks is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **mask_arrays(found))
        record["outputs"]["masks"] = str(write_atomic(o.masks, buffer.getvalue()))
    if o.export is not None:
        baked = bake_pathway(found.network.engine.info.proto, found.layers,
                             [m[0] for m in found.masks])
        written = save_model(baked, o.export, found.network.engine.info.folder)
        record["outputs"]["onnx"] = str(written[0])


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
