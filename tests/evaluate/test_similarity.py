"""Spearman, SSIM and HOG against scipy and against slow, loop-by-loop references."""

import numpy as np
import pytest
from scipy import stats

from onnxpath.evaluate.similarity import hog, pearson, rankdata, spearman, ssim


def test_rankdata_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, size=200).astype(float)
    np.testing.assert_allclose(rankdata(values), stats.rankdata(values))


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_and_pearson_match_scipy(ties):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 300))
    if ties:
        a, b = np.round(a), np.maximum(b, 0)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)


def test_correlation_of_a_constant_map_is_undefined():
    assert np.isnan(spearman(np.zeros(10), np.arange(10)))


def slow_ssim(a, b, window, data_range):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - window + 1):
        for j in range(a.shape[1] - window + 1):
            pa = a[i:i + window, j:j + window].ravel()
            pb = b[i:i + window, j:j + window].ravel()
            cov = np.cov(pa, pb)  # ddof 1: sample covariances, as scikit-image uses
            values.append((2 * pa.mean() * pb.mean() + c1) * (2 * cov[0, 1] + c2)
                          / ((pa.mean() ** 2 + pb.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_windowed_definition():
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (17, 13))
    b = 0.6 * a + 0.4 * rng.uniform(-1, 1, (17, 13))
    assert ssim(a, b) == pytest.approx(slow_ssim(a, b, 5, 2.0), abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(ssim(b, a))


def slow_hog(image, orientations, cell, block):
    h, w = image.shape
    gr, gc = np.zeros((h, w)), np.zeros((h, w))
    for i in range(1, h - 1):
        for j in range(w):
            gr[i, j] = image[i + 1, j] - image[i - 1, j]
    for i in range(h):
        for j in range(1, w - 1):
            gc[i, j] = image[i, j + 1] - image[i, j - 1]
    rows, cols = h // cell, w // cell
    hist = np.zeros((rows, cols, orientations))
    for i in range(rows * cell):
        for j in range(cols * cell):
            angle = np.degrees(np.arctan2(gr[i, j], gc[i, j])) % 180
            k = min(int(angle // (180 / orientations)), orientations - 1)
            hist[i // cell, j // cell, k] += np.hypot(gr[i, j], gc[i, j]) / cell ** 2
    out = []
    for i in range(rows - block + 1):
        for j in range(cols - block + 1):
            v = hist[i:i + block, j:j + block].ravel()
            v = v / np.sqrt((v ** 2).sum() + 1e-10)
            v = np.minimum(v, 0.2)
            out.append(v / np.sqrt((v ** 2).sum() + 1e-10))
    return np.concatenate(out)


def test_hog_matches_a_loop_reference():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((20, 26))
    np.testing.assert_allclose(hog(image, 9, 4, 3), slow_hog(image, 9, 4, 3), atol=1e-12)


def test_hog_of_a_flat_map_is_zero_and_blocks_are_unit_length():
    assert not hog(np.ones((24, 24)), cell=4).any()
    features = hog(np.random.default_rng(4).standard_normal((24, 24)), cell=4)
    blocks = features.reshape(-1, 81)
    np.testing.assert_allclose(np.linalg.norm(blocks, axis=1), 1.0, atol=1e-6)
