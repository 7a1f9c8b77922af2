"""Expanding command-line inputs (files, directories, globs, `-` for stdin) into an ordered list,
and giving each a collision-free output stem."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from .imaging import IMAGE_SUFFIXES

TENSOR_SUFFIXES = {".npy"}


def is_input_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | TENSOR_SUFFIXES


def expand_inputs(items: list[str], stdin=None) -> list[Path]:
    """Paths in the order given; directories are searched recursively (sorted), globs are
    expanded (sorted). A missing path stays in the list so that it gets its own error line."""
    result: list[Path] = []
    for item in items:
        if item == "-":
            stream = stdin or sys.stdin
            result.extend(Path(line.strip()) for line in stream if line.strip())
            continue
        path = Path(item)
        if path.is_dir():
            result.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_input_file(p)))
        elif not path.exists() and glob.has_magic(item):
            result.extend(sorted(Path(p) for p in glob.glob(item, recursive=True)))
        else:
            result.append(path)
    return result


def output_stems(paths: list[Path]) -> list[str]:
    """`stem`, or `parent_stem` (then a counter) when several inputs share a stem."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    stems, used = [], set()
    for p in paths:
        stem = p.stem if counts[p.stem] == 1 else f"{p.parent.name or 'root'}_{p.stem}"
        candidate, n = stem, 2
        while candidate in used:
            candidate, n = f"{stem}-{n}", n + 1
        used.add(candidate)
        stems.append(candidate)
    return stems
