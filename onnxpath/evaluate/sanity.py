"""Sanity check by cascading parameter randomisation (Adebayo et al. 2018), on the ONNX graph.

The parametric nodes (Conv, ConvTranspose, Gemm, MatMul, normalisations) are randomised from
the output backwards, one more at each step and cumulatively: every weight and bias
initializer of the node, and a bias added right after it, is redrawn from N(0, std²).
BatchNormalization's scale and bias are redrawn too; its running mean and variance are
statistics, not parameters (the reference, torch's `init.normal_` on `weight` and `bias`,
leaves them), and a redrawn variance could be negative. After each step the map is recomputed
for the randomised model's own argmax and compared with the original map.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxpath.errors import UsageError
from onnxpath.evaluate.similarity import hog, hog_cell_size, pearson, spearman, ssim
from onnxpath.explainer import Explainer

PARAMETRIC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
                  "InstanceNormalization", "LayerNormalization"}
# Inputs of normalisation ops that are parameters; the other inputs are running statistics.
PARAMETER_INPUTS = {"BatchNormalization": (1, 2)}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}
MEASURES = ("spearman", "spearman_abs", "ssim", "hog")


@dataclass
class Layer:
    """One randomisation step: a parametric node and the initializers redrawn with it."""

    node: str
    op_type: str
    initializers: list[str]


def parametric_layers(model: onnx.ModelProto) -> list[Layer]:
    """Parametric nodes in graph (topological) order, each with its parameter initializers
    and the initializer of an Add that puts a bias straight onto its output."""
    floats = {i.name for i in model.graph.initializer if i.data_type in FLOAT_TYPES}
    layers: list[Layer] = []
    by_output: dict[str, Layer] = {}
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        if node.op_type in PARAMETRIC_OPS:
            slots = PARAMETER_INPUTS.get(node.op_type, range(len(node.input)))
            params = [node.input[i] for i in slots if i < len(node.input)
                      and node.input[i] in floats]
            if params:
                layer = Layer(name, node.op_type, params)
                layers.append(layer)
                by_output.update({o: layer for o in node.output})
        elif node.op_type == "Add" and len(node.input) == 2:
            owner = next((by_output[i] for i in node.input if i in by_output), None)
            bias = [i for i in node.input if i in floats]
            if owner is not None and bias:
                owner.initializers.extend(b for b in bias if b not in owner.initializers)
    return layers


def randomised(model: onnx.ModelProto, names: set[str], rng: np.random.Generator,
               std: float = 0.1) -> onnx.ModelProto:
    """A copy of `model` whose initializers `names` are redrawn from N(0, std²)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.name in names:
            old = numpy_helper.to_array(init)
            new = rng.normal(0.0, std, size=old.shape).astype(old.dtype)
            init.CopyFrom(numpy_helper.from_array(new, init.name))
    return copy


def cascade_steps(layer_count: int, steps: int | None) -> list[int]:
    """Which cumulative step counts (1 = the last layer randomised) to evaluate: all of them,
    or `steps` spread evenly, always including the first and the last."""
    if steps is None or steps >= layer_count:
        return list(range(1, layer_count + 1))
    if steps < 1:
        raise ValueError(f"sanity steps must be at least 1, got {steps}")
    if steps == 1:
        return [layer_count]
    return sorted({int(round(v)) for v in np.linspace(1, layer_count, steps)})


def cascade(model: onnx.ModelProto, steps: int | None = None, seed: int = 0,
            std: float = 0.1) -> Iterator[tuple[int, Layer, onnx.ModelProto]]:
    """(step count, deepest layer randomised so far, model) for each evaluated step. Draws
    are made layer by layer in cascade order, so a step's weights do not depend on which
    steps are evaluated."""
    layers = parametric_layers(model)[::-1]
    if not layers:
        raise ValueError("the model has no parametric nodes (Conv, Gemm, MatMul, "
                         "BatchNormalization) with initializer weights to randomise")
    # A stream of its own, so that the draws never repeat another seeded stream (a model
    # built from default_rng(seed) would otherwise be randomised into a scaled copy of itself).
    rng = np.random.default_rng([seed, 0x5A417])
    current = model
    wanted = set(cascade_steps(len(layers), steps))
    for count, layer in enumerate(layers, start=1):
        current = randomised(current, set(layer.initializers), rng, std)
        if count in wanted:
            yield count, layer, current


def randomised_explainers(explainer: Explainer, steps: int | None, seed: int, std: float,
                          what: str) -> Iterator[tuple[int, str, Explainer]]:
    """`cascade` as Explainers on `explainer`'s device and threads: (step count, deepest layer
    randomised so far, explainer) per step; `what` names the metric when the model has nothing
    to randomise. Each step's sessions (GBs at batch 32 on a 224² model) are freed before the
    next step builds its own, not whenever the collector runs."""
    try:
        layers = list(cascade(explainer.proto, steps, seed, std))
    except ValueError as err:
        raise UsageError(f"{what}: {err}") from err
    for step, layer, model in layers:
        randomised_model = Explainer(model, device=explainer.device, threads=explainer.threads,
                                     keep_probabilities=explainer.keep_probabilities)
        yield step, layer.node, randomised_model
        del randomised_model
        gc.collect()


def normalised(heat: np.ndarray) -> np.ndarray:
    """The reference divides each map by its max |value| before comparing."""
    heat = np.asarray(heat, dtype=np.float64)
    top = np.abs(heat).max()
    return heat / top if top > 0 else heat


def compare(original: np.ndarray, randomised_heat: np.ndarray) -> dict[str, float]:
    """The four similarity measures between two H×W maps (higher = more alike)."""
    a, b = normalised(original), normalised(randomised_heat)
    cell = hog_cell_size(a.shape)
    return {
        "spearman": spearman(a, b),
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        "ssim": ssim(a, b, window=5, data_range=2.0),
        "hog": pearson(hog(a, cell=cell), hog(b, cell=cell)),
    }
