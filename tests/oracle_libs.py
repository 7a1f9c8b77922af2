"""The oracle libraries that are not installed by `pip install -e ".[test]"`: pytorch-grad-cam,
Zennit and Quantus.

Each declares torchvision as a requirement, and the registry has no torchvision build for the
CPU torch the tests pin (its CUDA builds fail to load against it). `.ci/run` therefore installs
the three with `--no-deps`; their other requirements are in the `test` extra. They import only a
few names from torchvision and never use them on the paths the tests call, so `tests/shims`
supplies those names when no working torchvision is present; the shim raises on any use.

`oracle(name)` imports one of them: without it the test skips locally with the reason, and
fails when `CI` is set (CI must run every oracle check), as the browser tests do.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

INSTALL = "pip install --no-deps grad-cam==1.5.7 zennit==0.5.1 quantus==0.6.0"
SHIMS = Path(__file__).parent / "shims"


def _torchvision_or_shim() -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a build that cannot load against this torch
        for name in [m for m in sys.modules if m == "torchvision" or
                     m.startswith("torchvision.")]:
            del sys.modules[name]
        if str(SHIMS) not in sys.path:
            sys.path.insert(0, str(SHIMS))


def oracle(module: str):
    """The oracle library `module` (pytorch_grad_cam, zennit, quantus), imported."""
    _torchvision_or_shim()
    try:
        return importlib.import_module(module)
    except ImportError as error:
        reason = f"oracle '{module}' is not installed ({error}); `{INSTALL}`"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run every oracle check; .ci/run installs it")
        pytest.skip(f"{reason}; the oracle checks run in CI")
