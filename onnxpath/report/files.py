"""Where a report goes: one self-contained HTML file with its pictures inlined as data URIs, or
a page with its pictures as files beside it.

- `report.html`: one file. If the inlined pictures would pass `limit` bytes (50 MB), the
  report switches by itself to linked pictures in `report_files/` next to it; the page keeps
  the name the user gave.
- `DIR/` (a trailing slash or an existing folder): `DIR/index.html` plus `DIR/assets/`.

Every file is written atomically, so a watcher reloading the page never sees half of it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from onnxpath.errors import OutputError
from onnxpath.io.outputs import check_writable, write_atomic
from onnxpath.io.storage import local_name

LIMIT = 50_000_000  # bytes of inlined pictures before a file report switches to linked files
MAX_SIDE = 256  # pictures are shrunk to this; the page enlarges small ones crisply


def encode_picture(image: Image.Image, max_side: int = MAX_SIDE) -> tuple[bytes, str]:
    """(bytes, MIME type): a PNG, or a JPEG when that is under half the PNG's size (photos),
    after shrinking the longer side to `max_side`."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    png = io.BytesIO()
    image.save(png, format="PNG", compress_level=6)
    if png.tell() < 24_000:
        return png.getvalue(), "image/png"
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=88)
    if jpeg.tell() * 2 < png.tell():
        return jpeg.getvalue(), "image/jpeg"
    return png.getvalue(), "image/png"


SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg"}
MIME = {"PNG": "image/png", "JPEG": "image/jpeg"}
SMALL = 48_000  # a picture file this small and no larger than MAX_SIDE goes in as it is


def read_picture(path: Path | str) -> tuple[bytes, str] | None:
    """A picture file's bytes for the report: as they are when small enough (an overlay of
    the run: no decoding, no encoding), else shrunk and re-encoded. None when the file is not
    a picture (tensors, text, tables). Large JPEG photos are decoded at reduced scale."""
    try:
        with Image.open(path) as image:
            if (image.format in MIME and max(image.size) <= MAX_SIDE
                    and Path(path).stat().st_size <= SMALL):
                return Path(path).read_bytes(), MIME[image.format]
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at 1/2, 1/4 or 1/8
            image.load()
            return encode_picture(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class ReportFiles:
    """The page and its pictures. `add` stores a picture and returns its key; `url(key)` is
    what an <img src> gets (a data URI, or a relative path); `write(render)` writes the page
    that `render(url)` returns."""

    def __init__(self, target: Path | str, limit: int = LIMIT,
                 note: Callable[[str], None] | None = None):
        text = str(local_name(target))  # file:///path/r.html is the local path
        target = Path(text)
        folder_form = text.endswith(("/", "\\")) or target.is_dir()
        if folder_form:
            self.page = target / "index.html"
            self.folder = target / "assets"
        else:
            if target.suffix.lower() not in (".html", ".htm"):
                raise OutputError(f"--report {target}: give a .html file, or a folder "
                                  "ending in / for index.html plus pictures")
            self.page = target
            self.folder = target.with_name(target.stem + "_files")
        check_writable(self.page.parent, "--report")
        self.linked = folder_form
        self.limit = limit
        self.note = note or (lambda text: None)
        self._pictures: dict[str, tuple[bytes, str]] = {}  # key -> (bytes, mime) while inline
        self._inline: dict[str, str] = {}  # key -> data URI, encoded once
        self._names: dict[str, str] = {}  # key -> file name once linked
        self._size = 0

    @property
    def inline_bytes(self) -> int:
        return self._size

    def add(self, data: bytes, mime: str) -> str:
        key = f"p{len(self._pictures) + len(self._names):05d}"
        if self.linked:
            self._save(key, data, mime)
            return key
        self._pictures[key] = (data, mime)
        self._size += 4 * ((len(data) + 2) // 3) + len(mime) + 13
        if self._size > self.limit:
            self._switch()
        return key

    def add_image(self, image: Image.Image) -> str:
        return self.add(*encode_picture(image))

    def add_file(self, path: Path | str) -> str | None:
        """The picture in `path` (see read_picture), or None when it is not one."""
        found = read_picture(path)
        return None if found is None else self.add(*found)

    def _switch(self) -> None:
        self.note(f"onnxpath: note: the report's pictures pass {self.limit / 1e6:g} MB "
                  f"inlined; writing them to {self.folder}/ beside {self.page.name}")
        self.linked = True
        for key, (data, mime) in self._pictures.items():
            self._save(key, data, mime)
        self._pictures.clear()
        self._inline.clear()
        self._size = 0

    def _save(self, key: str, data: bytes, mime: str) -> None:
        name = key + SUFFIX.get(mime, ".bin")
        self._write(self.folder / name, data)
        self._names[key] = name

    def _write(self, path: Path, data: bytes) -> Path:
        try:
            return write_atomic(path, data)
        except OSError as err:  # a full disk mid-batch: one line, exit 2, results kept
            raise OutputError(f"cannot write the report: {err.strerror or type(err).__name__}"
                              f" ({path})") from err

    def url(self, key: str) -> str:
        if key in self._names:
            return f"{self.folder.name}/{self._names[key]}"
        uri = self._inline.get(key)
        if uri is None:
            data, mime = self._pictures[key]
            uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
            self._inline[key] = uri
        return uri

    def write(self, render: Callable[[Callable[[str], str]], str]) -> Path:
        return self._write(self.page, render(self.url).encode("utf-8"))
