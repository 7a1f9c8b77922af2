"""Synthetic attribute records, shaped like the pipeline's JSON lines, with real PNG files."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ["circle", "square", "star"]
METHODS = ["gradient", "pathway", "gradcam"]


def picture(path: Path, seed: int, size: int = 32) -> Path:
    """A small image with a block of colour whose place depends on `seed`."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size, size, 3), 235, dtype=np.uint8)
    y, x = rng.integers(0, size // 2, 2)
    pixels[y:y + size // 2, x:x + size // 2] = rng.integers(0, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def records(folder: Path, count: int, methods=METHODS, size: int = 32,
            failing: set[int] = frozenset()) -> list[dict]:
    """`count` inputs × `methods` records; inputs in `failing` carry an error on every
    method, as an unreadable input does."""
    out = []
    for i in range(count):
        source = picture(folder / "in" / f"input_{i:03d}.png", i, size)
        c = i % len(LABELS)
        probs = np.roll(np.array([0.7, 0.2, 0.1]) - 0.001 * (i % 50), c)
        top = sorted(({"class": k, "label": LABELS[k], "logit": float(np.log(p)),
                       "prob": float(p)} for k, p in enumerate(probs)),
                     key=lambda t: -t["prob"])
        for method in methods:
            if i in failing:
                out.append({"input": str(source), "method": method, "target": None,
                            "label": None, "logit": None, "prob": None, "top": [],
                            "outputs": {}, "params": {}, "time_ms": None,
                            "error": f"cannot read {source}: truncated file", "extras": {}})
                continue
            overlay = picture(folder / "out" / f"input_{i:03d}.{method}.png",
                              1000 * (1 + METHODS.index(method)) + i, size)
            extras = ({"kept_percent": 15.0 + i % 3, "output_change": 0.01 * (i % 7),
                       "prune_percent": 85.0, "selection": "contribution"}
                      if method == "pathway" else {})
            params = {"prune_percent": 85.0, "seed": 0} if method == "pathway" else {}
            out.append({"input": str(source), "method": method, "target": top[0]["class"],
                        "label": top[0]["label"], "logit": top[0]["logit"],
                        "prob": top[0]["prob"], "top": top,
                        "outputs": {"png": str(overlay)}, "params": params,
                        "time_ms": 1.5, "error": None, "extras": extras})
    return out


class Elements(HTMLParser):
    """Every start tag with its attributes, and whether the tags nest properly."""

    VOID = {"meta", "img", "input", "br", "link", "stop", "rect", "line", "circle",
            "polyline", "polygon", "path"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag
                and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]
