"""`onnxpath inspect`: what onnxpath will differentiate in a model, before any run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import typer

from onnxpath.cli import app
from onnxpath.cli._common import check_size_fits, parse_size
from onnxpath.cli.declare import Flag, command
from onnxpath.cli.options import DEBUG, JSON, KEEP_PROBABILITIES, LAYERS, OUTPUT, SIZE, WRT
from onnxpath.tools.inspect import inspect_model

# inspect reads no image: --size fixes the model's dynamic dims (default: the preset's, else
# 224), and the neuron counts depend on it.
FLAGS = (
    Flag("model", Path, typer.Argument(..., help="The .onnx model to inspect.")),
    JSON,
    SIZE,
    LAYERS,
    KEEP_PROBABILITIES,
    OUTPUT,
    WRT,
)


@command(app, FLAGS, DEBUG, name="inspect")
def inspect(o: SimpleNamespace) -> int:
    """Show what onnxpath will differentiate in MODEL, before any run.

    Inputs and outputs, the logits tensor (and whether the model ends in Softmax), the guessed
    preprocessing, the activation layers with their neuron counts, and every op on the
    differentiated path that has no gradient rule. Exit 0 even then (it is a report); 2 for
    unreadable models. No image is read: --size fixes dynamic dims (default: the preset's,
    else 224), and the neuron counts depend on it.

    Example: onnxpath inspect resnet50.onnx --json | jq .unsupported
    """
    names = tuple(op.strip() for op in o.layers.split(",") if op.strip())
    size = parse_size(o.size)
    report = inspect_model(o.model, size, names, o.keep_probabilities, o.output, o.wrt)
    if report["inputs"]:
        check_size_fits(report["inputs"][0]["shape"] or (), size)
    typer.echo(json.dumps(report) if o.as_json else table(report))
    return 0


def shape_text(shape) -> str:
    if shape is None:
        return "?"
    return "×".join(str(d) if d not in (None, "") else "?" for d in shape)


def table(r: dict) -> str:
    lines = [f"model      {r['model']}",
             f"producer   {r['producer'] or '?'}  (IR {r['ir_version']}, opset "
             + ", ".join(f"{d} {v}" for d, v in r["opsets"].items()) + ")",
             f"graph      {r['nodes']} nodes, {r['parameters']:,} parameters"
             + (f", external data: {', '.join(r['external_data'])}" if r["external_data"]
                else "")]
    for kind in ("inputs", "outputs"):
        for v in r[kind]:
            lines.append(f"{kind[:-1]:<10} {v['name']}  {shape_text(v['shape'])}  {v['dtype']}")
    if r.get("output"):
        lines.append(f"explains   {r['output']['name']} ({r['output']['kind']}): "
                     f"{r['output']['reason']}")
    if r.get("wrt"):
        context = r["wrt"]["context"]
        lines.append(f"wrt        {r['wrt']['tensor']}: {r['wrt']['reason']}"
                     + (f"; other inputs: {', '.join(context)}" if context else ""))
    logits = r["logits"]
    if logits:
        ending = (f"; the model ends in Softmax ('{logits['softmax_node']}')"
                  if logits["ends_in_softmax"] else "")
        if logits["differentiates_probabilities"]:
            ending += ", kept: probabilities are differentiated"
        lines.append(f"logits     {logits['tensor']}  {shape_text(logits['shape'])}{ending}")
    prep = r["preprocess"]
    if prep:
        size = shape_text(prep["size"]) if prep["size"] else "model's"
        lines.append(f"preprocess {prep['preset']}: size {size}, mean {fmt(prep['mean'])}, "
                     f"std {fmt(prep['std'])}, scale {prep['scale']:.4g}"
                     + (", BGR" if prep["bgr"] else ""))
    acts = r["activations"]
    if acts:
        lines.append(f"\nactivation layers at {shape_text(r['analysed_shape'])} "
                     f"(* = counted with --layers {','.join(r['layers'])}):")
        width = max(len(a["name"]) for a in acts)
        for a in acts:
            mark = "*" if a["selected"] else " "
            count = f"{a['neurons']:,}" if a["neurons"] is not None else "?"
            lines.append(f" {mark} {a['name']:<{width}}  {a['op_type']:<12} "
                         f"{shape_text(a['shape']):<14} {count:>12}")
        lines.append(f"neurons    {num(r['neurons'])} in {','.join(r['layers'])} layers, "
                     f"{num(r['neurons_all'])} in all {len(acts)} activation layers")
    if r["unsupported"]:
        lines.append(f"\nno gradient rule ({len(r['unsupported'])}): only forward-only methods "
                     "(occlusion, rise) will work")
        lines += [f"  {u['op_type']}  node '{u['node']}'" for u in r["unsupported"]]
    elif logits:
        lines.append("gradients  every op on the differentiated path has a rule")
    lines += [f"problem    {p}" for p in r["problems"]]
    return "\n".join(lines)


def fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def num(n) -> str:
    return f"{n:,}" if n is not None else "?"
