"""The package's structure as the architecture states it: the layers contract in pyproject.toml
holds (no import runs upward, so no circle crosses layers), and the top level stays small."""

from __future__ import annotations

import os
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_layers_import_only_downward(capsys):
    here = os.getcwd()
    os.chdir(ROOT)  # import-linter reads pyproject.toml from the working folder
    try:
        code = lint_imports(no_cache=True)
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 kept, 0 broken" in out


def test_the_top_level_holds_the_public_face_and_the_layers():
    modules = sorted(p.name for p in (ROOT / "onnxpath").glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "errors.py", "explainer.py",
                       "explanation.py", "version.py"]
    for package in (ROOT / "onnxpath").iterdir():
        if package.is_dir() and (package / "__init__.py").exists():
            doc = (package / "__init__.py").read_text().lstrip()
            assert doc.startswith('"""'), f"{package.name}/ states no role"
