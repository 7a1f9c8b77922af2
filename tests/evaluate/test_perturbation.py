"""LeRF/MoRF and deletion/insertion on models whose answer is known exactly."""

import numpy as np
import pytest
from eval_models import model_forward, one_pixel_model

from onnxpath.evaluate.perturbation import (
    auc,
    blend,
    deletion_insertion,
    forward_stacks,
    gaussian_blur,
    pixel_order,
    pixel_perturbation,
    ranking_key,
    softmax,
)

PIXEL = (2, 5)


@pytest.fixture
def one_pixel():
    """Inputs, forward, and the exact gradient heat of the one-pixel model (8x8)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (4, 3, 8, 8)).astype(np.float32)
    heat = np.zeros((4, 8, 8))
    heat[:, PIXEL[0], PIXEL[1]] = 2.0  # d logit_0 / dx, max-abs over channels
    return x, model_forward(one_pixel_model(pixel=PIXEL)), heat


def probabilities_without_pixel(x, forward):
    cut = x.copy()
    cut[:, :, PIXEL[0], PIXEL[1]] = 0.0
    return softmax(forward(x))[:, 0], softmax(forward(cut))[:, 0]


def test_pixel_order_is_descending_and_ties_are_not_raster_order():
    heat = np.array([[0.0, 3.0], [-5.0, 1.0]])
    assert list(pixel_order(heat, "signed")) == [1, 3, 0, 2]
    assert list(pixel_order(heat, "abs")) == [2, 1, 3, 0]
    flat = np.zeros((16, 16))
    orders = {tuple(pixel_order(flat, seed=s)[:5]) for s in range(3)}
    assert len(orders) == 3 and (0, 1, 2, 3, 4) not in orders
    np.testing.assert_array_equal(pixel_order(flat, seed=7), pixel_order(flat, seed=7))


@pytest.mark.parametrize("seed", [0, 5])
def test_pixel_order_is_a_lexsort_by_key_then_seeded_tiebreak(seed):
    """Its definition, written as numpy's lexsort, on a map full of ties, -0.0 and NaN."""
    rng = np.random.default_rng(seed)
    heat = rng.integers(-3, 4, (37, 50)).astype(np.float64)
    heat[rng.random(heat.shape) < 0.05] = np.nan
    heat[heat == 0] = np.where(rng.random(int((heat == 0).sum())) < 0.5, 0.0, -0.0)
    for rank in ("signed", "abs"):
        key = ranking_key(heat, rank).ravel()
        tiebreak = np.random.default_rng(seed).permutation(key.size)
        np.testing.assert_array_equal(pixel_order(heat, rank, seed),
                                      np.lexsort((tiebreak, -key)))


def test_lerf_with_the_exact_map_never_touches_the_pixel_that_matters(one_pixel):
    x, forward, heat = one_pixel
    targets = np.zeros(4, dtype=int)
    lerf = pixel_perturbation(forward, x, heat, targets, order="lerf")
    assert lerf.shape == (4, 10)
    np.testing.assert_allclose(lerf, 0.0, atol=1e-6)


def test_morf_removes_it_first_and_measures_the_exact_change(one_pixel):
    x, forward, heat = one_pixel
    targets = np.zeros(4, dtype=int)
    p, p_cut = probabilities_without_pixel(x, forward)
    morf = pixel_perturbation(forward, x, heat, targets, fractions=(0.02, 0.5), order="morf")
    expected = np.abs(p - p_cut) / p
    np.testing.assert_allclose(morf, np.repeat(expected[:, None], 2, axis=1), rtol=1e-5)
    # A map that calls the important pixel the least relevant fails LeRF by the same amount.
    lerf = pixel_perturbation(forward, x, -heat, targets, fractions=(1 / 64,), order="lerf")
    np.testing.assert_allclose(lerf[:, 0], expected, rtol=1e-5)


def test_fill_is_per_channel_and_in_model_space(one_pixel):
    x, forward, heat = one_pixel
    targets = np.zeros(4, dtype=int)
    fill = (0.1, 0.2, 0.3)
    change = pixel_perturbation(forward, x, heat, targets, fractions=(1 / 64,), order="morf",
                                fill=fill)
    cut = x.copy()
    cut[:, :, PIXEL[0], PIXEL[1]] = np.array(fill)
    p, q = softmax(forward(x))[:, 0], softmax(forward(cut))[:, 0]
    np.testing.assert_allclose(change[:, 0], np.abs(p - q) / p, rtol=1e-5)


def test_deletion_curve_and_auc_are_exact(one_pixel):
    x, forward, heat = one_pixel
    targets = np.zeros(4, dtype=int)
    p, p_cut = probabilities_without_pixel(x, forward)
    curve = deletion_insertion(forward, x, heat, targets, "deletion", step=8)
    assert curve.shape == (4, 9)  # 64 pixels in 8 steps, from none to all removed
    np.testing.assert_allclose(curve[:, 0], p, rtol=1e-6)
    np.testing.assert_allclose(curve[:, 1:], np.repeat(p_cut[:, None], 8, axis=1), rtol=1e-6)
    np.testing.assert_allclose(auc(curve), (p / 2 + 7.5 * p_cut) / 8, rtol=1e-6)


def test_insertion_starts_from_the_blurred_image_and_ends_at_the_original(one_pixel):
    x, forward, heat = one_pixel
    targets = np.zeros(4, dtype=int)
    curve = deletion_insertion(forward, x, heat, targets, "insertion", step=16)
    np.testing.assert_allclose(curve[:, 0], softmax(forward(gaussian_blur(x)))[:, 0], rtol=1e-5)
    np.testing.assert_allclose(curve[:, 1:], np.repeat(softmax(forward(x))[:, :1], 4, axis=1),
                               rtol=1e-5)


