"""ROAD's noisy linear imputation against scipy's sparse direct solve, and the protocol on a
model where only one pixel matters."""

import numpy as np
import pytest
from eval_models import model_forward, one_pixel_model
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from onnxpath.evaluate.perturbation import softmax
from onnxpath.evaluate.road import impute, road

NEIGHBOURS = [((dy, dx), 1 / 12 if dy and dx else 1 / 6)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def spsolve_imputation(image, removed):
    """ROAD's own construction: one equation per removed pixel, solved by spsolve."""
    c, h, w = image.shape
    unknown = np.flatnonzero(removed.ravel())
    index = {p: k for k, p in enumerate(unknown)}
    a = lil_matrix((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for k, p in enumerate(unknown):
        r, col = divmod(p, w)
        for (dy, dx), weight in NEIGHBOURS:
            rr, cc = r + dy, col + dx
            if 0 <= rr < h and 0 <= cc < w:
                a[k, k] += weight
                q = rr * w + cc
                if q in index:
                    a[k, index[q]] -= weight
                else:
                    b[k] += weight * image[:, rr, cc]
    out = image.reshape(c, -1).copy()
    out[:, unknown] = spsolve(a.tocsc(), b).reshape(len(unknown), c).T
    return out.reshape(c, h, w)


@pytest.mark.parametrize("pattern", ["random", "blob", "border"])
def test_imputation_matches_spsolve(pattern):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 20, 24))
    rows, cols = np.mgrid[0:20, 0:24]
    removed = {"random": rng.random((20, 24)) < 0.6,
               "blob": (rows - 9) ** 2 + (cols - 12) ** 2 < 60,
               "border": (rows < 3) | (cols > 20)}[pattern]
    exact = spsolve_imputation(image, removed)
    tight = impute(image[None].astype(np.float64), removed[None], noise=0.0, tolerance=1e-9)[0]
    np.testing.assert_allclose(tight, exact, atol=1e-5)
    # The default tolerance stays far below the imputation noise (std 0.01).
    default = impute(image[None], removed[None], noise=0.0)[0]
    np.testing.assert_allclose(default, exact, atol=1e-3)


def test_noise_is_added_to_removed_pixels_only():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 3, 32, 32))
    removed = rng.random((2, 32, 32)) < 0.5
    clean = impute(image, removed, noise=0.0)
    noisy = impute(image, removed, noise=0.01, rng=np.random.default_rng(5))
    diff = (noisy - clean).transpose(0, 2, 3, 1)
    assert np.abs(diff[~removed]).max() == 0
    assert diff[removed].std() == pytest.approx(0.01, rel=0.05)


def test_road_lerf_keeps_the_only_pixel_that_matters():
    x = np.random.default_rng(2).uniform(0.5, 1.5, (3, 3, 8, 8)).astype(np.float32)
    heat = np.zeros((3, 8, 8))
    heat[:, 2, 5] = 1.0
    forward = model_forward(one_pixel_model(pixel=(2, 5)))
    targets = softmax(forward(x)).argmax(1)
    p = softmax(forward(x))[np.arange(3), targets]
    probs, acc = road(forward, x, heat, targets, order="lerf")
    np.testing.assert_allclose(probs, np.repeat(p[:, None], 7, axis=1), rtol=1e-6)
    assert (acc == 1).all()
    probs, _ = road(forward, x, heat, targets, order="morf", fractions=(0.1,))
    assert (np.abs(probs[:, 0] - p) > 1e-4).all()  # the pixel was imputed, the output moved


def test_systems_leaving_the_batch_keep_their_solution():
    """Converged systems leave the conjugate-gradient batch (road.solve): each system of a
    batch of fractions and channels must come out exactly as it does when solved alone."""
    from onnxpath.evaluate.road import solve
    rng = np.random.default_rng(3)
    images = rng.standard_normal((4, 3, 24, 20)).astype(np.float32)
    rows, cols = np.mgrid[0:24, 0:20]
    removed = np.stack([rng.random((24, 20)) < 0.1, rng.random((24, 20)) < 0.8,
                        (rows - 12) ** 2 + (cols - 9) ** 2 < 50, (rows < 4) | (cols > 15)])
    together = solve(images, removed[:, None])
    alone = np.stack([solve(images[i:i + 1, c:c + 1], removed[i:i + 1, None])[0, 0]
                      for i in range(4) for c in range(3)]).reshape(together.shape)
    print(f"largest difference batched vs alone: {np.abs(together - alone).max():.3g}")
    assert np.array_equal(together, alone)
