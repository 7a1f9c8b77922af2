"""Procedural "shapes in clutter" scenes with a ground-truth object mask.

Each scene is a 64x64 RGB image: a cluttered background (two-colour gradient, smooth colour
noise, pixel noise, a few distractor blobs and lines) with exactly one foreground object drawn
on top. The object's class is its *shape*; its colour, size, position, rotation and aspect are
drawn independently of the class, so colour or size cannot give the class away.

The mask marks the object's pixels, which makes the scenes a ground-truth localisation benchmark
for attribution maps: a good map should put its mass inside the mask.

Only numpy and Pillow are used, because onnxpath's evaluation code imports this module at run
time and must not depend on torch. Every random draw comes from the ``numpy.random.Generator``
passed in, so a seed fixes the scene exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: list[str] = [
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "hexagon",
    "heart",
]

SIZE = 64
# Shapes are rasterised at SUPERSAMPLE x the image size and box-filtered down, which gives
# anti-aliased edges (alpha) and a mask that follows the edge at sub-pixel accuracy.
SUPERSAMPLE = 4
# Bounding radius of the object, in pixels of the 64x64 image.
MIN_RADIUS = 9.0
MAX_RADIUS = 19.0
# Minimal Euclidean RGB distance (0..441) between the object colour and the mean background
# under it, so the object is always visible; the colour itself is uniform otherwise.
MIN_CONTRAST = 90.0


def _unit_outline(name: str) -> list[np.ndarray]:
    """Polygons (in units of the bounding radius, centred on 0) that make up a shape.

    A shape is a list of polygons drawn in order: the first is filled, and for shapes in
    ``_HOLES`` the later ones are cut out again (only the ring has a hole).
    """
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        return [np.stack([np.cos(t), np.sin(t)], 1)]
    if name == "ring":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        circle = np.stack([np.cos(t), np.sin(t)], 1)
        return [circle, 0.55 * circle]
    if name == "square":
        s = 1 / np.sqrt(2)
        return [np.array([[-s, -s], [s, -s], [s, s], [-s, s]])]
    if name in ("triangle", "hexagon"):
        k = 3 if name == "triangle" else 6
        t = np.arange(k) * 2 * np.pi / k - np.pi / 2
        return [np.stack([np.cos(t), np.sin(t)], 1)]
    if name == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [np.stack([r * np.cos(t), r * np.sin(t)], 1)]
    if name == "cross":
        a, b = 0.95, 0.32  # arm half-length and half-width
        pts = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
        return [np.array(pts, dtype=float)]
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y + 2.5], 1)
        return [pts / np.abs(pts).max()]
    raise ValueError(f"unknown shape {name!r}")


_OUTLINES = {name: _unit_outline(name) for name in CLASSES}
_HOLES = {"ring"}


def _object_alpha(rng: np.random.Generator, cls: int) -> np.ndarray:
    """Anti-aliased coverage (float32 HxW in [0,1]) of one randomly placed object."""
    name = CLASSES[cls]
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS)
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.8, 1.2)  # mild anisotropic stretch, before rotation
    margin = radius * max(aspect, 1 / aspect) ** 0.5 + 1.0
    cx = rng.uniform(margin, SIZE - margin)
    cy = rng.uniform(margin, SIZE - margin)

    stretch = np.array([aspect**0.5, aspect**-0.5])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    big = SIZE * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for i, poly in enumerate(_OUTLINES[name]):
        pts = (poly * stretch) @ rot.T * radius + np.array([cx, cy])
        pts = [tuple(p) for p in (pts * SUPERSAMPLE)]
        fill = 0 if (i > 0 and name in _HOLES) else 255
        draw.polygon(pts, fill=fill)
    small = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator) -> np.ndarray:
    """Cluttered background, float32 HxWx3 in [0,255]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(theta) * xx + np.sin(theta) * yy
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    img = c0 + (c1 - c0) * ramp[..., None]

    # Smooth colour noise: a coarse random grid upsampled bicubically.
    cells = int(rng.integers(3, 9))
    coarse = rng.normal(0, rng.uniform(10, 35), size=(cells, cells, 3)).astype(np.float32)
    smooth = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(coarse[..., c])).resize(
                    (SIZE, SIZE), Image.Resampling.BICUBIC
                )
            )
            for c in range(3)
        ],
        -1,
    )
    img = img + smooth

    # Distractors: small blobs and thin lines in random colours, drawn under the object.
    layer = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(1, 5))):
        r = rng.uniform(1.5, 3.5)
        x, y = rng.uniform(0, SIZE, size=2)
        rx, ry = r * rng.uniform(0.6, 1.4), r * rng.uniform(0.6, 1.4)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=tuple(rng.integers(0, 256, 3).tolist()))
    for _ in range(int(rng.integers(1, 4))):
        x0, y0, x1, y1 = rng.uniform(-8, SIZE + 8, size=4)
        draw.line(
            [x0, y0, x1, y1],
            fill=tuple(rng.integers(0, 256, 3).tolist()),
            width=int(rng.integers(1, 3)),
        )
    layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8)))
    return np.asarray(layer, dtype=np.float32)


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A uniformly random RGB colour, redrawn until it stands out from ``under``."""
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            return colour
    # Fall back to the colour furthest from the background (rare: mid-grey backgrounds).
    return np.where(under > 127.5, 0.0, 255.0)


def make_scene(
    rng: np.random.Generator, cls: int | None = None
) -> tuple[np.ndarray, int, np.ndarray]:
    """One scene: ``(image uint8 [64,64,3], label int, mask bool [64,64])``.

    ``cls`` picks the object's class; None draws it uniformly. The mask is the set of pixels
    whose anti-aliased object coverage is at least one half.
    """
    label = int(rng.integers(len(CLASSES))) if cls is None else int(cls)
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"class index {label} out of range 0..{len(CLASSES) - 1}")
    img = _background(rng)
    alpha = _object_alpha(rng, label)
    mask = alpha >= 0.5

    under = img[mask].mean(0)
    colour = _object_colour(rng, under)
    # A faint shading gradient across the object, so it is not a perfectly flat colour patch.
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE - 0.5
    g = rng.normal(0, 25, size=2)
    shading = (g[0] * xx + g[1] * yy)[..., None]
    obj = np.clip(colour + shading, 0, 255)
    img = img * (1 - alpha[..., None]) + obj * alpha[..., None]

    img = img + rng.normal(0, rng.uniform(2, 12), size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, label, mask


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` scenes from ``seed``: images uint8 [n,64,64,3], labels int64 [n], masks bool [n,64,64].

    Classes are balanced (as equal as ``n`` allows) and shuffled.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.empty((n, SIZE, SIZE), dtype=bool)
    for i, cls in enumerate(labels):
        images[i], _, masks[i] = make_scene(rng, int(cls))
    return images, labels, masks
