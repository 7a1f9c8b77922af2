"""What several commands share: parsing option values, the preprocessing recipe, JSON lines."""

from __future__ import annotations

import json
import sys
from fractions import Fraction

from ..errors import UsageError
from ..explainer import Explainer
from ..imaging import Preprocess, resolve_preprocess


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise UsageError(f"{option} takes comma-separated numbers, got '{text}'") from err


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError as err:
        raise UsageError(f"{option} takes HxW (e.g. 224x224), got '{text}'") from err
    if h < 1 or w < 1:
        raise UsageError(f"{option} must be positive, got '{text}'")
    return h, w


def parse_scale(text: str | None) -> float | None:
    """A number or a fraction: 0.00392, 1/255, 2/255."""
    if text is None:
        return None
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as err:
        raise UsageError(f"--scale takes a number or a fraction (e.g. 1/255), got '{text}'") \
            from err


def build_preprocess(explainer: Explainer, preset: str | None, size=None, mean=None, std=None,
                     *, config=None, resize: int | None = None, crop: bool | None = None,
                     scale: float | None = None, bgr: bool | None = None,
                     layout: str | None = None, gray: bool | None = None) -> Preprocess:
    """The model's recipe with the user's preset, JSON file and flags applied, in that order."""
    if resize is not None and resize < 0:
        raise UsageError(f"--resize must be 0 (no crop) or positive, got {resize}")
    return resolve_preprocess(explainer.input_shape, explainer.proto, preset, config,
                              size=size, mean=mean, std=std, resize=resize, crop=crop,
                              scale=scale, bgr=bgr, layout=layout, gray=gray)


def emit(record: dict, stream=None) -> None:
    """One JSON line on stdout (or `stream`), flushed so `| jq` sees it while the batch runs."""
    stream = stream or sys.stdout
    stream.write(json.dumps(record) + "\n")
    stream.flush()
