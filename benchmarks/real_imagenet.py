"""The papers' experiments on a real ImageNet classifier: EfficientNet-Lite0 on the shipped photos.

    python benchmarks/real_imagenet.py                      # every stage, ~1.5 h on 2 idle cores
    python benchmarks/real_imagenet.py --stages sweep,lerf  # some stages (maps are cached)

Inputs: every photo in models/photos/ (13), each as 16 deterministic variants (8 crops of the
original photo × a horizontal flip), each then preprocessed as the model's metadata says: 208
inputs. They are strongly correlated (variants of one photo share most of their pixels); the
script prints the mean input correlation within and across photos, and every headline number
also gets a standard error over the 13 photo means (`se_photos`), the honest one.

Stages, each writing `<stage>.json` (and plots) to --out as soon as it is done:
  sweep    pathway at P in {0,30,50,70,80,85,90,95,99} (the issue's sweep plus 30 and 50) on
           the 52 inputs of views 0-3 (the full photo and three centred crops): the output change
           |p_c(pathway) - p_c| / p_c and LeRF@5/10% (signed and abs ranking) against P; picks
           the P whose mean output change is closest to 15% (the authors' rule).
  lerf     LeRF at 1, 2, 3, 5, 7, 10% on all 208 inputs, every method (pathway at that P).
  sanity   cascading randomisation on all 208 inputs, 4 cascade steps (after the classifier,
           two middle ones, after the stem), every method.
  morf     MoRF at 1, 5, 10% on all 208 inputs.
  curves   deletion and insertion, 10 steps of 10% (5018 px), on all 208 inputs.
  road     ROAD MoRF and LeRF at 10/50/90% on all 208 inputs (noisy linear imputation: about
           0.1-0.4 s per image, method, order and fraction on an idle core).
  replot   redraws every plot from the JSON files (`--methods` reruns do this themselves).

`--methods a,b` reruns some methods only; their entries in the JSON files are replaced and the
other methods' kept (each file records the methods rerun and `ig_steps`).

Sizing: on 2 idle cores one Lite0 forward pass costs ~5 ms and one gradient ~24 ms.
Integrated gradients uses 50 Gauss-Legendre points (its completeness gap goes to
ig_completeness.json); LeRF uses 6 of the 10 fractions, MoRF 3, the sanity cascade 4 of its 50
steps; the subsets above are fixed by index, never chosen by results. Maps are cached in
--cache, so stages rerun without recomputing them; --prune sets P for stages run without the
sweep's choice in that cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from onnxpath.evaluate import (  # noqa: E402
    Evaluation,
    Settings,
    perturbation,  # noqa: E402
)
from onnxpath.evaluate.plot import TITLES, Line, line_plot  # noqa: E402
from onnxpath.evaluate.report import mean_sem  # noqa: E402
from onnxpath.evaluate.runner import attribute, heat_maps  # noqa: E402
from onnxpath.explainer import Explainer  # noqa: E402
from onnxpath.io.image import read_image, to_tensor  # noqa: E402
from onnxpath.io.outputs import save_png  # noqa: E402
from onnxpath.io.preprocess import preset_for  # noqa: E402
from onnxpath.methods.pathway import pathway_gradient  # noqa: E402
from onnxpath.pathways.network import (  # noqa: E402
    Pathway,
    contributions,
    masked_network,
    output_change,
)
from onnxpath.pathways.selection import select  # noqa: E402

METHODS = ("pathway", "gradient", "input-x-gradient", "integrated-gradients",
           "guided-backprop", "gradcam")
SWEEP = (0, 70, 80, 85, 90, 95, 99)
SWEEP_EXTRA = (30, 50)  # the sweep jumps from 0 to 70; ~15% change lies between
SWEEP_VIEWS = (0, 1, 2, 3)  # the full photo and three centred crops: 52 inputs
LERF_FRACTIONS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1)
# (scale of the photo's width and height, horizontal anchor, vertical anchor): 0 left/top,
# 0.5 centre, 1 right/bottom.
CROPS = ((1.0, 0.5, 0.5), (0.85, 0.5, 0.5), (0.7, 0.5, 0.5), (0.8, 0.0, 0.0), (0.8, 1.0, 0.0),
         (0.8, 0.0, 1.0), (0.8, 1.0, 1.0), (0.6, 0.5, 0.5))
PAPER_LERF = {"gradient": 0.599, "guided-backprop": 0.591, "gradcam": 0.132,
              "input-x-gradient": 0.556, "integrated-gradients": 0.527, "pathway": 0.157}


def variants(img: Image.Image) -> list[Image.Image]:
    """16 views of one photo: each crop, then the same crops mirrored."""
    w, h = img.size
    out = []
    for flip in (False, True):
        base = ImageOps.mirror(img) if flip else img
        for scale, ax, ay in CROPS:
            cw, ch = round(w * scale), round(h * scale)
            left, top = round((w - cw) * ax), round((h - ch) * ay)
            out.append(base.crop((left, top, left + cw, top + ch)))
    return out


def load_inputs(explainer: Explainer, photos: Path):
    prep = preset_for(explainer.input_shape, explainer.proto)
    names, photo_ids, tensors = [], [], []
    for pid, path in enumerate(sorted(photos.glob("*.jpg"))):
        for k, view in enumerate(variants(read_image(path).convert("RGB"))):
            x, _ = to_tensor(view, prep, (224, 224), 3)
            tensors.append(x)
            names.append(f"{path.stem}#{k}")
            photo_ids.append(pid)
    return np.stack(tensors), names, np.asarray(photo_ids)


def correlation_note(x: np.ndarray, photo: np.ndarray) -> dict:
    """Mean Pearson correlation between inputs of the same photo and of different photos."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    corr = flat @ flat.T
    same = photo[:, None] == photo[None, :]
    off = ~np.eye(len(x), dtype=bool)
    return {"within_photo": round(float(corr[same & off].mean()), 3),
            "across_photos": round(float(corr[~same].mean()), 3)}


