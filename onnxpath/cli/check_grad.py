"""`onnxpath check-grad`: the model's gradient graph against finite differences, in ORT."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from onnxpath.cli import app
from onnxpath.cli._common import load_example, parse_size
from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.preprocess import preset_for
from onnxpath.tools.gradcheck import (
    DEFAULT_DIRECTIONS,
    DEFAULT_EPS,
    DEFAULT_TOLERANCE,
    GradCheck,
    check_gradient,
    random_input,
)


@app.command("check-grad")
def check_grad(
    model: Path = typer.Argument(..., help="The .onnx model whose gradient graph to check."),
    input: Path = typer.Option(None, "--input", "-i", help="An image or .npy tensor to check "
                               "at (default: a seeded N(0,1) tensor of the input's shape)."),
    directions: int = typer.Option(DEFAULT_DIRECTIONS, "--directions", "-k",
                                   help="Random directions to differentiate along."),
    eps: float = typer.Option(DEFAULT_EPS, "--eps", help="Finite-difference step, relative to "
                              "the input's RMS (tried at 3x, 1x and 1/3x)."),
    tolerance: float = typer.Option(DEFAULT_TOLERANCE, "--tolerance",
                                    help="Largest relative error that passes."),
    target: int = typer.Option(None, "--target", "-t",
                               help="Class index to differentiate (default: the prediction)."),
    size: str = typer.Option(None, "--size", help="HxW for dynamic spatial dims (default 224)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random input and directions."),
    keep_probabilities: bool = typer.Option(False, "--keep-probabilities", help="Check the "
                                            "Softmax output instead of the logits before it."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    output: str = typer.Option(None, "--output", help="The model output to explain (default: "
                               "see `onnxpath inspect`)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> int:
    """Check MODEL's gradient graph against finite differences along random directions.

    Runs in ONNX Runtime, float32. Exit 0 on pass, 1 on fail, 2 when the model cannot be
    differentiated.

    Example: onnxpath check-grad resnet50.onnx --input cat.npy --directions 16
    """
    # A check builds the gradient graph it checks: never a cached session.
    explainer = Explainer(model, device=device, keep_probabilities=keep_probabilities,
                          cache=False, output=output)
    explainer.check_differentiable()
    if input is not None:
        x = load_example(explainer, input, preset_for(explainer.input_shape, explainer.proto))
    else:
        x = random_input(explainer, parse_size(size), seed)
    if target is not None and target < 0:
        raise UsageError(f"--target must be a class index >= 0, got {target}")
    result = check_gradient(explainer, x, target=target, directions=directions, eps=eps,
                            tolerance=tolerance, seed=seed)
    source = str(input) if input is not None else f"random N(0,1), seed {seed}"
    if as_json:
        typer.echo(json.dumps({"model": str(model), "input": source, **result.to_json()}))
    else:
        typer.echo(report(model, source, result))
    return 0 if result.passed else 1


def report(model: Path, source: str, result: GradCheck) -> str:
    shape = "×".join(map(str, result.shape))
    lines = [f"{model}: target {result.target} (logit {result.logit:.4g}), input {source}, "
             f"{shape}, |grad| {result.gradient_norm:.3g}",
             f"{'direction':>9}  {'<grad, v>':>13}  {'finite diff.':>13}  {'step':>8}  "
             f"{'rel. error':>10}"]
    for k, d in enumerate(result.directions, 1):
        lines.append(f"{k:>9}  {d.analytic:>13.6e}  {d.numeric:>13.6e}  {d.step:>8.1e}  "
                     f"{d.relative_error:>10.2e}")
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(f"worst relative error {result.worst_relative_error:.2e} (median "
                 f"{result.median_relative_error:.2e}, tolerance {result.tolerance:g}): "
                 f"{verdict}")
    return "\n".join(lines)



