"""Shared test plumbing: tags oracle checks with the running test for the error summary."""

from __future__ import annotations

import pytest

from tests import oracle


@pytest.fixture(autouse=True, scope="session")
def _session_cache_in_a_temporary_folder(tmp_path_factory):
    """Tests never write to the user's cache folder; subprocesses inherit the variable. One
    folder for the whole run, so later tests also exercise cache hits."""
    import os

    folder = tmp_path_factory.mktemp("onnxpath-cache")
    old = os.environ.get("ONNXPATH_CACHE_DIR")
    os.environ["ONNXPATH_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("ONNXPATH_CACHE_DIR", None)
    else:
        os.environ["ONNXPATH_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _name_oracle_checks(request):
    oracle.CURRENT_TEST = request.node.nodeid
    yield


def pytest_terminal_summary(terminalreporter):
    """Worst max relative error per test module (one module per op family), and per model for
    the architecture tests."""
    if not oracle.RECORD:
        return
    worst: dict[str, float] = {}
    for test, error in oracle.RECORD:
        family = test.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        if family.startswith("test_architectures") and "[" in test:
            family += "[" + test.split("[", 1)[1]
        worst[family] = max(worst.get(family, 0.0), error)
    terminalreporter.section("worst gradient max relative error per family")
    for family, error in sorted(worst.items()):
        terminalreporter.write_line(f"{family:32s} {error:.2e}")
