"""Why does pathway's LeRF not reproduce? Score the candidate pixel rankings of the authors'
evaluation code on the real model.

    python benchmarks/pathway_lerf_investigation.py [--model M] [--views 0,3,9,14]

The pathway paper's LeRF numbers come from RoarTorch's `pixel_perturbation_analysis.py`
(CAMP-eXplain-AI/RoarTorch, src/lerf/). Read there: each method returns a raw 3×H×W map; the
pixel key is `np.max(map, axis=0)` (the signed channel maximum, not the max-abs); pixels are
sorted ascending on that key and the lowest `percentile`% of H×W are set to 0 in normalised
space on all channels; the score is |p_c - p'_c| / p_c on the original argmax's softmax.

This script computes raw gradient and pathway maps (several P from one scoring pass) on a
fixed subset of the benchmark inputs and scores LeRF@1..10% under each candidate key:

  signed-maxabs   onnxpath's default (`--rank signed`): the channel value of largest magnitude
  abs             its magnitude (`--rank abs`)
  channel-max     RoarTorch's np.max over channels (`--rank max`)
  sum / abs-sum   the channel sum, and its magnitude

and one protocol variant (`--masked-forward`): the perturbed copies go through the *pruned*
network (the pathway's masks, chosen on the unperturbed input, left in place, as a Pruner whose
hooks were not removed would do), while p_c stays the original network's. Pixels outside the
pathway then cannot move the output at all, and LeRF tends to the pruning's own output change.

Writes benchmarks/results/real/investigation.json (and a Markdown table on stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_imagenet import load_inputs, summary  # noqa: E402

from onnxpath.evaluate import perturbation  # noqa: E402
from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.io.render import reduce_channels  # noqa: E402
from onnxpath.methods.pathway import pathway_gradient  # noqa: E402
from onnxpath.pathways.network import Pathway, contributions, masked_network  # noqa: E402
from onnxpath.pathways.selection import select  # noqa: E402

KEYS = {
    "signed-maxabs": lambda raw: reduce_channels(raw),
    "abs": lambda raw: np.abs(reduce_channels(raw)),
    "channel-max": lambda raw: raw.max(axis=0),
    "sum": lambda raw: raw.sum(axis=0),
    "abs-sum": lambda raw: np.abs(raw.sum(axis=0)),
}


def raw_maps(explainer: Explainer, x: np.ndarray, targets: np.ndarray, percents, layers,
             batch: int = 8) -> dict:
    net = masked_network(explainer.engine((batch, *x.shape[1:])), tuple(layers))
    out = {f"pathway-P{p:g}": np.zeros(x.shape, np.float32) for p in percents}
    out["gradient"] = np.zeros(x.shape, np.float32)
    zeros = {p: [] for p in percents}
    for start in range(0, len(x), batch):
        part = np.arange(start, min(start + batch, len(x)))
        pad = np.concatenate([part, np.repeat(part[-1:], batch - len(part))])
        xs, ts = x[pad], targets[pad]
        logits, signed, _ = contributions(net, xs, ts)
        scores = [np.abs(s, out=s) for s in signed]
        ones = net.ones(batch)
        _, grads = net.run(xs, net.engine.seed(ts), ones, [net.input_name])
        out["gradient"][part] = grads[net.input_name][:len(part)]
        for p in percents:
            masks, _ = select(scores, p, False)
            g, _ = pathway_gradient(Pathway(net, masks, p, "contribution", logits), xs, ts)
            out[f"pathway-P{p:g}"][part] = g[:len(part)]
            zeros[p].extend(float((np.abs(g[i]).max(axis=0) == 0).mean())
                            for i in range(len(part)))
    return out, {f"P{p:g}": float(np.mean(v)) for p, v in zeros.items()}


def masked_lerf(explainer: Explainer, x: np.ndarray, targets: np.ndarray, percent: float,
                layers, batch: int = 8) -> dict:
    """LeRF@1..10% of the pathway map with the perturbed inputs run through the pruned network;
    p_c is the original network's. Returns per-key (N, F) changes and the output change."""
    fractions = tuple(i / 100 for i in range(1, 11))
    net = masked_network(explainer.engine((batch, *x.shape[1:])), tuple(layers))
    out = {key: np.zeros((len(x), len(fractions))) for key in ("signed-maxabs", "abs")}
    change = np.zeros(len(x))
    for start in range(0, len(x), batch):
        part = np.arange(start, min(start + batch, len(x)))
        pad = np.concatenate([part, np.repeat(part[-1:], batch - len(part))])
        xs, ts = x[pad], targets[pad]
        logits, signed, _ = contributions(net, xs, ts)
        masks, _ = select([np.abs(v, out=v) for v in signed], percent, False)
        g, masked_logits = pathway_gradient(Pathway(net, masks, percent, "contribution",
                                                    logits), xs, ts)
        p = perturbation.softmax(logits)[np.arange(batch), ts]
        q = perturbation.softmax(masked_logits)[np.arange(batch), ts]
        for j, i in enumerate(part):
            change[i] = abs(q[j] - p[j]) / p[j]
            mine = [m[j:j + 1] for m in masks]

            def forward(b, mine=mine):
                return net.logits(b, [np.repeat(m, len(b), axis=0) for m in mine])

            for key in out:
                heat = KEYS[key](g[j])[None]
                stacks = perturbation.forward_stacks(forward, [_lerf_stack(
                    xs[j], heat[0], fractions, int(i))], 16)[0]
                p_pert = perturbation.softmax(stacks)[:, ts[j]]
                out[key][i] = np.abs(p[j] - p_pert) / p[j]
    return {"rows": out, "output_change": change}


