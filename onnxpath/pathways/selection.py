"""Selecting a critical pathway from contribution scores (methods.md section 3): the P-th
percentile of one example's scores over all its layers, found by selection rather than a sort,
and the keep masks s > t, or their complement and the Relu gates written by the same passes
(`prune_marks`); plus section 7's random baseline.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from onnxpath.pathways import selection_kernels
from onnxpath.pathways.surgery import MaskLayer

NEG_INF_BITS = np.uint32(0xFF800000)  # float32 -inf; 0 is +0.0
ORDERED_BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
SAMPLE = 1 << 16  # scores drawn to bracket t, at most: ~1.7% of them fall inside at P = 85


_POOL: ThreadPoolExecutor | None = None
POOL_NAME = "onnxpath-select"


def in_parallel(fn: Callable, items, weights: Sequence[float] | None = None) -> list:
    """`[fn(item) for item in items]` on every core: numpy releases the GIL in the passes
    selection is made of. The items are shared out as one group per core, balanced by
    `weights` (their sizes; equal by default), one group on the calling thread: a task per
    ResNet-50 layer cost ~3 ms of hand-overs per pass."""
    global _POOL
    items = list(items)
    cores = min(4, os.cpu_count() or 1)
    # (a call from one of the pool's own threads runs alone: waiting on the pool from inside
    # it could wait forever)
    nested = threading.current_thread().name.startswith(POOL_NAME)
    if cores == 1 or len(items) <= 1 or nested:
        return [fn(item) for item in items]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=cores - 1, thread_name_prefix=POOL_NAME)
    results: list = [None] * len(items)

    def run(group: list[int]) -> None:
        for k in group:
            results[k] = fn(items[k])

    first, *rest = balanced_groups([1.0] * len(items) if weights is None else weights, cores)
    pending = [_POOL.submit(run, group) for group in rest if group]
    try:
        run(first)
    finally:
        for future in pending:
            future.result()
    return results


def balanced_groups(weights: Sequence[float], count: int) -> list[list[int]]:
    """Indices into `weights` in `count` groups of near-equal total weight (heaviest first,
    each to the lightest group), each group in ascending order."""
    groups: list[list[int]] = [[] for _ in range(count)]
    totals = [0.0] * count
    for k in sorted(range(len(weights)), key=lambda k: -weights[k]):
        lightest = totals.index(min(totals))
        groups[lightest].append(k)
        totals[lightest] += weights[k]
    return [sorted(group) for group in groups]


def percentile_threshold(scores: np.ndarray | Sequence[np.ndarray],
                         prune_percent: float) -> float:
    """t = the P-th percentile of non-negative `scores` (numpy's linear interpolation), found by
    selection rather than a sort; 0 when more than P% of the scores are 0 (section 3).
    `scores` may be one array or the per-layer pieces of one example (never concatenated)."""
    return prune_marks(scores, prune_percent)[0]


def prune_marks(scores: np.ndarray | Sequence[np.ndarray], prune_percent: float,
                marks: Sequence[np.ndarray | None] | None = None,
                gates: Sequence[np.ndarray | None] | None = None,
                magnitude: bool = False) -> tuple[float, int]:
    """(t, how many scores are pruned) for one example's non-negative scores, t as in
    `percentile_threshold`. Where `marks` has a C-contiguous bool array shaped like a piece,
    marks[k] = scores[k] <= t: the pruned neurons, the complement of the keep mask; where
    `gates` has a uint32 one, the bit patterns of its gates (`gate_bits`). `magnitude` ranks
    |scores| without writing them.

    Marks and gates come out of the passes that find t: the pass that brackets t with a sample
    writes scores <= the bracket's top, and only the few scores inside the bracket are
    compared with t afterwards. A NaN score ranks above every number (as its bit pattern
    does) and is never pruned."""
    pieces = [np.ravel(p) for p in (scores if isinstance(scores, (list, tuple)) else [scores])]
    outs = [None if m is None else flat_view(m, bool) for m in (marks or [None] * len(pieces))]
    gate_outs = [None if g is None else flat_view(g, np.uint32)
                 for g in (gates or [None] * len(pieces))]
    n = sum(p.size for p in pieces)
    if n == 0:
        return 0.0, 0
    dtype = pieces[0].dtype
    if magnitude and dtype not in ORDERED_BITS:
        pieces, magnitude = [np.abs(p) for p in pieces], False
    rank = prune_percent / 100.0 * (n - 1)
    lo = int(np.floor(rank))
    # Non-negative IEEE floats sort like their bit patterns read as integers (-0.0 first, which
    # is still a zero), and integers select faster than floats; |x| is x's pattern without the
    # sign bit.
    keys = [p.view(ORDERED_BITS[dtype]) for p in pieces] if dtype in ORDERED_BITS else pieces
    low_key, high_key, inside = bracketed_kth(keys, lo, outs, gate_outs, magnitude)
    low, high = (float(np.asarray(v, keys[0].dtype).view(dtype)) for v in (low_key, high_key))
    # More than P% zeros <=> the value of 0-based rank floor(P% * n) is 0; that rank is lo or
    # lo + 1, whose values are at hand, so no pass over the scores counts zeros.
    at = low if int(np.floor(prune_percent / 100.0 * n)) == lo else high
    # np.float64: compared with float32 scores, a Python float would round to float32 first
    t = np.float64(0.0 if at == 0.0 and prune_percent > 0 else low + (high - low) * (rank - lo))
    if marks is None and gates is None:
        return float(t), 0
    if inside is None:  # no bracket: the marks are written in full
        def mark(k: int) -> int:
            size = pieces[k].size
            out = outs[k] if outs[k] is not None else scratch(size, bool, 2)
            np.less_equal(np.abs(pieces[k]) if magnitude else pieces[k], t, out=out)
            if gate_outs[k] is not None:
                gate_bits(out, gate_outs[k])
            return int(np.count_nonzero(out))
        return float(t), sum(in_parallel(mark, range(len(pieces)), [p.size for p in pieces]))

    def finish(k: int) -> int:
        """Unmark the scores inside the bracket that lie above t; the pruned count."""
        below, where, values = inside[k]
        if where.size == 0:
            return below
        kept = np.compress(~(values.view(dtype) <= t), where)  # in float64; NaN is kept
        for out, unmarked in ((outs[k], False), (gate_outs[k], 0)):
            if out is not None:
                out.put(kept, unmarked)
        return below + where.size - kept.size
    return float(t), sum(in_parallel(finish, range(len(pieces)),
                                     [inside[k][1].size for k in range(len(pieces))]))


def gate_bits(pruned: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The bit patterns of float32 gates, 0 where kept and -inf where `pruned`, in one pass
    (a lookup table or np.where takes about four times as long)."""
    np.multiply(pruned, NEG_INF_BITS, out=out, dtype=np.uint32)
    return out


def flat_view(array: np.ndarray, dtype) -> np.ndarray:
    """A 1-D view of an output array, never a copy (a copy would take the writes)."""
    if not (array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable):
        raise ValueError(f"outputs must be writeable, C-contiguous {np.dtype(dtype)} arrays")
    return array.reshape(-1)


def kth_and_next(values: np.ndarray | Sequence[np.ndarray], k: int,
                 sample: int | None = None) -> tuple:
    """The k-th and (k+1)-th smallest of `values` (one 1-D array, or pieces taken together;
    0-based), exactly."""
    pieces = list(values) if isinstance(values, (list, tuple)) else [values]
    low, high, _ = bracketed_kth(pieces, k, sample=sample or SAMPLE)
    return low, high


_SCRATCH = threading.local()


def scratch(size: int, dtype, which: int) -> np.ndarray:
    """One of this thread's reused buffers: fresh ones per call cost page faults. (Passes
    in cache-sized steps were slower: numpy's per-call cost, paid with the GIL held.)"""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    key = (np.dtype(dtype), which)
    if key not in buffers or buffers[key].size < size:
        buffers[key] = np.empty(size, dtype)
    return buffers[key][:size]


def sample_size(n: int, most: int = SAMPLE) -> int:
    """How many of n scores bracket t: up to `most`, fewer for fewer scores (a gather of
    random positions costs a cache miss each), never under 2^14."""
    return min(most, max(1 << 14, n // 64))


@functools.lru_cache(maxsize=8)
def sample_positions(n: int, sample: int) -> np.ndarray:
    """`sample` sorted positions in [0, n), the same for every call (seed 0)."""
    where = np.sort(np.random.default_rng(0).integers(0, n, sample))
    where.flags.writeable = False
    return where


def bracketed_kth(pieces: list[np.ndarray], k: int, outs: list[np.ndarray] | None = None,
                  gate_outs: list[np.ndarray | None] | None = None, magnitude: bool = False,
                  sample: int = SAMPLE) -> tuple:
    """(k-th smallest, (k+1)-th smallest, inside) over 1-D `pieces` taken together, exactly;
    `magnitude` takes integer keys without their sign bit (|x| of floats' patterns).

    np.partition alone takes about 1 s on ResNet-50's 9.6 M scores laid out layer by layer,
    with dead channels in long runs (50 times its time on the same scores shuffled). So a
    random sample brackets the k-th value, and only the values inside the bracket are
    partitioned: two comparison passes over the pieces, no copy of them. With `outs`, the
    same passes write outs[i] = pieces[i] <= the bracket's top (and its gate bits into
    gate_outs[i]), and `inside` gives per piece (count below the bracket, positions inside
    it, their values), so that the caller can finish the marks for any t inside the bracket.
    A bracket that misses falls back to a full partition, so the answer never depends on the
    sample; `inside` is then None.
    """
    sizes = np.array([p.size for p in pieces])
    n = int(sizes.sum())
    sample = sample_size(n, sample)
    sign_off = np.array(np.iinfo(pieces[0].dtype).max, pieces[0].dtype) if magnitude else None
    if n > 4 * sample:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        where = sample_positions(n, sample)
        bounds = np.searchsorted(where, offsets)
        picked = np.concatenate([piece[where[bounds[i]:bounds[i + 1]] - offsets[i]]
                                 for i, piece in enumerate(pieces)])
        if magnitude:
            picked &= sign_off
        picked.sort()
        q = k / n  # 6 sigma of the sample quantile, plus two samples
        margin = 6.0 * np.sqrt(q * (1 - q) / sample) + 2.0 / sample
        bottom = picked[max(0, int((q - margin) * sample))]
        top = picked[min(sample - 1, int((q + margin) * sample))]

        def split(i: int) -> tuple[int, np.ndarray, np.ndarray]:
            keys, size = pieces[i], pieces[i].size
            out = outs[i] if outs else None
            gate_out = gate_outs[i] if gate_outs else None
            compiled = selection_kernels.split(
                keys, magnitude, bottom, top, gate_out if out is None else out,
                scratch(size, np.int64, 3), scratch(size, keys.dtype, 4),
                scratch(size, bool, 2)) if keys.dtype.kind == "i" else None
            if compiled is not None:
                if out is not None and gate_out is not None:
                    gate_bits(out, gate_out)
                return compiled
            if magnitude:
                keys = np.bitwise_and(keys, sign_off, out=scratch(size, keys.dtype, 0))
            under = np.less(keys, bottom, out=scratch(size, bool, 1))
            below = int(np.count_nonzero(under))
            upto = np.less_equal(keys, top, out=out if out is not None
                                 else scratch(size, bool, 2))
            if gate_out is not None:
                gate_bits(upto, gate_out)
            np.greater(upto, under, out=under)  # inside: <= top and not < bottom
            positions = np.flatnonzero(under)
            return below, positions, keys[positions]

        inside = in_parallel(split, range(len(pieces)), sizes)
        values = np.concatenate([v for _, _, v in inside])  # ~1.7% of the values
        j = k - sum(b for b, _, _ in inside)
        if 0 <= j < values.size - 1:
            values.partition(j)
            return values[j], values[j + 1:].min(), inside
    whole = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    part = np.partition(whole & sign_off if magnitude else whole, k)
    return part[k], (part[k + 1:].min() if k + 1 < n else part[k]), None


def select(scores: Sequence[np.ndarray], prune_percent: float,
           per_layer: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """(keep masks, thresholds): per example, keep s > t with t the P-th percentile of all its
    neurons in all layers (dead ones included); ties at t are pruned. `per_layer` takes one t
    per layer instead. Thresholds are (N,) or (N, layers)."""
    n = len(scores[0])
    marks = [np.empty(s.shape, bool) for s in scores]
    thresholds = np.zeros((n, len(scores)) if per_layer else (n,))
    for i in range(n):
        if per_layer:
            for k, s in enumerate(scores):
                thresholds[i, k], _ = prune_marks(s[i], prune_percent, [marks[k][i]])
        else:
            thresholds[i], _ = prune_marks([s[i] for s in scores], prune_percent,
                                           [m[i] for m in marks])
    return in_parallel(lambda m: np.logical_not(m, out=m), marks,
                       [m.size for m in marks]), thresholds


def random_selection(layers: Sequence[MaskLayer], n: int, prune_percent: float,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Section 7's random baseline: each layer keeps round((100-P)% of its neurons) at random."""
    masks = []
    for layer in layers:
        keep = int(round((100.0 - prune_percent) / 100.0 * layer.size))
        mask = np.zeros((n, layer.size), bool)
        for i in range(n):
            mask[i, rng.choice(layer.size, keep, replace=False)] = True
        masks.append(mask.reshape((n, *layer.shape)))
    return masks
