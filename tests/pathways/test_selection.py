"""Section 3's selection rule, the keep synonym, per-layer mode and the random baseline."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from onnxpath.errors import UsageError
from onnxpath.methods.pathway import critical_pathway
from onnxpath.pathways.network import dead_selected_fraction, jaccard, resolve_prune_percent
from onnxpath.pathways.selection import (
    balanced_groups,
    in_parallel,
    kth_and_next,
    percentile_threshold,
    prune_marks,
    random_selection,
    select,
)

from .conftest import image


@pytest.fixture(params=["compiled", "numpy"])
def passes(request, monkeypatch):
    """The bracketing pass compiled (numba, a test dependency) or as numpy's passes."""
    from onnxpath.pathways import selection_kernels
    if request.param == "numpy":
        monkeypatch.setattr(selection_kernels.KERNELS, "compiled", {})
    else:
        assert selection_kernels.KERNELS.kernels(), "numba is missing: the pass goes untested"
    return request.param


@pytest.mark.parametrize("prune", [0, 12.5, 50, 70, 85, 90, 99, 100])
def test_threshold_is_numpys_percentile(prune):
    scores = np.random.default_rng(3).random(1001).astype(np.float32)
    assert percentile_threshold(scores, prune) == pytest.approx(np.percentile(scores, prune),
                                                                rel=1e-6)


@pytest.mark.parametrize("layout", ["runs", "sorted", "shuffled", "constant"])
def test_bracketed_selection_is_exact(layout, passes):
    rng = np.random.default_rng(7)
    values = np.repeat(rng.integers(0, 500, 300), rng.integers(1, 200, 300)).astype(np.int32)
    if layout == "sorted":
        values.sort()
    elif layout == "shuffled":
        rng.shuffle(values)
    elif layout == "constant":
        values[:] = 3
    ordered = np.sort(values)
    for k in [0, 1, len(values) // 2, int(0.85 * (len(values) - 1)), len(values) - 2,
              len(values) - 1]:
        expected = (ordered[k], ordered[min(k + 1, len(values) - 1)])
        assert kth_and_next(values, k, sample=256) == expected  # sampled bracket, and misses


def test_ties_at_the_threshold_are_pruned():
    scores = np.array([0.5, 1, 2, 2, 2, 2, 2, 2, 3, 4], np.float32)
    t = percentile_threshold(scores, 50)
    assert t == 2.0
    (mask,), _ = select([scores[None]], 50)
    assert mask[0].tolist() == [False] * 8 + [True, True]  # keeps 2 of 10, not 5


def test_more_than_p_percent_zeros_keeps_every_nonzero_score():
    scores = np.zeros(100, np.float32)
    scores[[3, 50, 97]] = [1e-7, 2.0, 0.5]
    # 97% are zero > 85%: t = 0 even where the interpolated percentile would not be
    assert percentile_threshold(scores, 85) == 0.0
    (mask,), _ = select([scores[None]], 85)
    assert np.flatnonzero(mask[0]).tolist() == [3, 50, 97]
    odd = np.r_[np.zeros(4), np.arange(1, 32)].astype(np.float32)  # 35 scores, 4 zeros > 10%
    assert np.percentile(odd, 10) > 0
    assert percentile_threshold(odd, 10) == 0.0


def test_global_threshold_spans_all_layers_and_counts_dead_neurons():
    rng = np.random.default_rng(0)
    big = rng.random((1, 4, 5, 5)).astype(np.float32) * 10
    dead = np.zeros((1, 50), np.float32)
    small = rng.random((1, 50)).astype(np.float32)
    masks, t = select([big, dead, small], 85)
    everything = np.concatenate([big.ravel(), dead.ravel(), small.ravel()])
    assert t[0] == pytest.approx(np.percentile(everything, 85))
    assert masks[1].sum() == 0 and masks[2].sum() == 0 and masks[0].sum() == 30


def test_per_layer_thresholds_keep_each_layer_separately():
    rng = np.random.default_rng(1)
    scores = [rng.random((2, 8, 10, 10)).astype(np.float32) * 10,
              rng.random((2, 100)).astype(np.float32)]
    masks, thresholds = select(scores, 85, per_layer=True)
    assert thresholds.shape == (2, 2)
    for k, s in enumerate(scores):
        for i in range(2):
            assert thresholds[i, k] == pytest.approx(np.percentile(s[i], 85))
            assert masks[k][i].mean() == pytest.approx(0.15, abs=0.011)


def test_keep_is_prune_100_minus_k(vgg):
    assert resolve_prune_percent(None, 15) == 85
    assert resolve_prune_percent(None, None) == 85
    assert resolve_prune_percent(70, 30) == 70
    with pytest.raises(UsageError, match="disagree"):
        resolve_prune_percent(70, 15)
    with pytest.raises(UsageError):
        resolve_prune_percent(120, None)
    x = image(4)
    by_keep = critical_pathway(vgg.engine(x), x, [0], keep=25)
    by_prune = critical_pathway(vgg.engine(x), x, [0], prune_percent=75)
    assert by_keep.prune_percent == 75
    assert all((a == b).all() for a, b in zip(by_keep.masks, by_prune.masks, strict=True))


