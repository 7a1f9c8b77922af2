"""Locations of results and inputs: a local (or shared) filesystem, or object storage named by a
URL (`s3://…`, `gs://…`, any protocol fsspec knows) when the user has fsspec and its backend
installed.

`RemotePath` offers the few pathlib.Path methods the pipeline and the resume state use, so the
code that writes results does not care where they go. Object stores have no rename, but a
single PUT is atomic there: each file is uploaded in one call and appears whole or not at all.
"""

from __future__ import annotations

import posixpath
import re
import urllib.request
from pathlib import Path

from onnxpath.errors import OutputError, UsageError

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
FILE_URL = re.compile(r"^file://([^/]*)(/.*)?$", re.IGNORECASE)


def is_url(text: str | Path) -> bool:
    return isinstance(text, str) and bool(URL.match(text))


def local_name(text: str | Path) -> str | Path:
    """A `file://` URL as the local path it names (`file:///tmp/run`, `file://localhost/tmp/run`
    -> `/tmp/run`, percent-escapes decoded); anything else as it is. A file URL naming
    another host is a usage error."""
    match = FILE_URL.match(text) if isinstance(text, str) else None
    if match is None:
        return text
    host, path = match.group(1), match.group(2) or ""
    if host.lower() not in ("", "localhost") or not path:
        raise UsageError(f"{text}: a file:// URL must name a local absolute path "
                         "(file:///path/to/folder); give the path itself")
    return urllib.request.url2pathname(path)


def location(text: str | Path) -> Path | RemotePath:
    """A folder given on the command line: a URL becomes a RemotePath, a `file://` URL or
    anything else a Path."""
    text = local_name(text)
    return RemotePath(text) if is_url(text) else Path(text)


def as_location(path: str | Path | RemotePath) -> Path | RemotePath:
    """An input as given (a string, a Path, a RemotePath) as a Path or a RemotePath."""
    return path if isinstance(path, Path | RemotePath) else location(str(path))


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for `url`; a missing fsspec or backend is a usage
    error that says what to install."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as err:
        raise UsageError(f"{url}: writing to a URL needs fsspec (pip install fsspec, plus s3fs "
                         "for s3:// or gcsfs for gs://)") from err
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise UsageError(f"{url}: {err}") from err


class RemotePath:
    """A file or folder in object storage, spelled as a URL."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") if not url.endswith("://") else url

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __reduce__(self):  # Ray ships jobs to workers by pickling
        return RemotePath, (self.url,)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url)

    @property
    def parent(self) -> RemotePath:
        return RemotePath(posixpath.dirname(self.url))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    def resolve(self) -> RemotePath:
        return self

    def open(self, mode: str = "rb"):
        fs, path = self._fs()
        return fs.open(path, mode)

    def _fs(self):
        return filesystem(self.url)

    def exists(self) -> bool:
        fs, path = self._fs()
        return fs.exists(path)

    def read_bytes(self) -> bytes:
        fs, path = self._fs()
        return fs.cat_file(path)

    def write_bytes(self, data: bytes) -> RemotePath:
        """One upload: the object appears whole or not at all."""
        fs, path = self._fs()
        fs.pipe_file(path, data)
        return self

    def unlink(self, missing_ok: bool = False) -> None:
        fs, path = self._fs()
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        fs, path = self._fs()
        fs.makedirs(path, exist_ok=True)

    def check_writable(self, option: str = "--out") -> RemotePath:
        probe = self / ".onnxpath-probe"
        try:
            self.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)
        except (OSError, ValueError, PermissionError) as err:
            raise OutputError(f"cannot write to {option} {self}: {err}") from err
        return self
