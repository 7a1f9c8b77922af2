"""The selection's bracketing pass compiled (`selection.bracketed_kth`), used when numba is
installed (`pip install 'onnxpath[jit]'`); without it the pass runs as numpy passes.

In numpy the pass over one layer's scores is five: the keys' magnitude, `< bottom` and its
count, `<= top` into the marks, the gate bits from them, and the positions inside the bracket.
Each reads or writes the whole layer: on ResNet-50's 9.6 M scores the selection took a fifth
of a gradient's time. Compiled, a branch-free loop reads each score once and writes its mark
or gate, and a second loop over the same block, in cache, picks out the ~2% inside the bracket.

The kernel is built once a process has ranked `WARM_UP` scores. Importing numba and loading
its cached code costs 1.2-1.5 s; the compiled pass saves ~0.5 ns a score (ResNet-50, inside
a call: 15.5 -> 11 ms). So a process that explains a few images never pays for it, and a long
run pays for it once it has spent about as much on the slower pass.
"""

from __future__ import annotations

import numpy as np

from onnxpath.compiled.kernel_set import KernelSet, compile_function

WARM_UP = 2_500_000_000  # scores ranked by numpy's passes before the kernel is built
BLOCK = 2048  # scores per block: the second loop reads them again from the core's cache
NEG_INF_BITS = 0xFF800000  # float32 -inf, a pruned neuron's gate; 0 (+0.0) keeps it


def _split(keys, sign_off, bottom, top, out, on, off, where, values):
    """One layer's pass: out[i] = on where key <= top else off (a pruned mark, or a gate's
    bits), the count of keys < bottom, and the positions and keys of those in [bottom, top]
    into where / values; keys are taken `& sign_off`. Per block, two loops: the first has no
    branch, so LLVM vectorises it; the second tests each key with one unsigned comparison,
    true for ~2% of them, which the branch predictor gets right."""
    span = np.uint64(top - bottom)
    below = 0
    count = 0
    for start in range(0, keys.size, BLOCK):
        block = keys[start:start + BLOCK]
        marks = out[start:start + BLOCK]
        for i in range(block.size):
            key = block[i] & sign_off
            below += key < bottom
            marks[i] = on if key <= top else off
        for i in range(block.size):
            key = block[i] & sign_off
            if np.uint64(key - bottom) <= span:
                where[count] = start + i
                values[count] = key
                count += 1
    return below, count


KERNELS = KernelSet("The pathway selection's compiled kernels",
                    lambda numba: {"split": compile_function(numba, _split)})
_ranked = 0  # scores ranked by numpy's passes so far (threads may race on it: a count is enough)


def split(keys: np.ndarray, magnitude: bool, bottom, top, out: np.ndarray | None,
          where: np.ndarray, values: np.ndarray,
          scratch_marks: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(count below the bracket, positions inside it, their keys) of 1-D integer `keys`
    (`magnitude`: without their sign bit), writing `out` where given: key <= top into a bool
    array, or those keys' gate bits into a uint32 one. `where` / `values` / `scratch_marks`
    are scratch of at least the keys' size. None without the kernel (or before `WARM_UP`):
    the caller's numpy passes take over."""
    global _ranked
    if KERNELS.compiled is None and _ranked < WARM_UP:
        _ranked += keys.size
        return None
    if not KERNELS.kernels():
        return None
    kind = keys.dtype.type
    sign_off = kind(np.iinfo(kind).max if magnitude else -1)
    if out is not None and out.dtype == np.uint32:
        on, off = np.uint32(NEG_INF_BITS), np.uint32(0)
    else:
        out, on, off = (scratch_marks if out is None else out), True, False
    found = KERNELS.run("split", keys, sign_off, kind(bottom), kind(top), out, on, off,
                        where, values)
    if found is None:
        return None
    below, count = found
    return int(below), where[:count].copy(), values[:count].copy()