def test_per_layer_mode_through_the_method(resnet):
    x = image(5)
    found = critical_pathway(resnet.engine(x), x, [1], prune_percent=80, per_layer=True,
                             with_activations=True)
    for mask, active in zip(found.masks, found.activations, strict=True):
        if (active[0] != 0).mean() > 0.2:  # otherwise the zero edge case keeps fewer
            assert mask[0].mean() == pytest.approx(0.2, abs=0.01)


def test_random_selection_keeps_p_percent_of_every_layer(resnet):
    x = image(6, n=2)
    found = critical_pathway(resnet.engine(x), x, [0, 1], prune_percent=70, selection="random")
    for layer, mask in zip(found.layers, found.masks, strict=True):
        assert mask.shape == (2, *layer.shape)
        assert (mask.reshape(2, -1).sum(axis=1) == round(0.3 * layer.size)).all()
    assert not (found.masks[0][0] == found.masks[0][1]).all()
    again = random_selection(found.layers, 1, 70, np.random.default_rng(0))
    assert (again[0][0] == found.masks[0][0]).all()  # seeded: reproducible


def test_pathway_statistics():
    a = [np.array([[True, True, False, False]]), np.array([[True, False]])]
    b = [np.array([[True, False, True, False]]), np.array([[True, False]])]
    assert jaccard(a, b) == pytest.approx(2 / 4)
    activations = [np.array([[0.0, 1.0, 2.0, 0.0]]), np.array([[0.0, 3.0]])]
    assert dead_selected_fraction(a, activations) == pytest.approx(2 / 3)