def summary(values: np.ndarray, photo: np.ndarray) -> dict:
    """Mean, standard error over inputs, and standard error over photo means (clustered)."""
    values = np.asarray(values, dtype=np.float64)
    mean, sem, n = mean_sem(values)
    per_photo = np.asarray([np.nanmean(values[photo == p]) for p in np.unique(photo)])
    _, sem_photos, photos = mean_sem(per_photo)
    return {"mean": mean, "se": sem, "n": n, "se_photos": sem_photos, "photos": photos}


class Cache:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, make):
        path = self.folder / f"{name}.npy"
        if path.exists():
            return np.load(path)
        value = make()
        np.save(path, value)
        return value


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = Cache(args.cache)
        self.explainer = Explainer(args.model, threads=args.threads)
        self.x, self.names, self.photo = load_inputs(self.explainer, args.photos)
        self.targets = self.cache.get("targets", lambda: np.concatenate(
            [self.explainer.predict(self.x[i:i + 32]) for i in range(0, len(self.x), 32)]
        ).argmax(axis=1))
        self.options = {"layers": ["Clip"], "steps": args.ig_steps}
        self.methods = tuple(m for m in METHODS if m in args.methods.split(","))
        self.log(f"{len(self.x)} inputs from {len(np.unique(self.photo))} photos; "
                 f"correlation {correlation_note(self.x, self.photo)}")

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def write(self, name: str, payload: dict) -> None:
        payload = {"inputs": len(self.x), "photos": int(len(np.unique(self.photo))),
                   "model": str(self.args.model.relative_to(ROOT))
                   if self.args.model.is_relative_to(ROOT) else str(self.args.model),
                   **payload}
        path = self.out / f"{name}.json"
        if self.methods != METHODS and path.exists():
            # Some methods rerun (--methods): their entries replace the old ones, the rest stay.
            old = json.loads(path.read_text())
            for key in ("scores", "curves", "series"):
                if key in payload:
                    payload[key] = {**old.get(key, {}), **payload[key]}
            payload = {**old, **payload, "seconds": old.get("seconds"),
                       "rerun_seconds": payload.get("seconds"),
                       "reran": sorted({*old.get("reran", []), *self.methods})}
        payload["ig_steps"] = self.args.ig_steps
        path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
        self.log(f"wrote {path}")

    # --- maps --------------------------------------------------------------------------------

    def pathway_maps(self, indices: np.ndarray, percents) -> dict:
        """Pathway maps for several P from one scoring pass per batch, and output changes."""
        net = masked_network(self.explainer.engine((8, 3, 224, 224)), ("Clip",))
        maps = {p: np.zeros((len(indices), 224, 224), np.float32) for p in percents}
        change = {p: np.zeros(len(indices)) for p in percents}
        kept = {p: np.zeros(len(indices)) for p in percents}
        for start in range(0, len(indices), 8):
            part = indices[start:start + 8]
            if len(part) < 8:  # the engine for batch 8 is cached; pad the last batch
                part = np.concatenate([part, np.repeat(part[-1:], 8 - len(part))])
            x, t = self.x[part], self.targets[part]
            logits, signed, _ = contributions(net, x, t)
            scores = [np.abs(s, out=s) for s in signed]
            for p in percents:
                masks, _ = select(scores, p, False)
                found = Pathway(net, masks, p, "contribution", logits)
                grads, masked_logits = pathway_gradient(found, x, t)
                n = min(8, len(indices) - start)
                maps[p][start:start + n] = heat_maps(grads)[:n]
                change[p][start:start + n] = output_change(logits, masked_logits, t)[:n]
                kept[p][start:start + n] = [found.kept_fraction(i) for i in range(n)]
            self.log(f"pathway maps {start + 8}/{len(indices)}")
        return {"maps": maps, "change": change, "kept": kept}

    def sweep_inputs(self) -> np.ndarray:
        return self.subset(SWEEP_VIEWS)

    def pathway_all(self, prune: float) -> np.ndarray:
        """Pathway heat on every input; the sweep's inputs come from its cache when there."""
        heat = np.zeros((len(self.x), 224, 224), np.float32)
        done = np.zeros(len(self.x), bool)
        cached = self.cache.folder / f"sweep-maps-{prune:g}.npy"
        if cached.exists():
            idx = self.sweep_inputs()
            heat[idx] = np.load(cached)
            done[idx] = True
        rest = np.flatnonzero(~done)
        if len(rest):
            heat[rest] = self.pathway_maps(rest, [prune])["maps"][prune]
        return heat

    def heat(self, method: str, prune: float | None = None) -> np.ndarray:
        if method == "pathway":
            return self.cache.get(f"heat-pathway-{prune:g}", lambda: self.pathway_all(prune))

        def make():
            t = time.perf_counter()
            raw = attribute(self.explainer, self.x, method, self.targets, 16, self.options)
            self.log(f"maps {method}: {time.perf_counter() - t:.0f} s")
            if method == "integrated-gradients":
                self.ig_completeness(raw)
            return heat_maps(raw)
        steps = f"-{self.args.ig_steps}" if method == "integrated-gradients" else ""
        return self.cache.get(f"heat-{method}{steps}", make)

    def ig_completeness(self, raw: np.ndarray) -> None:
        """sum(IG) against f(x) - f(0) for the target logit: the quadrature's error."""
        rows = np.arange(len(self.x))
        fx = self.explainer.predict(self.x)[rows, self.targets]
        f0 = self.explainer.predict(np.zeros_like(self.x[:1]))[0, self.targets]
        gap = np.abs(raw.reshape(len(raw), -1).sum(1) - (fx - f0)) / np.abs(fx - f0)
        (self.out / "ig_completeness.json").write_text(json.dumps(
            {"steps": self.args.ig_steps, "rule": "gausslegendre",
             "relative_gap_median": float(np.median(gap)),
             "relative_gap_mean": float(gap.mean())}, indent=1) + "\n")

    # --- stages ------------------------------------------------------------------------------

    def sweep(self) -> None:
        idx = self.sweep_inputs()
        start = time.perf_counter()
        percents = sorted(set(SWEEP) | set(SWEEP_EXTRA))
        found = {}
        for key in ("maps", "change", "kept"):
            cached = [self.cache.folder / f"sweep-{key}-{p:g}.npy" for p in percents]
            if not all(c.exists() for c in cached):
                break
            found[key] = {p: np.load(c) for p, c in zip(percents, cached, strict=True)}
        else:
            self.log("sweep: maps from the cache")
        if len(found) < 3:
            found = self.pathway_maps(idx, percents)
            for key, per_p in found.items():
                for p, value in per_p.items():
                    np.save(self.cache.folder / f"sweep-{key}-{p:g}.npy", value)
        fwd = self.explainer.predict
        rows = []
        for p in percents:
            def row_for(p=p):
                row = {"P": p, "output_change": summary(found["change"][p], self.photo[idx]),
                       "output_change_median": float(np.median(found["change"][p])),
                       "kept_percent": 100 * float(found["kept"][p].mean())}
                for rank in ("signed", "abs"):
                    lerf = perturbation.pixel_perturbation(
                        fwd, self.x[idx], found["maps"][p], self.targets[idx], (0.05, 0.1),
                        "lerf", 0.0, rank, 32, 0)
                    row[f"lerf10_{rank}"] = summary(lerf[:, -1], self.photo[idx])
                    row[f"lerf5_{rank}"] = summary(lerf[:, 0], self.photo[idx])
                return row
            path = self.cache.folder / f"sweep-row-{p:g}.json"
            if path.exists():
                row = json.loads(path.read_text())
            else:
                row = row_for()
                path.write_text(json.dumps(row, default=float))
            rows.append(row)
            self.log(f"sweep P={p}: change {row['output_change']['mean']:.3f}, LeRF@10% "
                     f"signed {row['lerf10_signed']['mean']:.3f} abs "
                     f"{row['lerf10_abs']['mean']:.3f}")
        chosen = min(rows, key=lambda r: abs(r["output_change"]["mean"] - 0.15))["P"]
        self.write("sweep", {"inputs": len(idx), "subset": f"views {SWEEP_VIEWS} of each photo",
                             "rows": rows,
                             "chosen_P": chosen, "rule": "mean output change closest to 15% "
                             f"over P in {percents} (the issue's sweep plus {SWEEP_EXTRA})",
                             "seconds": round(time.perf_counter() - start, 1)})
        lines_change = [Line("mean", percents, [r["output_change"]["mean"] for r in rows],
                             [r["output_change"]["se"] for r in rows]),
                        Line("median", percents, [r["output_change_median"] for r in rows])]
        lines_lerf = [Line(f"{rank} rank", percents,
                           [r[f"lerf10_{rank}"]["mean"] for r in rows],
                           [r[f"lerf10_{rank}"]["se"] for r in rows])
                      for rank in ("signed", "abs")]
        save_png(self.out / "sweep.png", _side(
            line_plot(lines_change, "pathway output change vs P", "P (% of neurons pruned)",
                      "|p' - p| / p"),
            line_plot(lines_lerf, "pathway LeRF@10% vs P", "P (% of neurons pruned)",
                      "|p' - p| / p at 10% removed")))
        np.save(self.cache.folder / "chosen.npy", np.asarray(chosen))
        # The chosen P's maps on the sweep inputs are kept for the table's pathway maps.


    @property
    def prune(self) -> float:
        return float(self.cache.get("chosen", lambda: np.asarray(self.args.prune)))

    def heats(self, indices=None) -> dict:
        idx = np.arange(len(self.x)) if indices is None else indices
        return {m: self.heat(m, self.prune)[idx] for m in self.methods}

    def evaluation(self, indices, metric_settings: dict) -> Evaluation:
        heats = self.heats(indices)
        settings = Settings(batch_size=32, method_options=self.options, **metric_settings)
        ev = _CachedEvaluation(self.explainer, self.x[indices], self.methods, settings,
                               targets=self.targets[indices])
        ev.cached = heats
        ev.maps = {m: None for m in self.methods}  # never recomputed: heat() is overridden
        return ev

    def run_metric(self, name: str, metric: str, indices, subset: str, **settings) -> None:
        start = time.perf_counter()
        ev = self.evaluation(indices, settings)
        report = ev.run([metric])
        photo = self.photo[indices]
        scores = {f"{s.column}/{s.method}": summary(s.values, photo) for s in report.scores}
        curves = {f"{s.metric}/{s.measure}/{s.method}": {
            "x": list(s.x), "mean": mean_sem(s.values)[0].tolist(),
            "se": mean_sem(s.values)[1].tolist()} for s in report.series}
        self.write(name, {"inputs": len(indices), "subset": subset, "P": self.prune,
                          "settings": report.settings,
                          "scores": scores, "curves": curves,
                          "seconds": round(time.perf_counter() - start, 1)})
        self.plots(report)

    def plots(self, report) -> None:
        if self.methods == METHODS:
            from onnxpath.evaluate.plot import write_plots
            write_plots(report, self.out / "plots")
        else:
            replot(self.out)

    def replot(self) -> None:
        replot(self.out)

    def lerf(self) -> None:
        self.run_metric("lerf", "lerf", np.arange(len(self.x)), "all inputs",
                        fractions=LERF_FRACTIONS)

    def morf(self) -> None:
        self.run_metric("morf", "morf", np.arange(len(self.x)), "all inputs",
                        fractions=(0.01, 0.05, 0.1))

    def subset(self, views) -> np.ndarray:
        return np.flatnonzero(np.asarray([int(n.split("#")[1]) in views for n in self.names]))

    def curves(self) -> None:
        idx = np.arange(len(self.x))
        self.run_metric("deletion", "deletion", idx, "all inputs", step=5018)
        self.run_metric("insertion", "insertion", idx, "all inputs", step=5018)

    def road(self) -> None:
        self.run_metric("road", "road", np.arange(len(self.x)), "all inputs",
                        road_fractions=(0.1, 0.5, 0.9))

    def sanity(self) -> None:
        opts = {**self.options, "prune_percent": self.prune}
        idx = np.arange(len(self.x))
        start = time.perf_counter()
        ev = self.evaluation(idx, {"sanity_steps": 4})
        ev.settings = replace(ev.settings, method_options=opts)
        ev.progress = self.log
        report = ev.run(["sanity"])
        series = {f"{s.measure}/{s.method}": {"x": list(s.x),
                                              "mean": mean_sem(s.values)[0].tolist(),
                                              "se": mean_sem(s.values)[1].tolist()}
                  for s in report.series}
        self.write("sanity", {"inputs": len(idx),
                              "subset": "all inputs",
                              "P": self.prune, "layers": report.notes.get("sanity_layers"),
                              "series": series,
                              "seconds": round(time.perf_counter() - start, 1)})
        self.plots(report)


