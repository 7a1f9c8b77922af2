"""`onnxpath cache`: where the session cache lives, what it holds, and clearing it."""

from __future__ import annotations

from types import SimpleNamespace

import typer

from onnxpath.cli import app
from onnxpath.cli.declare import Flag, command
from onnxpath.engine.cache import SessionCache

CLEAR = Flag("clear", bool, typer.Option(False, "--clear", help="Delete every entry."))


@command(app, CLEAR)
def cache(o: SimpleNamespace) -> int:
    """Show the on-disk session cache (ONNX Runtime's optimised graphs), or clear it.

    Example: onnxpath cache --clear

    The folder is $ONNXPATH_CACHE_DIR, else $XDG_CACHE_HOME/onnxpath, else ~/.cache/onnxpath;
    it is trimmed to $ONNXPATH_CACHE_MAX_MB (4096), least recently used first.
    """
    store = SessionCache()
    if o.clear:
        print(f"removed {store.clear()} entries from {store.folder}")
        return 0
    sizes = [p.stat().st_size for p in store.entries()]
    print(f"{store.folder}: {len(sizes)} entries, {sum(sizes) / 2**20:.1f} MiB "
          f"(limit {store.max_bytes / 2**20:.0f} MiB)")
    return 0
