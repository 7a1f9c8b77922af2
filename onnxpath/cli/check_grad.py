"""`onnxpath check-grad`: the model's gradient graph against finite differences, in ORT."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import typer

from onnxpath.cli import app
from onnxpath.cli._common import check_size_fits, load_example, parse_size
from onnxpath.cli.declare import Flag, command
from onnxpath.cli.jobs import one_class, recipe_from
from onnxpath.cli.options import (
    DEBUG,
    DEVICE,
    JSON,
    KEEP_PROBABILITIES,
    OUTPUT,
    PREPROCESSING,
    TARGET_ONE,
)
from onnxpath.errors import UsageError
from onnxpath.explainer import Explainer
from onnxpath.io.labels import model_labels
from onnxpath.tools.gradcheck import (
    DEFAULT_DIRECTIONS,
    DEFAULT_EPS,
    DEFAULT_TOLERANCE,
    check_gradient,
    random_input,
)

# --seed seeds what is random here (tests/cli/test_vocabulary.py); --target is pathway's (one
# class: index or label); an --input image is read with the preprocessing flags, as attribute
# reads it.
FLAGS = (
    Flag("model", Path, typer.Argument(..., help="The .onnx model whose gradient graph to "
                                       "check.")),
    Flag("input", Path, typer.Option(None, "--input", "-i", help="An image or .npy tensor to "
                                     "check at, read as attribute reads it (default: a "
                                     "seeded N(0,1) tensor of the input's shape, --size "
                                     "or 224 for dynamic dims).")),
    Flag("directions", int, typer.Option(DEFAULT_DIRECTIONS, "--directions", "-k",
                                         help="Random directions to differentiate along.")),
    Flag("eps", float, typer.Option(DEFAULT_EPS, "--eps", help="Finite-difference step, "
                                    "relative to the input's RMS (the first step is 3x eps in "
                                    "float32, 1e-5x in float64; it shrinks while a kink is "
                                    "crossed).")),
    Flag("tolerance", float, typer.Option(DEFAULT_TOLERANCE, "--tolerance",
                                          help="Largest relative error that passes (default: "
                                          "1e-3 with float64 differences, 0.1 in float32).")),
    TARGET_ONE,
    Flag("seed", int, typer.Option(0, "--seed", help="Random seed: the random input and the "
                                   "directions.")),
    KEEP_PROBABILITIES,
)


@command(app, FLAGS, JSON, PREPROCESSING, DEVICE, OUTPUT, DEBUG, name="check-grad")
def check_grad(o: SimpleNamespace) -> int:
    """Check MODEL's gradient graph against finite differences along random directions.

    Runs in ONNX Runtime, in a float64 copy of the model where ORT has the kernels (else
    float32); steps that cross a ReLU or max-pool kink shrink, and directions that still cross
    one are left out of the verdict. Exit 0 on pass, 1 on fail (or when every direction crossed
    a kink), 2 when the model cannot be differentiated.

    Example: onnxpath check-grad resnet50.onnx --input cat.npy --directions 16
    """
    # A check builds the gradient graph it checks: never a cached session.
    explainer = Explainer(o.model, device=o.device, keep_probabilities=o.keep_probabilities,
                          cache=False, output=o.output)
    explainer.check_differentiable()
    if o.tolerance is not None and not o.tolerance > 0:
        raise UsageError(f"--tolerance must be positive, got {o.tolerance:g}")
    prep = recipe_from(o, explainer)
    if o.input is not None:
        x = load_example(explainer, o.input, prep)
    else:
        check_no_image_flags(o)
        check_size_fits(explainer.input_shape, parse_size(o.size))
        x = random_input(explainer, parse_size(o.size), o.seed)
    target = one_class(o.target, model_labels(explainer.proto), "check-grad")
    result = check_gradient(explainer, x, target=target, directions=o.directions, eps=o.eps,
                            tolerance=o.tolerance, seed=o.seed)
    source = str(o.input) if o.input is not None else f"random N(0,1), seed {o.seed}"
    if o.as_json:
        typer.echo(json.dumps({"model": str(o.model), "input": source, **result.to_json()}))
    else:
        typer.echo(result.report(o.model, source))
    return 0 if result.passed else 1


IMAGE_FLAGS = (("preset", "--preset"), ("preprocess", "--preprocess"), ("resize", "--resize"),
               ("crop", "--crop/--no-crop"), ("mean", "--mean"), ("std", "--std"),
               ("scale", "--scale"), ("bgr", "--bgr/--rgb"), ("layout", "--layout"),
               ("gray", "--gray"))


def check_no_image_flags(o: SimpleNamespace) -> None:
    """The random input is drawn in model space: the flags that read an image need --input."""
    given = [flag for name, flag in IMAGE_FLAGS if getattr(o, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {'reads' if len(given) == 1 else 'read'} an "
                         "image: give --input IMAGE (the random input is already in model "
                         "space; --size sets its dynamic dims)")