def _lerf_stack(x: np.ndarray, heat: np.ndarray, fractions, seed: int) -> np.ndarray:
    """The LeRF-perturbed copies of one input (least relevant first, fill 0), as
    `perturbation.pixel_perturbation` builds them."""
    h, w = heat.shape
    counts = perturbation.counts_for(fractions, h * w)
    ranked = perturbation.pixel_order(heat, "signed", seed)[::-1]
    position = perturbation.removal_positions(ranked).reshape(h, w)
    removed = position[None] < counts[:, None, None]
    return np.where(removed[:, None], np.float32(0.0), x[None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/efficientnet_lite0.onnx")
    parser.add_argument("--photos", type=Path, default=ROOT / "models/photos")
    parser.add_argument("--views", default="0,3,9,14")
    parser.add_argument("--prune", default="70,85,95")
    parser.add_argument("--layers", default="Clip")
    parser.add_argument("--masked-forward", type=float, default=None, metavar="P",
                        help="also score pathway at P with the pruned network's forward")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/real/investigation.json")
    args = parser.parse_args()
    start = time.perf_counter()
    explainer = Explainer(args.model, threads=2)
    x, names, photo = load_inputs(explainer, args.photos)
    views = {int(v) for v in args.views.split(",")}
    keep = np.asarray([int(n.split("#")[1]) in views for n in names])
    x, photo = x[keep], photo[keep]
    targets = explainer.predict(x).argmax(axis=1)
    percents = [float(p) for p in args.prune.split(",")]
    maps, zero_fraction = raw_maps(explainer, x, targets, percents, args.layers.split(","))
    rows = {}
    fractions = tuple(i / 100 for i in range(1, 11))
    for method, raw in maps.items():
        for key, fn in KEYS.items():
            heat = np.stack([fn(r) for r in raw])
            change = perturbation.pixel_perturbation(explainer.predict, x, heat, targets,
                                                     fractions, "lerf", 0.0, "signed", 32, 0)
            rows[f"{method}/{key}"] = {"lerf10": summary(change[:, -1], photo),
                                       "curve": change.mean(axis=0).tolist()}
            score = rows[f"{method}/{key}"]["lerf10"]["mean"]
            print(f"{method:16s} {key:14s} LeRF@10% {score:.3f}",
                  flush=True)
    masked = None
    if args.masked_forward is not None:
        found = masked_lerf(explainer, x, targets, args.masked_forward, args.layers.split(","))
        masked = {"P": args.masked_forward,
                  "output_change": summary(found["output_change"], photo),
                  "rows": {k: {"lerf10": summary(v[:, -1], photo),
                               "curve": v.mean(axis=0).tolist()}
                           for k, v in found["rows"].items()}}
        for k, v in masked["rows"].items():
            print(f"pathway-P{args.masked_forward:g} through the pruned network, {k}: "
                  f"LeRF@10% {v['lerf10']['mean']:.3f} (output change "
                  f"{masked['output_change']['mean']:.3f})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "inputs": len(x), "views": sorted(views), "model": args.model.name,
        "zero_pixel_fraction": zero_fraction, "rows": rows, "masked_forward": masked,
        "seconds": round(time.perf_counter() - start, 1)}, indent=1, default=float) + "\n")
    print("| map | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for method in maps:
        print(f"| {method} | " + " | ".join(f"{rows[f'{method}/{k}']['lerf10']['mean']:.3f}"
                                           for k in KEYS) + " |")
    print(f"exact-zero pixels in pathway maps: {zero_fraction}")


if __name__ == "__main__":
    main()
