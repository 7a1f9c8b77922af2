"""Kernels compiled with numba where it is installed (`pip install 'onnxpath[jit]'`): ROAD's
imputation solver (`evaluate/jit_kernels.py`) and the pathway selection's bracketing pass
(`pathways/selection_kernels.py`). Without numba, with a broken install, or with
`ONNXPATH_NO_JIT=1`, their numpy code runs instead.

A `KernelSet` builds its kernels at the first call that wants them: importing numba and loading
a set's cached code took 1.2-1.5 s here (measured in fresh processes), which only a process that
uses them should pay. numba caches the compiled code beside the module that defines it, so a
later process skips the compile (seconds per kernel).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable

# Sums may be reordered and multiply-adds fused (what lets LLVM vectorise the loops), but NaN
# and inf keep their meaning.
FAST_MATH = {"reassoc", "contract"}


def numba_module():
    """numba, or None without it, with a broken install (numba refuses a numpy it was not built
    for), or with `ONNXPATH_NO_JIT` set."""
    if os.environ.get("ONNXPATH_NO_JIT"):
        return None
    try:
        import numba
    except Exception:  # ImportError, or numba's own error about its numpy
        return None
    return numba


def compile_function(numba, function: Callable) -> Callable:
    """njit without the GIL (callers run kernels on several threads), cached on disk where
    numba can write its cache (else compiled once per process)."""
    try:
        return numba.njit(cache=True, nogil=True, fastmath=FAST_MATH)(function)
    except Exception:  # numba finds no writable cache location
        return numba.njit(nogil=True, fastmath=FAST_MATH)(function)


class KernelSet:
    """Named kernels, built by `build(numba)` at the first `kernels()` call; empty where numba
    is missing or refuses them. `run` falls back (None) for good once a kernel fails, with one
    warning naming `what`."""

    def __init__(self, what: str, build: Callable[[object], dict]):
        self.what = what
        self.build = build
        self.compiled: dict | None = None  # name -> kernel once built; empty without numba
        self._lock = threading.Lock()

    def kernels(self) -> dict:
        if self.compiled is not None:  # (read without the lock once built)
            return self.compiled
        with self._lock:
            if self.compiled is None:
                numba = numba_module()
                try:
                    self.compiled = {} if numba is None else self.build(numba)
                except Exception as err:  # a numba that refuses these functions
                    self.switch_off(err)
        return self.compiled

    def run(self, name: str, *arguments):
        """kernels()[name](*arguments), or None where there is no kernel or where it fails:
        the caller's numpy code takes over."""
        kernel = self.kernels().get(name)
        if kernel is None:
            return None
        try:
            return kernel(*arguments)
        except Exception as err:  # a numba that cannot compile it here
            self.switch_off(err)
            return None

    def switch_off(self, err: Exception) -> None:
        self.compiled = {}
        warnings.warn(f"{self.what} are off for this run: {err}".splitlines()[0],
                      RuntimeWarning, stacklevel=3)
