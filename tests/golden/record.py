"""Golden-set recorder: what onnxpath does, recorded from the outside, so that a restructuring
can be checked to change nothing.

Record (builds the fixtures into FIXDIR the first time, reuses them byte for byte after):

    python tests/golden/record.py --checkout DIR --fixtures FIXDIR --out RECDIR

Compare two recordings (exit 1 on any difference; stderr differences are only warnings):

    python tests/golden/record.py --compare RECDIR_A RECDIR_B

Only the CLI (`python cli.py ...`, run in the checkout with PYTHONPATH set to it) and the public
`onnxpath.Explainer` are used, never internal modules. Each case runs in a fresh temp folder with
its own session cache (ONNXPATH_CACHE_DIR). What is recorded per step: the exit code, stdout
(JSON lines parsed, timing fields dropped, paths made relative), stderr (normalised, compared
as a warning only), and every file under the case folder with its sha256, or a normalised
digest for JSON (markers, manifests, reports' data), HTML reports and .npz archives.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = 2  # bumped whenever what is recorded, or how it is normalised, changes
STEP_TIMEOUT = 600
SHAPES, EFFNET, DIGITS = ("models/shapes_resnet.onnx", "models/efficientnet_lite0.onnx",
                          "models/digits_cnn.onnx")
SAMPLES = "models/samples"
# The shipped files the cases read from the checkout (their digests go into the record).
SHIPPED = [SHAPES, EFFNET, DIGITS, "models/photos/coffee.jpg", "models/photos/chelsea.jpg",
           *(f"{SAMPLES}/{s}_0.png" for s in ("circle", "cross", "heart", "hexagon", "ring",
                                              "square", "star", "triangle")),
           *(f"models/sample_masks/{s}_0.png" for s in ("heart", "ring", "star")),
           "models/digits/3_0.png", "models/digits/7_0.png", "models/digits/0_1.png"]
TIMING_KEYS = {"time_ms", "seconds", "elapsed", "elapsed_ms", "timestamp", "wall_s"}


# ---------------------------------------------------------------------------------------------
# The cases


@dataclass
class Step:
    """One CLI call (`argv` after `cli.py`) or one Python API scenario (`api`, see API_RUNNER).
    `{fix}` and `{case}` in arguments stand for the fixtures folder and the case folder."""

    argv: list[str] | None = None
    api: dict | None = None
    stdin: str | None = None


@dataclass
class Case:
    name: str
    what: str
    steps: list[Step] = field(default_factory=list)


def cli(*argv: str, stdin: str | None = None) -> Step:
    return Step(argv=list(argv), stdin=stdin)


def samples(*names: str) -> list[str]:
    return [f"{SAMPLES}/{n}_0.png" for n in names]


def cases() -> list[Case]:
    out, npz, q = "{case}/out", "{case}/out/maps.npz", "-q"
    table, series, text = "{fix}/table", "{fix}/series", "{fix}/text"
    ray = ["--engine", "ray", "--actors", "2"]
    every_image_method = ("gradient,input-x-gradient,pathway,integrated-gradients,gradcam,"
                          "guided-backprop,deconvnet,smoothgrad,occlusion,rise,lime,kernel-shap")
    few = ["--steps", "4", "--samples", "16", "--rise-masks", "32"]
    tok = ["--tokenizer", f"{text}/tokenizer.json"]
    texts = [f"{text}/reviews.txt", f"{text}/more.jsonl"]
    resume_cmd = ["attribute", SHAPES, *samples("star", "heart", "ring"),
                  "-m", "gradient,pathway,gradcam", "-o", out, "--report", "{case}/out/report.html",
                  "--npz", npz, q]
    table_cmd = ["attribute", f"{table}/mlp_classifier.onnx", f"{table}/customers.csv",
                 "-m", "gradient,integrated-gradients,kernel-shap", "--steps", "8",
                 "--samples", "64", "--target", "top2", "-o", out, "--npz", npz, q]
    series_cmd = ["attribute", f"{series}/audio.onnx", f"{series}/tone.npy",
                  f"{series}/tone.wav", f"{series}/signal.csv",
                  "-m", "gradient,integrated-gradients,occlusion", "--steps", "8",
                  "--segments", "windows:16", "--target", "top2", "-o", out, "--npz", npz, q]
    table_ray = ["attribute", f"{table}/mlp_classifier.onnx", f"{table}/customers.csv",
                 f"{table}/bad.csv", "-m", "gradient,occlusion", "-o", out, "--npz", npz, *ray,
                 q]
    text_cmd = ["attribute", f"{text}/bert.onnx", *texts, "--text", "great film", *tok,
                "-m", "gradient,integrated-gradients,lime", "--steps", "8", "--samples", "64",
                "--target", "top2", "-o", out, "--npz", npz, q]
    return [
        Case("help", "--help of every command", [
            cli(c, "--help") for c in ("attribute", "pathway", "evaluate", "inspect",
                                       "check-grad", "export", "cache")]),
        Case("image-every-method", "every method on two shapes samples, small sample counts, "
             "-o, --npz, --side-by-side", [
                 cli("attribute", SHAPES, *samples("star", "heart"), "-m", every_image_method,
                     *few, "-o", out, "--npz", npz, "--side-by-side", q)]),
        Case("image-top3", "--target top3 with -o", [
            cli("attribute", SHAPES, *samples("cross", "hexagon"), "-m", "gradient,gradcam",
                "--target", "top3", "-o", out, q)]),
        Case("image-target-label", "--target LABEL, pathway options, IG options", [
            cli("attribute", SHAPES, *samples("star", "triangle"), "-m",
                "pathway,integrated-gradients", "--target", "star", "--prune", "75",
                "--per-layer", "--steps", "6", "--rule", "riemann-middle", "--baseline", "blur",
                "-o", out, q)]),
        Case("image-batch", "a directory of 8 samples, --batch-size 3, --npz", [
            cli("attribute", SHAPES, f"{SAMPLES}/", "-m", "gradient,integrated-gradients",
                "--steps", "4", "--batch-size", "3", "-o", out, "--npz", npz, q)]),
        Case("image-npy-and-bad-inputs", ".npy inputs (C×H×W, 1×C×H×W), an unreadable image, "
             "a wrong-shape .npy and a missing file among good ones: exit 1, the batch goes on; "
             "same stem in two folders", [
                 cli("attribute", SHAPES, "{fix}/images/star_0.npy", "{fix}/images/broken.png",
                     "{fix}/images/heart_0.npy", "{fix}/images/wrong.npy",
                     "{fix}/images/missing.png", *samples("star", "circle"),
                     "-m", "gradient,occlusion", "--batch-size", "2", "-o", out, q)]),
        Case("image-report-resume", "--report, then the same command into the same -o "
             "(resume), then --no-resume, then another job into the same -o", [
                 cli(*resume_cmd), cli(*resume_cmd), cli(*resume_cmd, "--no-resume"),
                 cli("attribute", SHAPES, *samples("star", "heart", "ring"), "-m", "gradient",
                     "-o", out, q)]),
        Case("image-stdin-no-out", "paths on stdin (-), no --out: stdout only, --no-cache", [
            cli("attribute", SHAPES, "-", "-m", "gradient,occlusion", "--window", "16",
                "--stride", "16", "--no-cache", q,
                stdin="models/samples/square_0.png\nmodels/samples/ring_0.png\n")]),
        Case("image-render-options", "rendering flags and --abs", [
            cli("attribute", SHAPES, *samples("heart"), "-m", "gradient,smoothgrad", "--abs",
                "--reduce", "sum", "--colormap", "bwr", "--normalise", "minmax", "--alpha",
                "0.3", "--variant", "square", "--noise", "15%", "--samples", "4", "--seed", "3",
                "-o", out, q)]),
        Case("effnet-photos", "EfficientNet-Lite0 on two photos, top2, side by side, npz", [
            cli("attribute", EFFNET, "models/photos/coffee.jpg", "models/photos/chelsea.jpg",
                "-m", "gradient,pathway,gradcam", "--target", "top2", "--side-by-side",
                "-o", out, "--npz", npz, q)]),
        Case("digits-labels-report-dir", "the digits CNN, --labels, --target by label, "
             "--report DIR/", [
                 cli("attribute", DIGITS, "models/digits/3_0.png", "models/digits/7_0.png",
                     "models/digits/0_1.png", "-m", "gradient,input-x-gradient,guided-backprop",
                     "--labels", "{fix}/images/digit_labels.txt", "--target", "three",
                     "-o", out, "--report", "{case}/report/", q)]),
        Case("digits-preprocess-flags", "explicit preprocessing flags", [
            cli("attribute", DIGITS, "models/digits/7_0.png", "-m", "gradient", "--preset",
                "none", "--size", "32x32", "--scale", "1/255", "--mean", "0.5", "--std", "0.5",
                "--gray", "-o", out, q)]),
        Case("image-ray", "--engine ray --actors 2: images with an unreadable one, --npz", [
            cli("attribute", SHAPES, *samples("star", "heart", "ring"),
                "{fix}/images/broken.png", "-m", "gradient,gradcam", "-o", out, "--npz", npz,
                *ray, q)]),
        Case("intake-flags", "--target-index, --output, --wrt, --fallback, --threads, "
             "--internal-batch-size", [
                 cli("attribute", SHAPES, *samples("star"), "-m", "gradient,occlusion",
                     "--target-index", "5", "--fallback", "occlusion", "--threads", "1",
                     "--internal-batch-size", "4", q),
                 cli("attribute", f"{table}/mlp_classifier.onnx", f"{table}/customers.csv",
                     "-m", "gradient", "--output", "probabilities", q),
                 cli("attribute", f"{text}/bert.onnx", f"{text}/ids.npy", "-m", "gradient",
                     "--wrt", "/word/Gather_output_0", q)]),
        Case("table", "a CSV table: top2, -o, --npz, then a resumed rerun", [
            cli(*table_cmd), cli(*table_cmd)]),
        Case("table-bad-and-npy", "an unreadable CSV, .npy rows with --features, forward-only "
             "methods", [
                 cli("attribute", f"{table}/mlp_classifier.onnx", f"{table}/customers.csv",
                     f"{table}/bad.csv", f"{table}/rows.npy", "--features",
                     f"{table}/names.txt", "-m", "lime,occlusion,pathway", "--samples", "32",
                     "-o", out, q)]),
        Case("table-ray", "a CSV table and an unreadable one on Ray, then a resumed rerun "
             "on Ray", [cli(*table_ray), cli(*table_ray)]),
        Case("series", ".npy, .wav and CSV series: top2, -o, --npz, then a resumed rerun", [
            cli(*series_cmd), cli(*series_cmd)]),
        Case("series-bad-and-methods", "a sample-rate mismatch, an unreadable .wav, a "
             "wrong-length .npy; forward-only and sampling methods, no -o", [
                 cli("attribute", f"{series}/audio.onnx", f"{series}/tone.wav",
                     f"{series}/broken.wav", "--sample-rate", "16000", "-m", "gradient", q),
                 cli("attribute", f"{series}/audio.onnx", f"{series}/tone.npy",
                     f"{series}/short.npy", "-m", "smoothgrad,rise,lime,kernel-shap,pathway",
                     "--samples", "16", "--rise-masks", "16", q)]),
        Case("text", "raw text (.txt, .jsonl, --text) with --tokenizer: top2, -o, --npz, "
             "then a resumed rerun", [cli(*text_cmd), cli(*text_cmd)]),
        Case("text-ids-and-bad", "token ids in .npy and .npz, an unreadable .jsonl, pathway "
             "with --layers Erf", [
                 cli("attribute", f"{text}/bert.onnx", f"{text}/ids.npy", f"{text}/ids.npz",
                     f"{text}/bad.jsonl", *tok, "-m",
                     "gradient,input-x-gradient,occlusion,kernel-shap", "--samples", "32",
                     "-o", out, q),
                 cli("attribute", f"{text}/bert.onnx", f"{text}/ids.npy", "-m", "pathway",
                     "--layers", "Erf", "--token-reduce", "abs-sum", q)]),
        Case("text-ray", "raw text files on Ray", [
            cli("attribute", f"{text}/bert.onnx", *texts, *tok, "-m", "gradient", "-o", out,
                *ray, q)]),
        Case("pathway", "the pathway command: table, --masks, --export, --report; --json; "
             "other selections", [
                 cli("pathway", SHAPES, f"{SAMPLES}/star_0.png", "--prune", "75", "--masks",
                     "{case}/masks.npz", "--export", "{case}/pruned.onnx", "--report",
                     "{case}/pathway.html"),
                 cli("pathway", SHAPES, f"{SAMPLES}/heart_0.png", "--json", "--target", "ring"),
                 cli("pathway", DIGITS, "models/digits/3_0.png", "--selection", "random",
                     "--per-layer", "--keep", "30", "--json"),
                 cli("pathway", DIGITS, "models/digits/7_0.png", "--selection", "integrated",
                     "--json")]),
        Case("evaluate", "a small evaluate: 2 methods, every metric, 3 samples, all outputs", [
            cli("evaluate", SHAPES, *samples("star", "heart", "ring"), "-m",
                "gradient,pathway", "--metrics",
                "lerf,morf,deletion,insertion,road,sensitivity-n,sanity,pointing-game,"
                "relevance-mass", "--truth", "models/sample_masks", "--sanity-steps", "2",
                "--ns", "1,16", "--subsets", "4", "--road-fractions", "0.1,0.5",
                "--batch-size", "16", "--csv", "{case}/eval.csv", "-o", "{case}/out",
                "--plots", "{case}/plots", "--report", "{case}/eval.html", q)]),
        Case("evaluate-scenes", "evaluate on generated scenes, a method option", [
            cli("evaluate", SHAPES, "--scenes", "3", "--seed", "1", "-m",
                "gradcam,occlusion,pathway", "--set", "prune_percent=70", "--metrics",
                "lerf,pointing-game,relevance-mass", "--batch-size", "16", "--json")]),
        Case("check-grad", "check-grad: text, --json, --input, a failing tolerance", [
            cli("check-grad", DIGITS),
            cli("check-grad", SHAPES, "--json", "--directions", "4"),
            cli("check-grad", SHAPES, "--input", "{fix}/images/star_0.npy", "--directions",
                "3", "--target", "2"),
            cli("check-grad", DIGITS, "--tolerance", "1e-9", "--directions", "2")]),
        Case("export", "export: default and --target-independent", [
            cli("export", SHAPES, "-o", "{case}/shapes.grad.onnx", "--json"),
            cli("export", DIGITS, "-o", "{case}/digits.grad.onnx", "--target-independent")]),
        Case("inspect", "inspect on every model, text and --json, and an unreadable model", [
            cli("inspect", SHAPES),
            cli("inspect", EFFNET, "--json"),
            cli("inspect", DIGITS, "--json", "--size", "32x32"),
            cli("inspect", f"{table}/mlp_classifier.onnx", "--json"),
            cli("inspect", f"{series}/audio.onnx"),
            cli("inspect", f"{text}/bert.onnx", "--json", "--layers", "Relu,Erf"),
            cli("inspect", "{fix}/images/broken.onnx")]),
        Case("cache", "the cache command on a private cache folder", [
            cli("cache"),
            cli("attribute", SHAPES, *samples("star"), "-m", "gradient,pathway", q),
            cli("cache"), cli("cache", "--clear"), cli("cache")]),
        Case("usage-errors", "usage errors exit 2", [
            cli("attribute", SHAPES, *samples("star"), "-m", "nonsense", q),
            cli("attribute", SHAPES, *samples("star"), "--target", "banana", q),
            cli("attribute", "{fix}/images/broken.onnx", *samples("star"), q),
            cli("attribute", f"{text}/bert.onnx", "--text", "good", q)]),
        Case("api-image", "Explainer(...).attribute(x, method=...) and predict on the shapes "
             "model", [
                 Step(api={"model": SHAPES, "inputs": ["{fix}/images/star_0.npy",
                                                       "{fix}/images/heart_0.npy"],
                           "predict": True,
                           "calls": [{"method": "gradient"},
                                     {"method": "pathway", "options": {"prune_percent": 85}},
                                     {"method": "integrated-gradients", "target": [3, 4],
                                      "options": {"steps": 8}},
                                     {"method": "occlusion"}]}),
                 Step(api={"model": SHAPES, "inputs": ["{fix}/images/star_0.npy"],
                           "calls": [{"method": "gradcam", "target": 4},
                                     {"method": "smoothgrad", "options": {"samples": 4}}]})]),
        Case("api-text-table", "Explainer on token ids (a dict of arrays) and a table row", [
            Step(api={"model": f"{text}/bert.onnx", "npz": f"{text}/ids.npz",
                      "calls": [{"method": "gradient", "target": 0},
                                {"method": "integrated-gradients", "options": {"steps": 8}}]}),
            Step(api={"model": f"{table}/mlp_classifier.onnx", "inputs": [f"{table}/rows.npy"],
                      "calls": [{"method": "gradient"},
                                {"method": "kernel-shap", "options": {"samples": 64}}]})]),
    ]


# The Python API scenario, run in a subprocess with PYTHONPATH set to the checkout.
API_RUNNER = r'''
import hashlib, json, math, sys
import numpy as np
import onnxpath
from onnxpath import Explainer

def plain(value):
    if isinstance(value, np.ndarray):
        if value.size > 64:
            return {"shape": list(value.shape), "dtype": str(value.dtype),
                    "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
        return plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return repr(value)

def maps_digest(maps):
    maps = np.asarray(maps)
    return {"shape": list(maps.shape), "dtype": str(maps.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(maps).tobytes()).hexdigest()}

spec = json.loads(sys.argv[1])
explainer = Explainer(spec["model"])
if "npz" in spec:
    with np.load(spec["npz"]) as data:
        x = {k: data[k] for k in data.files}
else:
    arrays = [np.load(p) for p in spec["inputs"]]
    rank = max(a.ndim for a in arrays)
    x = arrays[0] if len(arrays) == 1 else \
        np.concatenate([a if a.ndim == rank else a[None] for a in arrays])
if spec.get("predict"):
    print(json.dumps({"predict": maps_digest(explainer.predict(x)),
                      "argmax": plain(np.argmax(explainer.predict(x), axis=-1))}))
for call in spec["calls"]:
    result = explainer.attribute(x, method=call["method"], target=call.get("target"),
                                 **call.get("options", {}))
    record = {"call": call, "method": result.method, "maps": maps_digest(result.maps)}
    for name in ("targets", "logits", "probs", "class_logits", "extras", "wrt", "kind",
                 "probabilities", "tokens", "feature_names"):
        record[name] = plain(getattr(result, name, "<missing>"))
    record["scores"] = maps_digest(result.scores())
    print(json.dumps(record))
'''

PREFLIGHT = "import onnxpath, sys; print(onnxpath.__file__); print(sys.version.split()[0])"


# ---------------------------------------------------------------------------------------------
# Fixtures: small deterministic models and inputs for the other modalities, built once


FIXTURE_FILES = [
    "images/star_0.npy", "images/heart_0.npy", "images/wrong.npy", "images/broken.png",
    "images/broken.onnx", "images/digit_labels.txt",
    "table/mlp_classifier.onnx", "table/customers.csv", "table/bad.csv", "table/rows.npy",
    "table/names.txt",
    "series/audio.onnx", "series/tone.npy", "series/tone.wav", "series/signal.csv",
    "series/broken.wav", "series/short.npy",
    "text/bert.onnx", "text/tokenizer.json", "text/reviews.txt", "text/more.jsonl",
    "text/ids.npy", "text/ids.npz", "text/bad.jsonl",
]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "movie", "was", "good", "bad", "great",
         "awful", "plot", "acting", "really", "not", "very", "film"]
FEATURES = ["age", "income", "tenure", "visits", "score", "balance"]


def build_fixtures(checkout: Path, fixtures: Path) -> None:
    """Build every fixture into a temp folder beside `fixtures`, then rename it into place."""
    import numpy as np

    staging = Path(tempfile.mkdtemp(prefix=fixtures.name + ".building-", dir=fixtures.parent))
    for sub in ("images", "table", "series", "text"):
        (staging / sub).mkdir()
    build_image_fixtures(checkout, staging / "images", np)
    build_table_fixtures(checkout, staging / "table", np)
    build_series_fixtures(staging / "series", np)
    build_text_fixtures(staging / "text", np)
    missing = [f for f in FIXTURE_FILES if not (staging / f).is_file()]
    if missing:
        raise SystemExit(f"fixture build left out {missing}")
    staging.chmod(0o755)
    staging.rename(fixtures)


def build_image_fixtures(checkout: Path, folder: Path, np) -> None:
    from PIL import Image

    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]

    def model_space(name: str):
        with Image.open(checkout / SAMPLES / f"{name}_0.png") as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return ((pixels.transpose(2, 0, 1) - mean) / std).astype(np.float32)

    np.save(folder / "star_0.npy", model_space("star"))
    np.save(folder / "heart_0.npy", model_space("heart")[None])
    np.save(folder / "wrong.npy", np.zeros((3, 32, 32), dtype=np.float32))
    (folder / "broken.png").write_bytes(b"this is not a picture\n")
    (folder / "broken.onnx").write_bytes(b"this is not a model\n")
    (folder / "digit_labels.txt").write_text(
        "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n")


def build_table_fixtures(checkout: Path, folder: Path, np) -> None:
    source = checkout / "tests" / "io" / "data" / "mlp_classifier.onnx"
    if not source.is_file():
        raise SystemExit(f"the table fixture copies {source}, which is missing")
    shutil.copyfile(source, folder / "mlp_classifier.onnx")
    rows = np.random.default_rng(7).standard_normal((5, 6))
    lines = [",".join(FEATURES)] + [",".join(f"{v:.6f}" for v in row) for row in rows]
    (folder / "customers.csv").write_text("\n".join(lines) + "\n")
    (folder / "bad.csv").write_text(",".join(FEATURES) + "\n1,2,n/a,4,5,6\n")
    np.save(folder / "rows.npy", rows[:2].astype(np.float32) * 0.5)
    (folder / "names.txt").write_text("\n".join(f"f_{n}" for n in FEATURES) + "\n")


def build_series_fixtures(folder: Path, np) -> None:
    import warnings
    import wave

    import onnx
    import torch
    from torch import nn

    length, rate = 256, 8000
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(1, 8, 9, padding=4), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    path = folder / "audio.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, length),), str(path), dynamo=False,
                          opset_version=17, input_names=["signal"], output_names=["logits"],
                          dynamic_axes={"signal": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {"sample_rate": str(rate)})
    onnx.save(proto, path)
    t = np.arange(length) / rate
    signal = (0.5 * np.sin(2 * np.pi * 440 * t) * np.hanning(length)
              + 0.1 * np.random.default_rng(0).standard_normal(length))
    with wave.open(str(folder / "tone.wav"), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.round(signal * 32767).astype(np.int16).tobytes())
    np.save(folder / "tone.npy", signal[None].astype(np.float32))
    chirp = np.sin(2 * np.pi * (200 + 2000 * t) * t) * 0.3
    (folder / "signal.csv").write_text("mic\n" + "\n".join(f"{v:.8f}" for v in chirp) + "\n")
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wave file")
    np.save(folder / "short.npy", signal[None, :100].astype(np.float32))


def build_text_fixtures(folder: Path, np) -> None:
    import math as m
    import warnings

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from torch import nn

    vocab, dim, heads, classes, max_len = 40, 16, 2, 3, 32

    class Bert(nn.Module):
        """A BERT-like classifier: embeddings, one attention + GELU block, a tanh pooler."""

        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(vocab, dim)
            self.position = nn.Embedding(max_len, dim)
            self.token_type = nn.Embedding(2, dim)
            self.norm = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.out = nn.Linear(dim, dim)
            self.norm1 = nn.LayerNorm(dim)
            self.ff1 = nn.Linear(dim, 2 * dim)
            self.ff2 = nn.Linear(2 * dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.pooler = nn.Linear(dim, dim)
            self.classifier = nn.Linear(dim, classes)

        def forward(self, input_ids, attention_mask, token_type_ids):
            n, t = input_ids.shape
            positions = torch.arange(t)[None]
            h = self.norm(self.word(input_ids) + self.position(positions)
                          + self.token_type(token_type_ids))
            bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0
            q, k, v = self.qkv(h).reshape(n, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / m.sqrt(dim // heads) + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, dim)
            h = self.norm1(h + self.out(context))
            h = self.norm2(h + self.ff2(nn.functional.gelu(self.ff1(h))))
            return self.classifier(torch.tanh(self.pooler(h[:, 0])))

    torch.manual_seed(0)
    model = Bert().eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                          str(folder / "bert.onnx"), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["logits"],
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                        "token_type_ids": dynamic, "logits": {0: "batch"}})
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)},
                                           unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "reviews.txt").write_text("the movie was really good\n\nawful plot\n")
    (folder / "more.jsonl").write_text('{"text": "not very good acting"}\n'
                                       '{"text": "a great great film"}\n')
    np.save(folder / "ids.npy", np.array([[2, 4, 6, 7, 10, 8, 3]], dtype=np.int64))
    np.savez(folder / "ids.npz",
             input_ids=np.array([[2, 5, 14, 15, 9, 3, 0, 0]], dtype=np.int64),
             attention_mask=np.array([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=np.int64))
    (folder / "bad.jsonl").write_text('{"text": "good"}\nnot json at all\n')


# ---------------------------------------------------------------------------------------------
# Normalisation


ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)")
TIMING = re.compile(r"\b\d+(?:\.\d+)?(?:e-?\d+)?\s?(?:ms|s|sec|seconds|min)\b")
DATA_URI = re.compile(r"data:([\w/+.-]+);base64,([A-Za-z0-9+/=]+)")
RAY_NOISE = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[ _T]\d{2}[:-]\d{2}[:-]\d{2}(?:[,.]\d+)?(?:_\d+)?"), "<TS>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<ID>"),
    (re.compile(r"\bpid=\d+"), "pid=<PID>"),
    (re.compile(r"^\[<TS> (\w) \d+ \d+\]"), r"[<TS> \1 <PID>]"),
    (re.compile(r"(?:/tmp|/var/tmp)/ray/session_[^/\s]+"), "<RAYSESSION>"),
    (re.compile(r"\b(?:127\.0\.0\.1|localhost|\d+\.\d+\.\d+\.\d+):\d+\b"), "<ADDR>"),
]


class Normaliser:
    """Makes strings independent of where this recording ran: the checkout, the fixtures, the
    case folder, its cache, the temp root and the Python environment become placeholders."""

    def __init__(self, roots: dict[str, Path]):
        pairs = []
        for name, path in roots.items():
            for spelling in {str(path), os.path.realpath(path)}:
                pairs.append((spelling.rstrip("/"), f"<{name}>"))
        self.pairs = sorted(pairs, key=lambda p: -len(p[0]))

    def path(self, text: str) -> str:
        for spelling, placeholder in self.pairs:
            text = text.replace(spelling, placeholder)
        return text

    def value(self, value):
        """JSON value: timing keys dropped, paths replaced, NaN/inf as strings."""
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items() if not is_timing_key(k)}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.path(value)
        if isinstance(value, float) and not math.isfinite(value):
            return repr(value)
        return value

    def stderr(self, text: str) -> list[str]:
        lines = []
        for raw in ANSI.sub("", text).splitlines():
            line = raw.split("\r")[-1].rstrip()  # a progress bar: its last state only
            if not line.strip():
                continue
            line = TIMING.sub("<T>", self.path(line))
            for pattern, replacement in RAY_NOISE:
                line = pattern.sub(replacement, line)
            lines.append(line)
        return lines


def is_timing_key(key: str) -> bool:
    return key in TIMING_KEYS or key.endswith("_seconds") or key.endswith("_time_ms")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False)


def parse_stdout(text: str, norm: Normaliser) -> list[dict]:
    text = ANSI.sub("", text)
    if not text.strip():
        return []
    if "\n" in text.strip():
        try:  # one pretty-printed JSON document
            return [{"json": norm.value(json.loads(text))}]
        except ValueError:
            pass
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, (dict, list)):
            entries.append({"json": norm.value(value)})
        else:
            entries.append({"text": norm.path(line.rstrip())})
    return entries


def normalise_html(text: str, norm: Normaliser) -> str:
    def image(match: re.Match) -> str:
        return f"data:{match.group(1)};sha256={sha256(base64.b64decode(match.group(2)))[:20]}"

    text = DATA_URI.sub(image, text)
    text = re.sub(r">(?=<)", ">\n", text)  # one tag a line, so that a diff reads well
    return TIMING.sub("<T>", norm.path(text))


def npz_digest(data: bytes) -> tuple[str, list[str]]:
    """A digest of an .npz's arrays (name, dtype, shape, bytes, in archive order), blind to the
    zip's timestamps; and the names."""
    import numpy as np

    digest, names = hashlib.sha256(), []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            names.append(info.filename)
            with archive.open(info) as member:
                array = np.lib.format.read_array(member, allow_pickle=False)
            digest.update(f"{info.filename}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest(), names


def describe_file(path: Path, norm: Normaliser) -> tuple[dict, str | None]:
    """(record, normalised text to keep beside the record, or None)."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            text = canonical_json(norm.value(json.loads(data)))
            return {"kind": "json", "digest": sha256(text.encode())}, text
        except ValueError:
            pass
    if suffix in (".html", ".htm"):
        text = normalise_html(data.decode("utf-8", "replace"), norm)
        return {"kind": "html", "digest": sha256(text.encode())}, text
    if suffix == ".npz":
        try:
            digest, names = npz_digest(data)
            return {"kind": "npz", "digest": digest, "arrays": names}, None
        except (zipfile.BadZipFile, ValueError, OSError):
            pass
    if suffix in (".csv", ".txt", ".jsonl", ".svg", ".md"):
        text = norm.path(data.decode("utf-8", "replace"))
        return {"kind": "text", "digest": sha256(text.encode())}, text
    record = {"kind": "raw", "sha256": sha256(data), "size": len(data)}
    if suffix == ".npy":  # to tell a rounding difference from a real one at a glance
        record.update(npy_summary(data))
    return record, None


def npy_summary(data: bytes) -> dict:
    import numpy as np

    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
        values = array.astype(np.float64)
    except (ValueError, TypeError, OSError):
        return {}
    stats = {"sum": float(values.sum()), "absmax": float(np.abs(values).max(initial=0.0))}
    return {"shape": list(array.shape), "dtype": str(array.dtype),
            **{k: v if math.isfinite(v) else repr(v) for k, v in stats.items()}}


def snapshot(folder: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = (info.st_ino, info.st_mtime_ns,
                                                         info.st_size)
    return found


# ---------------------------------------------------------------------------------------------
# Recording


def environment(checkout: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ONNXPATH_", "RAY_")) and k not in ("PYTHONPATH", "COLUMNS",
                                                                     "LINES")}
    env.update(PYTHONPATH=str(checkout), ONNXPATH_CACHE_DIR=str(cache), COLUMNS="100",
               LINES="50", PYTHONIOENCODING="utf-8")
    return env


def expand(text: str, fixtures: Path, case: Path) -> str:
    return text.replace("{fix}", str(fixtures)).replace("{case}", str(case))


def run_step(step: Step, checkout: Path, fixtures: Path, case: Path, cache: Path,
             python: str) -> subprocess.CompletedProcess:
    if step.argv is not None:
        command = [python, "cli.py", *(expand(a, fixtures, case) for a in step.argv)]
    else:
        spec = json.loads(expand(json.dumps(step.api), fixtures, case))
        command = [python, "-c", API_RUNNER, json.dumps(spec)]
    return subprocess.run(command, cwd=checkout, env=environment(checkout, cache),
                          input=(step.stdin or "").encode(), capture_output=True,
                          timeout=STEP_TIMEOUT)


def record_case(case: Case, checkout: Path, fixtures: Path, root: Path, python: str,
                keep_files: Path) -> dict:
    folder = root / case.name
    work, cache = folder / "case", folder / "cache"
    work.mkdir(parents=True)
    cache.mkdir()
    norm = Normaliser({"CASE": work, "CACHE": cache, "FIX": fixtures, "CHECKOUT": checkout,
                       "TMP": root, "VENV": Path(sys.prefix)})
    steps, before = [], {}
    for number, step in enumerate(case.steps):
        done = run_step(step, checkout, fixtures, work, cache, python)
        after = snapshot(work)
        files = {}
        for rel in after:
            files[rel], text = describe_file(work / rel, norm)
            if text is not None:
                keep = keep_files / case.name / str(number) / rel
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_text(text, encoding="utf-8")
        steps.append({
            "argv": step.argv, "api": step.api, "stdin": step.stdin,
            "exit": done.returncode,
            "stdout": parse_stdout(done.stdout.decode("utf-8", "replace"), norm),
            "stderr": norm.stderr(done.stderr.decode("utf-8", "replace")),
            "files": files,
            # With an earlier step: the files this one wrote again (resume leaves them alone).
            "rewritten": sorted(r for r in after if r in before and after[r] != before[r])
            if number else [],
            "removed": sorted(r for r in before if r not in after),
        })
        before = after
    return {"what": case.what, "steps": steps}


def preflight(checkout: Path, python: str, root: Path) -> dict:
    done = subprocess.run([python, "-c", PREFLIGHT], cwd=checkout, capture_output=True,
                          text=True, env=environment(checkout, root / "preflight-cache"))
    if done.returncode:
        raise SystemExit(f"cannot import onnxpath from {checkout}:\n{done.stderr}")
    where, version = done.stdout.split()
    print(f"onnxpath imported from {where}", file=sys.stderr)
    if not Path(where).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"onnxpath was imported from {where}, not from the checkout {checkout}")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                            text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=checkout, capture_output=True,
                           text=True)
    return {"onnxpath_file": Path(where).resolve().relative_to(checkout.resolve()).as_posix(),
            "python": version,
            "commit": commit.stdout.strip() if commit.returncode == 0 else None,
            "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def digests(folder: Path, names: list[str]) -> dict[str, str | None]:
    return {n: sha256((folder / n).read_bytes()) if (folder / n).is_file() else None
            for n in names}


def record(checkout: Path, fixtures: Path, out: Path, only: list[str], keep: bool) -> int:
    checkout, fixtures, out = checkout.resolve(), fixtures.resolve(), out.resolve()
    if not (checkout / "cli.py").is_file():
        raise SystemExit(f"{checkout} has no cli.py")
    if fixtures.exists():
        missing = [f for f in FIXTURE_FILES if not (fixtures / f).is_file()]
        if missing:
            raise SystemExit(f"{fixtures} exists but lacks {missing}; remove it to rebuild")
        print(f"reusing the fixtures in {fixtures}", file=sys.stderr)
    else:
        fixtures.parent.mkdir(parents=True, exist_ok=True)
        print(f"building the fixtures into {fixtures}", file=sys.stderr)
        build_fixtures(checkout, fixtures)
    selected = [c for c in cases() if not only or c.name in only]
    if only and len(selected) != len(only):
        raise SystemExit(f"unknown cases: {sorted(set(only) - {c.name for c in cases()})}")
    if out.exists():
        shutil.rmtree(out)
    (out / "files").mkdir(parents=True)
    python = sys.executable
    root = Path(tempfile.mkdtemp(prefix="golden-"))
    started = time.monotonic()
    try:
        meta = preflight(checkout, python, root)
        meta["fixtures"] = digests(fixtures, FIXTURE_FILES)
        meta["shipped"] = digests(checkout, SHIPPED)
        meta["only"] = sorted(only)
        meta["recorder"] = sha256(Path(__file__).read_bytes())[:16]
        results = {}
        for case in selected:
            began = time.monotonic()
            results[case.name] = record_case(case, checkout, fixtures, root, python,
                                             out / "files")
            exits = [s["exit"] for s in results[case.name]["steps"]]
            print(f"{case.name:28s} {time.monotonic() - began:6.1f} s  exit {exits}",
                  file=sys.stderr)
    finally:
        if keep:
            print(f"kept the case folders in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    (out / "records.json").write_text(canonical_json({"format": FORMAT, "meta": meta,
                                                       "cases": results}) + "\n")
    print(f"recorded {len(results)} cases in {meta['seconds']} s into {out}/records.json",
          file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# Comparing


def deep_diff(a, b, where: str, found: list[str], limit: int = 20) -> None:
    if len(found) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                found.append(f"{where}.{key}: only in B ({short(b[key])})")
            elif key not in b:
                found.append(f"{where}.{key}: only in A ({short(a[key])})")
            else:
                deep_diff(a[key], b[key], f"{where}.{key}", found, limit)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{where}: {len(a)} items in A, {len(b)} in B")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            deep_diff(x, y, f"{where}[{i}]", found, limit)
    elif (a != b or type(a) is not type(b)) and not (isinstance(a, float) and
                                                     isinstance(b, float) and a != a and b != b):
        found.append(f"{where}: A {short(a)} != B {short(b)}")


def short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."


def text_diff(a: Path, b: Path, lines: int = 30) -> list[str]:
    """A unified diff of two kept normalised texts (JSON, HTML, CSV), when both were kept."""
    if not (a.is_file() and b.is_file()):
        return []
    diff = list(difflib.unified_diff(a.read_text().splitlines(), b.read_text().splitlines(),
                                     "A", "B", n=1, lineterm=""))[2:]
    cut = [line if len(line) <= 200 else line[:197] + "..." for line in diff[:lines]]
    return cut + ([f"... {len(diff) - lines} more diff lines"] if len(diff) > lines else [])


def compare(a_dir: Path, b_dir: Path) -> int:
    """Print every difference between two recordings; 1 if any (stderr: warnings only)."""
    a = json.loads((a_dir / "records.json").read_text())
    b = json.loads((b_dir / "records.json").read_text())
    for key in ("commit", "dirty", "onnxpath_file", "python", "seconds", "recorder"):
        print(f"meta {key}: A {a['meta'].get(key)!r}, B {b['meta'].get(key)!r}")
    if a.get("format") != b.get("format"):
        print(f"\nthe recordings have different formats ({a.get('format')}, {b.get('format')}): "
              "record both with the same record.py")
        return 1
    if a["meta"].get("recorder") != b["meta"].get("recorder"):
        print("note: the two recordings were made by different versions of record.py")
    failures: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    general = []
    for key in ("fixtures", "shipped"):
        found: list[str] = []
        deep_diff(a["meta"].get(key), b["meta"].get(key), f"meta.{key}", found)
        general += [f"the input files differ, results cannot be compared: {f}" for f in found]
    if general:
        failures["(inputs)"] = general
    for name in sorted(set(a["cases"]) | set(b["cases"])):
        if name not in a["cases"] or name not in b["cases"]:
            side, other = ("A", b) if name in a["cases"] else ("B", a)
            if other["meta"].get("only"):
                print(f"case {name}: only in {side} (the other recording used --only)")
            else:
                failures[name] = [f"only in {side}"]
            continue
        failures[name], warnings[name] = compare_case(a["cases"][name], b["cases"][name],
                                                      f"{a_dir}/files/{name}",
                                                      f"{b_dir}/files/{name}")
    warned = {k: v for k, v in warnings.items() if v}
    failed = {k: v for k, v in failures.items() if v}
    if warned:
        print(f"\nstderr differs in {len(warned)} case(s) (warnings, not failures):")
        for name, lines in warned.items():
            print(f"== {name}")
            print("\n".join("  " + line for line in lines))
    if failed:
        print(f"\ndifferences in {len(failed)} case(s):")
        for name, lines in failed.items():
            print(f"== {name}")
            print("\n".join("  " + line for line in lines))
        print(f"\nDIFFERENT: {', '.join(failed)}")
        return 1
    print(f"\nidentical: {len(a['cases'])} cases"
          + (f" (stderr differs in {len(warned)}: {', '.join(warned)})" if warned else ""))
    return 0


def compare_case(a: dict, b: dict, a_files: str, b_files: str) -> tuple[list[str], list[str]]:
    """(differences, stderr differences) between one case's two records."""
    failures: list[str] = []
    warnings: list[str] = []
    if len(a["steps"]) != len(b["steps"]):
        failures.append(f"{len(a['steps'])} steps in A, {len(b['steps'])} in B")
    for number, (x, y) in enumerate(zip(a["steps"], b["steps"], strict=False)):
        where = f"step {number}"
        if (x["argv"], x["api"], x["stdin"]) != (y["argv"], y["api"], y["stdin"]):
            failures.append(f"{where}: defined differently: {short(x['argv'] or x['api'])} / "
                            f"{short(y['argv'] or y['api'])}")
            continue
        if x["exit"] != y["exit"]:
            failures.append(f"{where}: exit {x['exit']} != {y['exit']}")
        found: list[str] = []
        deep_diff(x["stdout"], y["stdout"], "stdout", found)
        failures += [f"{where}: {f}" for f in found]
        for key in ("rewritten", "removed"):
            if x[key] != y[key]:
                failures.append(f"{where}: files {key}: A {x[key]} != B {y[key]}")
        shown = 0
        for rel in sorted(set(x["files"]) | set(y["files"])):
            if rel not in x["files"] or rel not in y["files"]:
                failures.append(f"{where}: file {rel} only in "
                                f"{'A' if rel in x['files'] else 'B'}")
            elif x["files"][rel] != y["files"][rel]:
                failures.append(f"{where}: file {rel} differs: {short(x['files'][rel])} / "
                                f"{short(y['files'][rel])}")
                diff = text_diff(Path(a_files, str(number), rel), Path(b_files, str(number), rel))
                if diff and shown < 3:  # the normalised texts of the first few
                    shown += 1
                    failures += ["    " + line for line in diff]
        if x["stderr"] != y["stderr"]:
            diff = list(difflib.unified_diff(x["stderr"], y["stderr"], "A", "B", n=0,
                                             lineterm=""))[2:]
            warnings.append(f"{where}: stderr differs:")
            warnings += ["    " + line for line in diff[:20]]
    return failures, warnings


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, help="the onnxpath checkout to run")
    parser.add_argument("--fixtures", type=Path, help="fixture folder (built if missing)")
    parser.add_argument("--out", type=Path, help="where to write records.json")
    parser.add_argument("--only", action="append", default=[], help="record only this case")
    parser.add_argument("--keep", action="store_true", help="keep the case folders")
    parser.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("RECDIR_A", "RECDIR_B"))
    args = parser.parse_args(argv)
    if args.list:
        for case in cases():
            print(f"{case.name:28s} {case.what}")
        return 0
    if args.compare:
        return compare(*args.compare)
    if not (args.checkout and args.fixtures and args.out):
        parser.error("--checkout, --fixtures and --out are needed to record")
    return record(args.checkout, args.fixtures, args.out, args.only, args.keep)


if __name__ == "__main__":
    sys.exit(main())
