"""A one-line progress bar on stderr, drawn only when stderr is a terminal (no tqdm)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`advance(n)` after each finished input; `note(text)` prints a line above the bar."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None,
                 width: int = 24, interval: float = 0.1):
        self.total = total
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = isatty() if enabled is None else enabled
        self.width = width
        self.interval = interval
        self.done = 0
        self.failed = 0
        self.start = time.monotonic()
        self._drawn = 0.0
        self._visible = False

    def advance(self, n: int = 1, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= self.interval or self.done >= self.total):
            self._drawn = now
            self.draw()

    def line(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = round(self.width * fraction)
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}"
                f"{failed}  {rate:.1f}/s  eta {int(left) // 60}:{int(left) % 60:02d}")

    def draw(self) -> None:
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()
        self._visible = True

    def clear(self) -> None:
        if self.enabled and self._visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._visible = False

    def note(self, text: str) -> None:
        """A message line on stderr that does not tear the bar."""
        self.clear()
        print(text, file=self.stream, flush=True)
        if self.enabled and self.done < self.total:
            self.draw()