@pytest.mark.parametrize("layout", ["runs", "shuffled", "interpolated", "small"])
def test_prune_marks_are_the_complement_of_the_keep_mask(layout, passes):
    """The marks and gates written by the bracketing passes equal |scores| <= t, compared in
    float64 (t interpolates between two float32 scores), across pieces; NaN scores are kept.
    Signed scores with `magnitude` give the same as their magnitudes, and stay as they were.
    Pieces end inside and at the compiled pass's blocks, and span several."""
    rng = np.random.default_rng(11)
    if layout == "interpolated":  # neighbouring float32 values: t falls between them
        one = np.float32(1.0)
        values = np.array([one, np.nextafter(one, np.float32(2))], np.float32)
        scores = rng.choice(values, 200_000)
    elif layout == "small":
        scores = rng.random(999).astype(np.float32)
    else:
        scores = np.repeat(rng.random(3000), rng.integers(1, 120, 3000)).astype(np.float32)
        scores[rng.random(scores.size) < 0.3] = 0.0
        if layout == "shuffled":
            rng.shuffle(scores)
    scores[rng.integers(0, scores.size, 5)] = np.nan
    signed = scores * rng.choice(np.array([-1, 1], np.float32), scores.size)
    bounds = [b for b in (7, 2048, 4096 + 13, scores.size // 3, scores.size // 2)
              if b < scores.size // 3] + [scores.size // 3, scores.size // 2]
    pieces, signed_pieces = np.array_split(scores, bounds), np.array_split(signed, bounds)
    before = signed.copy()
    for prune in [0, 30, 85, 99.9, 100]:
        marks = [np.ones(p.shape, bool) for p in pieces]
        t, pruned = prune_marks(pieces, prune, marks)
        np.testing.assert_equal(t, percentile_threshold(pieces, prune))  # NaN at P = 100
        expected = scores <= np.float64(t)
        assert (np.concatenate(marks) == expected).all()
        assert pruned == int(expected.sum())
        (keep,), _ = select([scores[None]], prune)
        assert (keep[0] == ~expected).all()
        # signed, marks on two pieces and gates on the others
        marks = [np.ones(p.shape, bool) if k % 2 else None for k, p in enumerate(pieces)]
        gates = [np.ones(p.shape, np.uint32) if k % 2 == 0 else None
                 for k, p in enumerate(pieces)]
        np.testing.assert_equal(prune_marks(signed_pieces, prune, marks, gates, magnitude=True),
                                (t, pruned))
        for k, part in enumerate(np.array_split(expected, bounds)):
            if k % 2:
                assert (marks[k] == part).all()
            else:
                assert (gates[k].view(np.float32) == np.where(part, -np.inf, 0.0)).all()
    np.testing.assert_array_equal(signed, before)


def test_in_parallel_keeps_order_balances_groups_and_runs_nested_calls():
    """Results in the items' order; groups of near-equal weight; a call made from inside
    one of the pool's tasks runs there instead of waiting on the pool (it would wait
    forever)."""
    assert in_parallel(lambda k: k * k, range(9), [9, 1, 1, 1, 1, 1, 1, 1, 1]) == \
        [k * k for k in range(9)]
    groups = balanced_groups([9, 1, 1, 1, 1, 1, 1, 1, 1], 2)
    assert sorted(sum(groups, [])) == list(range(9)) and [0] in groups
    done = threading.Event()

    def outer(k):
        return sum(in_parallel(lambda j: j + k, range(3)))

    def call():
        assert in_parallel(outer, range(4)) == [3 + 3 * k for k in range(4)]
        done.set()

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_pass_equals_numpys(monkeypatch, dtype):
    """selection_kernels.split against the numpy passes on the same pieces: thresholds,
    counts, marks, gates, and both written together; float32 and float64 keys, signed
    scores by magnitude, ties, zeros, -0.0, NaN and inf, pieces of 1 to ~3 blocks."""
    from onnxpath.pathways import selection_kernels
    assert selection_kernels.KERNELS.kernels(), "numba is missing: the pass goes untested"
    rng = np.random.default_rng(19)
    scores = np.repeat(rng.standard_normal(4000), rng.integers(1, 40, 4000)).astype(dtype)
    scores[rng.random(scores.size) < 0.2] = 0.0
    scores[rng.integers(0, scores.size, 9)] = -0.0
    scores[rng.integers(0, scores.size, 3)] = np.nan
    scores[rng.integers(0, scores.size, 3)] = -np.inf
    pieces = np.array_split(scores, [1, 2049, 2050, 9000, 15000])

    def run():
        marks = [np.zeros(p.shape, bool) for p in pieces]
        gates = [np.zeros(p.shape, np.uint32) if dtype == np.float32 else None
                 for p in pieces]
        both = [m if k % 2 else None for k, m in enumerate(marks)]
        found = [prune_marks(pieces, prune, marks, None, magnitude=True)
                 for prune in (0, 50, 85, 99)]
        found.append(prune_marks(pieces, 85, both, gates, magnitude=True))
        found.append(prune_marks([np.abs(p) for p in pieces], 85))
        return found, marks, gates

    compiled = run()
    with monkeypatch.context() as numpy_only:
        numpy_only.setattr(selection_kernels.KERNELS, "compiled", {})
        expected = run()
    np.testing.assert_equal(compiled[0], expected[0])
    for got, want in zip(compiled[1] + compiled[2], expected[1] + expected[2], strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_failing_compiled_pass_leaves_numpys_with_one_warning(monkeypatch):
    from onnxpath.pathways import selection_kernels

    def broken(*arguments):
        raise RuntimeError("no such instruction\nsecond line")

    monkeypatch.setattr(selection_kernels.KERNELS, "compiled", {"split": broken})
    scores = np.random.default_rng(20).random(100_000).astype(np.float32)
    marks = np.zeros(scores.size, bool)
    with pytest.warns(RuntimeWarning, match="selection's compiled kernels are off.*instruction$"):
        t, pruned = prune_marks(scores, 85, [marks])
    assert selection_kernels.KERNELS.kernels() == {}
    assert t == pytest.approx(np.percentile(scores, 85), rel=1e-6)
    assert (marks == (scores <= np.float64(t))).all() and pruned == marks.sum()


def test_no_jit_environment_variable_turns_the_compiled_pass_off(monkeypatch):
    from onnxpath.pathways import selection_kernels
    monkeypatch.setattr(selection_kernels.KERNELS, "compiled", None)
    monkeypatch.setenv("ONNXPATH_NO_JIT", "1")
    assert selection_kernels.KERNELS.kernels() == {}
    keys = np.arange(10, dtype=np.int32)
    assert selection_kernels.split(keys, False, 2, 5, None, np.empty(10, np.int64),
                                   np.empty(10, np.int32), np.empty(10, bool)) is None
    monkeypatch.setattr(selection_kernels.KERNELS, "compiled", None)
    monkeypatch.delenv("ONNXPATH_NO_JIT")
    assert set(selection_kernels.KERNELS.kernels()) == {"split"}


def test_the_compiled_pass_is_built_after_its_warm_up(monkeypatch):
    """A process ranks WARM_UP scores with numpy's passes before it pays for numba; then
    the kernel's results are those of numpy's passes."""
    from onnxpath.pathways import selection_kernels
    monkeypatch.setattr(selection_kernels.KERNELS, "compiled", None)
    monkeypatch.setattr(selection_kernels, "_ranked", 0)
    monkeypatch.setattr(selection_kernels, "WARM_UP", 25)
    keys = np.array([5, 1, 9, 3, 3, 7, 0, 2, 8, 6], np.int32)
    marks = np.zeros(10, bool)

    def split():
        return selection_kernels.split(keys, False, 3, 6, marks, np.empty(10, np.int64),
                                       np.empty(10, np.int32), np.empty(10, bool))

    assert [split() for _ in range(3)] == [None] * 3
    assert selection_kernels.KERNELS.compiled is None  # 30 scores ranked: numba not imported
    below, where, values = split()
    assert below == 3 and where.tolist() == [0, 3, 4, 9] and values.tolist() == [5, 3, 3, 6]
    assert marks.tolist() == (keys <= 6).tolist()
