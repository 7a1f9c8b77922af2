"""Collect benchmarks/results/real/*.json into one Markdown report (table.md): the methods ×
metrics table beside the papers' numbers, the sparsity sweep, the sanity check and the ranking
investigation. Run after real_imagenet.py (and real_digits.py); it computes nothing.

    python benchmarks/real_report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results/real"
METHODS = ("pathway", "gradient", "input-x-gradient", "integrated-gradients",
           "guided-backprop", "gradcam")
# methods.md section 8: ResNet-50, ImageNet; LeRF@10% on 2000 images, |Spearman| on 1000.
PAPER_LERF = {"gradient": 0.599, "guided-backprop": 0.591, "gradcam": 0.132,
              "input-x-gradient": 0.556, "integrated-gradients": 0.527, "pathway": 0.157}
PAPER_SANITY = {"pathway": (0.504, 0.116), "gradient": (0.485, 0.042),
                "guided-backprop": (0.991, 0.149), "gradcam": (0.710, 0.416),
                "integrated-gradients": (0.583, 0.235)}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cell(score: dict | None, photos: bool = False) -> str:
    if not score:
        return "–"
    text = f"{score['mean']:.3f} ± {score['se']:.3f}"
    return text + (f" ({score['se_photos']:.3f})" if photos and "se_photos" in score else "")


def main_table(lines: list[str]) -> None:
    columns = [("lerf", "lerf", "LeRF@10% ↓"), ("morf", "morf", "MoRF@10% ↑"),
               ("deletion", "deletion", "deletion AUC ↓"),
               ("insertion", "insertion", "insertion AUC ↑"),
               ("road", "road-morf", "ROAD-MoRF ↓"), ("road", "road-lerf", "ROAD-LeRF ↑")]
    loaded = {name: load(name) for name in {c[0] for c in columns}}
    sweep = load("sweep")
    p = sweep["chosen_P"] if sweep else None
    lines.append(f"Pathway at P = {p} (mean output change closest to 15%). Mean ± standard "
                 "error over inputs; in brackets for LeRF, the standard error over the 13 "
                 "photo means (the honest one: the inputs of one photo are correlated).\n")
    header = ["method", *[c[2] for c in columns], "paper LeRF@10%"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for m in METHODS:
        row = [m]
        for file, column, _ in columns:
            data = loaded[file]
            score = data["scores"].get(f"{column}/{m}") if data else None
            row.append(cell(score, photos=column == "lerf"))
        row.append(f"{PAPER_LERF[m]:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    sizes = []
    for file, _, _ in columns:
        data = loaded[file]
        if data:
            rerun = (f" (then {', '.join(data['reran'])} rerun, {data['rerun_seconds']:.0f} s)"
                     if data.get("reran") else "")
            sizes.append(f"{file}: {data.get('inputs', '?')} model inputs scored on "
                         f"{data['subset']}, {data['seconds']:.0f} s{rerun}")
    lines.append("\n" + "; ".join(dict.fromkeys(sizes)) + ".\n")


def sweep_table(lines: list[str]) -> None:
    sweep = load("sweep")
    if not sweep:
        return
    lines.append(f"Sparsity sweep ({sweep['subset']}; {sweep['rule']}):\n")
    lines.append("| P | kept % | output change (mean ± se) | median | LeRF@10% signed | "
                 "LeRF@10% abs |")
    lines.append("|---|---|---|---|---|---|")
    for r in sweep["rows"]:
        lines.append(f"| {r['P']:g} | {r['kept_percent']:.1f} | {cell(r['output_change'])} | "
                     f"{r['output_change_median']:.3f} | {cell(r['lerf10_signed'])} | "
                     f"{cell(r['lerf10_abs'])} |")
    lines.append("")


def short(node: str) -> str:
    """'/_blocks.11/_expand_conv/Conv' -> '_blocks.11/_expand_conv'."""
    parts = [p for p in node.split("/") if p]
    return "/".join(parts[:-1]) if len(parts) > 1 else node


def sanity_table(lines: list[str]) -> None:
    sanity = load("sanity")
    if not sanity:
        return
    layers = sanity["layers"]
    steps = sorted(int(k) for k in layers)
    lines.append(f"Sanity check ({sanity['subset']}; pathway at P = {sanity['P']}): "
                 "|Spearman| of the maps after randomising the listed number of layers from "
                 "the output (layer named), paper values after fc and at conv1:\n")
    header = ["method", *[f"{s} ({short(layers[str(s)])})" for s in steps], "paper after fc",
              "paper conv1"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for m in METHODS:
        series = sanity["series"].get(f"spearman_abs/{m}")
        if not series:
            continue
        paper = PAPER_SANITY.get(m, (None, None))
        row = [m, *[f"{v:.3f} ± {e:.3f}" for v, e in zip(series["mean"], series["se"],
                                                        strict=True)],
               *[f"{v:.3f}" if v is not None else "–" for v in paper]]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")


def investigation_table(lines: list[str]) -> None:
    data = load("investigation")
    if not data:
        return
    keys = sorted({k.split("/")[1] for k in data["rows"]}, key=lambda k: list(
        k for k in ("signed-maxabs", "abs", "channel-max", "sum", "abs-sum")).index(k))
    maps = list(dict.fromkeys(k.split("/")[0] for k in data["rows"]))
    lines.append(f"Pixel-ranking candidates (LeRF@10%, {data['inputs']} inputs, views "
                 f"{data['views']}):\n")
    lines.append("| map | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    for m in maps:
        lines.append(f"| {m} | " + " | ".join(cell(data["rows"][f"{m}/{k}"]["lerf10"])
                                              for k in keys) + " |")
    lines.append(f"\nPixels whose pathway gradient is exactly zero: "
                 f"{', '.join(f'{k}: {v:.1%}' for k, v in data['zero_pixel_fraction'].items())}.\n")


def digits_table(lines: list[str]) -> None:
    path = RESULTS / "digits" / "table.json"
    if not path.exists():
        return
    data = json.loads(path.read_text())
    sweep = json.loads((RESULTS / "digits" / "sweep.json").read_text())
    lines.append(f"Digits CNN ({sweep['inputs']} held-out digits, accuracy "
                 f"{sweep['accuracy']:.3f}; pathway at P = {data['P']}):\n")
    columns = ["lerf", "morf", "deletion", "insertion", "road-morf", "road-lerf",
               "sanity-first", "sanity-last"]
    lines.append("| method | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(cell(data["scores"].get(f"{c}/{m}"))
                                              for c in columns) + " |")
    ranks = RESULTS / "digits" / "ranks.json"
    if ranks.exists():
        r = json.loads(ranks.read_text())["lerf10"]
        lines.append("\nLeRF@10% by pixel ranking: " + "; ".join(
            f"{k}: {v['mean']:.3f} ± {v['se']:.3f}" for k, v in r.items()) + ".")
    lines.append("")


def main() -> None:
    lines = ["# The papers' experiments on EfficientNet-Lite0 (and the digits CNN)\n"]
    for part in (main_table, sweep_table, sanity_table, investigation_table, digits_table):
        part(lines)
    text = "\n".join(lines) + "\n"
    (RESULTS / "table.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