PLOT_AXES = {  # metric -> (x label, which way is better), as onnxpath.evaluate labels them
    "lerf": ("fraction of pixels removed", "lower"), "morf": ("fraction of pixels removed",
                                                             "higher"),
    "deletion": ("fraction of pixels deleted", "lower"),
    "insertion": ("fraction of pixels inserted", "higher"),
    "road-morf": ("fraction of pixels imputed", "lower"),
    "road-lerf": ("fraction of pixels imputed", "higher"),
    "sanity": ("layers randomised (from the output)", "lower")}


def replot(results: Path) -> None:
    """Every plot from the JSON files' mean and standard-error curves, so that a partial rerun
    (--methods) redraws the plots with every method in them."""
    for name in ("lerf", "morf", "deletion", "insertion", "road", "sanity"):
        path = results / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        groups: dict[tuple[str, str], list[Line]] = {}
        for key, curve in (data.get("curves") or {}).items():
            metric, measure, method = key.split("/")
            groups.setdefault((metric, measure), []).append(
                Line(method, curve["x"], curve["mean"], curve["se"]))
        for key, curve in (data.get("series") or {}).items():
            measure, method = key.split("/")
            groups.setdefault(("sanity", measure), []).append(
                Line(method, curve["x"], curve["mean"], curve["se"]))
        for (metric, measure), lines in groups.items():
            order = {m: i for i, m in enumerate(METHODS)}
            lines.sort(key=lambda line: order.get(line.label, len(order)))
            title, ylabel = TITLES.get(metric, (metric, None))
            xlabel, better = PLOT_AXES[metric]
            single = sum(1 for (m, _) in groups if m == metric) == 1
            save_png(results / "plots" / f"{metric if single else f'{metric}-{measure}'}.png",
                     line_plot(lines, f"{title} ({measure.replace('_', ' ')}; {better} is "
                               f"better, n={data['inputs']})", xlabel,
                               ylabel or measure.replace("_", " ")))


class _CachedEvaluation(Evaluation):
    """An Evaluation whose heat maps were computed (and cached) by the benchmark."""

    cached: dict

    def heat(self, method: str) -> np.ndarray:
        return self.cached[method]


def _side(a: Image.Image, b: Image.Image) -> Image.Image:
    out = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    out.paste(a, (0, 0))
    out.paste(b, (a.width, 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/efficientnet_lite0.onnx")
    parser.add_argument("--photos", type=Path, default=ROOT / "models/photos")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/real")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/onnxpath-real-cache"))
    parser.add_argument("--stages", default="sweep,lerf,sanity,morf,curves,road")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="rerun some methods only: their entries in --out's JSON files are "
                        "replaced, the others kept")
    parser.add_argument("--prune", type=float, default=85.0,
                        help="P when the sweep has not run")
    args = parser.parse_args()
    bench = Bench(args)
    for stage in args.stages.split(","):
        bench.log(f"stage {stage}")
        getattr(bench, stage)()
    bench.log("done")


if __name__ == "__main__":
    main()
