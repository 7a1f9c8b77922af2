"""Expanding command-line inputs (files, directories, globs, `-` for stdin) into an ordered list,
and giving each a collision-free output stem."""

from __future__ import annotations

import glob
import sys
from collections.abc import Iterable
from pathlib import Path

from onnxpath.io.preprocess import IMAGE_SUFFIXES
from onnxpath.io.storage import RemotePath, filesystem, is_url, local_name

TENSOR_SUFFIXES = {".npy", ".npz"}


def is_input_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | TENSOR_SUFFIXES


RUN_STATE = ".onnxpath"  # what every --out folder holds (see onnxpath.run.resume)


def scan(folder: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Image and .npy files under `folder`, recursively, sorted by path. Hidden files and
    folders (names starting with '.'), the `exclude` folders (this run's output folder) and
    every sub-folder that holds `.onnxpath/` (any run's output folder, this one's or an
    earlier one's) are skipped, so a run never takes overlays and maps for inputs."""
    skip = {p.resolve() for p in exclude}
    outputs = OutputFolders()
    found = []
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") for part in parts):
            continue
        if skip and any(parent.resolve() in skip for parent in path.parents):
            continue
        if outputs.inside(path, folder):
            continue
        if path.is_file() and is_input_file(path):
            found.append(path)
    return sorted(found)


class OutputFolders:
    """Which folders hold `.onnxpath/`, looked up once each."""

    def __init__(self):
        self.known: dict[Path, bool] = {}

    def holds_state(self, folder: Path) -> bool:
        if folder not in self.known:
            self.known[folder] = (folder / RUN_STATE).is_dir()
        return self.known[folder]

    def inside(self, path: Path, top: Path) -> bool:
        """Whether `path` lies in an output folder below `top` (`top` itself not counted)."""
        parts = path.relative_to(top).parts
        return any(self.holds_state(top.joinpath(*parts[:k])) for k in range(1, len(parts)))


def expand_inputs(items: list[str], stdin=None, exclude: Iterable[Path] = ()) -> list[Path]:
    """Paths in the order given; directories are searched recursively (sorted), globs are
    expanded (sorted). `-` reads one path per line from stdin (a directory there is searched
    too; no glob expansion, so file names with `*` pass through). A missing path, or a glob
    that matches nothing, stays in the list so that it gets its own error line. Output folders
    (those holding `.onnxpath/`) below a folder or a glob's root are never searched."""
    exclude = list(exclude)
    result: list[Path] = []
    for item in items:
        if item == "-":
            stream = stdin or sys.stdin
            for line in stream:
                name = local_name(line.rstrip("\r\n"))
                if is_url(name.strip()):
                    result.append(RemotePath(name.strip()))
                elif name.strip():
                    path = Path(name)
                    result.extend(scan(path, exclude) if path.is_dir() else [path])
            continue
        item = local_name(item)  # file:///path is the local path
        if is_url(item):
            result.extend(remote_inputs(item))
            continue
        path = Path(item)
        if path.is_dir():
            result.extend(scan(path, exclude))
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            # Like a folder's scan: nothing from an output folder below the pattern's root
            top, outputs = glob_root(item), OutputFolders()
            matches = [p for p in matches if not p.is_relative_to(top) or not (
                outputs.inside(p, top) or p.is_dir() and outputs.holds_state(p))]
            files = [p for p in matches if p.is_file()]
            for folder in (p for p in matches if p.is_dir()):
                files.extend(scan(folder, exclude))
            result.extend(files or [path])
        else:
            result.append(path)
    return result


def glob_root(pattern: str) -> Path:
    """The folder a glob pattern starts from: its path up to the first magic part."""
    parts = Path(pattern).parts
    fixed = next(k for k, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:fixed]) if fixed else Path()


def remote_inputs(url: str) -> list[RemotePath]:
    """A URL names one input; with a glob (`s3://bucket/photos/*.jpg`) its matches, sorted.
    No match keeps the URL, so that it gets its own error line."""
    if not glob.has_magic(url):
        return [RemotePath(url)]
    fs, pattern = filesystem(url)
    matches = sorted(fs.unstrip_protocol(p) for p in fs.glob(pattern)
                     if is_input_file(Path(p)))
    return [RemotePath(m) for m in matches] or [RemotePath(url)]


def output_stems(paths: list[Path]) -> list[str]:
    """`stem`, or `parent_stem` (then a counter) when several inputs share a stem. Depends only
    on the list, so a rerun over the same inputs writes the same names."""
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
