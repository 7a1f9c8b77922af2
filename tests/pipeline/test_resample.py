"""The resampling filter of the preprocessing recipe (`resample` in the JSON / metadata)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onnxpath.errors import UsageError
from onnxpath.io.image import to_tensor
from onnxpath.io.preprocess import from_json

RECIPE = {"size": [24, 24], "resize": 32, "crop": True, "scale": 1.0, "mean": [127.0] * 3,
          "std": [128.0] * 3}


def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def reference(img: Image.Image, resample) -> np.ndarray:
    """Shorter side to 32 with Pillow's own filter, centre crop 24, (x - 127) / 128."""
    small = img.resize((43, 32), resample)  # 64 × 32/48 = 42.67 -> 43
    left, top = (43 - 24) // 2, (32 - 24) // 2
    crop = np.asarray(small.crop((left, top, left + 24, top + 24)), dtype=np.float32)
    return ((crop - 127.0) / 128.0).transpose(2, 0, 1)


@pytest.mark.parametrize("value, resample", [
    ("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR),
    (3, Image.Resampling.BICUBIC),  # Hugging Face's preprocessor_config.json: Pillow's code
    (None, Image.Resampling.BILINEAR),  # no key: bilinear, as before
])
def test_resize_uses_the_recipes_filter(value, resample):
    recipe = dict(RECIPE) if value is None else {**RECIPE, "resample": value}
    prep = from_json(recipe)
    x, _ = to_tensor(photo(), prep, (24, 24), 3)
    np.testing.assert_allclose(x, reference(photo(), resample), atol=1e-6)


def test_bicubic_and_bilinear_differ_on_this_photo():
    a = to_tensor(photo(), from_json({**RECIPE, "resample": "bicubic"}), (24, 24), 3)[0]
    b = to_tensor(photo(), from_json({**RECIPE, "resample": "bilinear"}), (24, 24), 3)[0]
    assert np.abs(a - b).max() > 0.05


@pytest.mark.parametrize("value", ["cubic-ish", 42, True])
def test_unknown_filters_are_usage_errors(value):
    with pytest.raises(UsageError, match="resample"):
        from_json({**RECIPE, "resample": value})
