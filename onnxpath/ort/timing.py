"""Where a cold start's time goes, on stderr with `--debug` (or ONNXPATH_TIMING=1): reading
the model, the intake probe, each graph's build and each ONNX Runtime session's creation.
The CLI's --debug is read from the command line itself, so that library code need not
thread a flag through every layer; a library user sets ONNXPATH_TIMING=1."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("ONNXPATH_TIMING") == "1" or "--debug" in sys.argv[1:]


@contextmanager
def timed(what: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if enabled():
            print(f"onnxpath: timing: {what}: {(time.perf_counter() - start) * 1e3:.0f} ms",
                  file=sys.stderr, flush=True)


def timed_call(what: str, fn: Callable[[], T]) -> Callable[[], T]:
    """`fn`, timed when called."""
    def call() -> T:
        with timed(what):
            return fn()
    return call
