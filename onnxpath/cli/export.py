"""`onnxpath export`: the gradient graph as a standalone .onnx file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import typer

from onnxpath.cli import app
from onnxpath.cli._common import check_size_fits, parse_size
from onnxpath.cli.declare import Flag, command
from onnxpath.cli.options import DEBUG, JSON, KEEP_PROBABILITIES, OUTPUT, SIZE
from onnxpath.explainer import Explainer
from onnxpath.tools.export import gradient_export, save_model, signature, signature_text

# --out is the one file written (a required local path; see tests/cli/test_vocabulary.py).
# export reads no image: --size fixes the model's dynamic spatial dims.
FLAGS = (
    Flag("model", Path, typer.Argument(..., help="The .onnx model to differentiate.")),
    Flag("out", Path, typer.Option(..., "--out", "-o", help="Where to write the gradient "
                                   "graph.")),
    Flag("target_independent", bool, typer.Option(
        False, "--target-independent", help="Take a `seed` over the logits as an input instead "
        "of differentiating the predicted class.")),
    SIZE,
    KEEP_PROBABILITIES,
    JSON,
)


@command(app, FLAGS, OUTPUT, DEBUG, name="export")
def export(o: SimpleNamespace) -> int:
    """Write MODEL's gradient graph as plain ONNX, runnable from any ONNX Runtime binding.

    Default signature: input (as in MODEL) -> logits, target (argmax), grad (d logit[target] /
    d input). With --target-independent: input, seed -> logits, grad (d sum(seed·logits) /
    d input). No image is read: a model with dynamic spatial dims needs --size HxW.

    Example: onnxpath export resnet50.onnx -o resnet50.grad.onnx --target-independent
    """
    explainer = Explainer(o.model, keep_probabilities=o.keep_probabilities, output=o.output)
    size = parse_size(o.size)
    check_size_fits(explainer.input_shape, size)
    graph = gradient_export(explainer, size, o.target_independent)
    written = save_model(graph, o.out, o.model.parent)
    if o.as_json:
        typer.echo(json.dumps({"outputs": [str(p) for p in written], **signature(graph)}))
    else:
        typer.echo(f"wrote {', '.join(map(str, written))}\n{signature_text(graph)}")
    return 0