def test_auc_of_a_straight_line():
    assert auc(np.linspace(1, 0, 11)) == pytest.approx(0.5)


def test_gaussian_blur_matches_a_direct_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 13, 15)).astype(np.float32)
    t = np.arange(11) - 5
    g = np.exp(-t ** 2 / 50.0)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (5, 5), (5, 5)))
    direct = np.zeros_like(x, dtype=np.float64)
    for i in range(13):
        for j in range(15):
            direct[..., i, j] = (padded[..., i:i + 11, j:j + 11] * kernel).sum(axis=(-2, -1))
    np.testing.assert_allclose(gaussian_blur(x), direct, atol=1e-5)


def test_forward_stacks_batches_and_keeps_order():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        return batch.reshape(len(batch), -1)[:, :1]

    stacks = [np.full((k, 1, 1, 1), float(i)) for i, k in enumerate([3, 5, 1, 7])]
    out = forward_stacks(forward, stacks, batch_size=4)
    assert max(calls) <= 4 and sum(calls) == 16
    for i, (stack, result) in enumerate(zip(stacks, out, strict=True)):
        assert result.shape == (len(stack), 1) and (result == i).all()


def test_rank_max_ranks_by_the_channel_maximum_not_the_max_abs():
    """The authors' evaluation code keys each pixel by np.max over channels. A pixel whose
    channels are (-3, 2, 2) is the least relevant by signed max-abs (-3) but the most relevant
    by channel maximum (2); on the one-pixel model that decides whether LeRF removes the only
    pixel that matters."""
    from onnxpath.evaluate import Evaluation, Settings
    from onnxpath.evaluate.runner import channel_max
    from onnxpath.explainer import Explainer

    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.5, (3, 3, 8, 8)).astype(np.float32)
    maps = rng.uniform(0.1, 0.5, x.shape).astype(np.float32)  # everything else: small, > 0
    maps[:, :, PIXEL[0], PIXEL[1]] = np.array([-3.0, 2.0, 2.0])[None, :]
    np.testing.assert_array_equal(channel_max(maps)[:, PIXEL[0], PIXEL[1]], 2.0)
    assert list(pixel_order(channel_max(maps)[0], "max"))[0] == PIXEL[0] * 8 + PIXEL[1]
    explainer = Explainer(one_pixel_model(pixel=PIXEL))
    p, p_cut = probabilities_without_pixel(x, model_forward(one_pixel_model(pixel=PIXEL)))
    results = {}
    for rank in ("signed", "max"):
        ev = Evaluation(explainer, x, ["gradient"], Settings(rank=rank, fractions=(1 / 64,)),
                        targets=np.zeros(3, dtype=int))
        ev.maps = {"gradient": maps}
        results[rank] = ev.run(["lerf"]).scores[0].values
    np.testing.assert_allclose(results["signed"], np.abs(p - p_cut) / p, rtol=1e-5)
    np.testing.assert_allclose(results["max"], 0.0, atol=1e-6)


def test_known_totals_run_in_even_batches_with_the_same_logits(one_pixel):
    """With the stacks' total known, 20 rows at batch 16 run as 10 + 10 (not 16 + 4), and the
    protocols' results stay exactly those of the uneven runs."""
    from onnxpath.engine.batching import even_rows
    assert [even_rows(t, b) for t, b in ((20, 16), (20, 8), (400, 16), (3, 64), (7, 1))] == \
        [10, 7, 16, 3, 1]
    x, forward, heat = one_pixel
    runs = []

    def counted(batch):
        runs.append(len(batch))
        return forward(batch)

    stacks = [x[:2], np.repeat(x[2:3], 9, axis=0), np.repeat(x[3:], 9, axis=0)]
    even = forward_stacks(counted, stacks, batch_size=16, total=20)
    assert runs == [10, 10]
    runs.clear()
    uneven = forward_stacks(counted, stacks, batch_size=16)
    assert runs == [16, 4]
    assert all(np.array_equal(a, b) for a, b in zip(even, uneven, strict=True))
    targets = np.zeros(4, int)
    fractions = tuple(i / 10 for i in range(1, 10))
    new = pixel_perturbation(forward, x, heat, targets, fractions, "lerf", batch_size=16)
    old = pixel_perturbation(counted, x, heat, targets, fractions, "lerf",
                             batch_size=40)  # one run: no batching at all
    print(f"LeRF, even batches vs one run: largest difference {np.abs(new - old).max():.3g}")
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-7)


def test_blend_is_np_where_with_or_without_non_finite_values():
    """The protocols' stacks: the same values as np.where, NaN and inf taking np.where's path
    (a times 0 would give NaN)."""
    rng = np.random.default_rng(4)
    mask = rng.random((5, 1, 6, 7)) < 0.4
    value = np.array([0.5, -1.0, 0.0], np.float32).reshape(1, 3, 1, 1)
    image = rng.standard_normal((1, 3, 6, 7)).astype(np.float32)
    for a, b in [(value, image), (image, value), (image, image[:, ::-1])]:
        assert np.array_equal(blend(mask, a, b), np.where(mask, a, b))
    image[0, 1, 2, 3], image[0, 2, 0, 0] = np.nan, np.inf
    out = blend(mask, value, image)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.where(mask, value, image))
