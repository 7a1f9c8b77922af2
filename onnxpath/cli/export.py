"""`onnxpath export`: the gradient graph as a standalone .onnx file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from onnxpath.cli import app
from onnxpath.cli._common import parse_size
from onnxpath.explainer import Explainer
from onnxpath.tools.export import gradient_export, save_model, signature, signature_text


@app.command("export")
def export(
    model: Path = typer.Argument(..., help="The .onnx model to differentiate."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the gradient graph."),
    target_independent: bool = typer.Option(
        False, "--target-independent", help="Take a `seed` over the logits as an input instead "
        "of differentiating the predicted class."),
    size: str = typer.Option(None, "--size", help="HxW for dynamic spatial dims."),
    keep_probabilities: bool = typer.Option(False, "--keep-probabilities",
                                            help="Differentiate the Softmax output itself."),
    as_json: bool = typer.Option(False, "--json", help="Print the signature as JSON."),
    output: str = typer.Option(None, "--output", help="The model output to explain (default: "
                               "see `onnxpath inspect`)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    """Write MODEL's gradient graph as plain ONNX, runnable from any ONNX Runtime binding.

    Default signature: input (as in MODEL) -> logits, target (argmax), grad (d logit[target] /
    d input). With --target-independent: input, seed -> logits, grad (d sum(seed·logits) /
    d input).

    Example: onnxpath export resnet50.onnx -o resnet50.grad.onnx --target-independent
    """
    explainer = Explainer(model, keep_probabilities=keep_probabilities, output=output)
    graph = gradient_export(explainer, parse_size(size), target_independent)
    written = save_model(graph, out, model.parent)
    if as_json:
        typer.echo(json.dumps({"outputs": [str(p) for p in written], **signature(graph)}))
    else:
        typer.echo(f"wrote {', '.join(map(str, written))}\n{signature_text(graph)}")
    return 0
