"""Correctness figures of issue #4 on the test networks (tiny VGG- and ResNet-style, 32 px):

    python benchmarks/pathway_figures.py [--inputs 10]

Prints, per network and prune percentage, the worst and mean mask agreement with the torch
float64 oracle (every ReLU call masked), the worst Pearson correlation of the pathway gradient
maps, the largest |logit| difference of the surgered model with masks = 1 against the original,
and of the baked (exported) pathway against the masked network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.methods.pathway import critical_pathway, pathway_gradient  # noqa: E402
from onnxpath.pathways.surgery import bake_pathway  # noqa: E402
from tests.pathways.reference import (  # noqa: E402
    TinyResNet,
    TinyVGG,
    export,
    randomise,
    torch_contributions,
    torch_pathway_gradient,
    torch_select,
)


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def compare(model, proto, x: np.ndarray, prune: float) -> tuple[float, float]:
    """(mask agreement, Pearson of the maps) against the torch float64 oracle."""
    explainer = Explainer(proto)
    engine = explainer.engine(x.shape)
    c = int(engine.logits(x).argmax())
    found = critical_pathway(engine, x, [c], prune_percent=prune)
    maps, _ = pathway_gradient(found, x, [c])
    ref_masks = torch_select(torch_contributions(model, x.astype(np.float64), c), prune)
    same = sum(int((m[0] == r).sum()) for m, r in zip(found.masks, ref_masks, strict=True))
    expected = torch_pathway_gradient(model, x.astype(np.float64), c, ref_masks)
    return (same / sum(r.size for r in ref_masks),
            float(np.corrcoef(maps[0].ravel(), expected.ravel())[0, 1]))


def resnet50_figures() -> None:
    import io
    import warnings

    import onnx
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _models import randomise_batchnorm, resnet50

    torch.manual_seed(0)
    model = randomise_batchnorm(resnet50()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), buffer, dynamo=False,
                          input_names=["x"], output_names=["logits"], opset_version=17)
    proto = onnx.load_from_string(buffer.getvalue())
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for prune in (70, 85):
        agree, pearson = compare(model, proto, x, prune)
        print(f"ResNet-50 224px P={prune}: mask agreement {100 * agree:.4f}% over 9,608,704 "
              f"neurons; Pearson {pearson:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--resnet50", action="store_true",
                        help="also compare on ResNet-50 at 224x224 (one input, minutes)")
    args = parser.parse_args()
    if args.resnet50:
        resnet50_figures()
    for name, kind in (("VGG-style", TinyVGG), ("ResNet-style", TinyResNet)) * (args.inputs > 0):
        model = randomise(kind, 0)
        proto = export(model)
        explainer = Explainer(proto)
        original = session(proto)
        for prune in (70, 85, 90):
            agree, pearson, ones_diff, baked_diff = [], [], 0.0, 0.0
            for i in range(args.inputs):
                x = np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)
                engine = explainer.engine(x.shape)
                c = int(engine.logits(x).argmax())
                found = critical_pathway(engine, x, [c], prune_percent=prune)
                maps, masked_logits = pathway_gradient(found, x, [c])
                ref = torch_contributions(model, x.astype(np.float64), c)
                ref_masks = torch_select(ref, prune)
                same = sum(int((m[0] == r).sum()) for m, r in zip(found.masks, ref_masks,
                                                                   strict=True))
                agree.append(same / sum(r.size for r in ref_masks))
                expected = torch_pathway_gradient(model, x.astype(np.float64), c, ref_masks)
                pearson.append(np.corrcoef(maps[0].ravel(), expected.ravel())[0, 1])
                net = found.network
                ones = net.logits(x, net.ones(1))
                ones_diff = max(ones_diff, float(np.abs(ones - original.run(None, {"x": x})[0])
                                                 .max()))
                baked = bake_pathway(net.engine.info.proto, net.layers,
                                     [m[0] for m in found.masks])
                baked_diff = max(baked_diff, float(np.abs(session(baked).run(None, {"x": x})[0]
                                                          - masked_logits).max()))
            print(f"{name:13s} P={prune}: mask agreement min {100 * min(agree):.3f}% mean "
                  f"{100 * np.mean(agree):.3f}%; 1 - Pearson max {1 - min(pearson):.1e}; "
                  f"|logits(masks=1) - original| max {ones_diff:.2e}; "
                  f"|baked - masked| max {baked_diff:.2e}  ({args.inputs} inputs)")


if __name__ == "__main__":
    main()
