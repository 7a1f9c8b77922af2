"""The on-disk session cache: hits skip the build, keys separate what differs, damage is
survived, and the CLI's --no-cache writes nothing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pipeline_models import classifier, run_cli

import onnxpath.engine.gradient
from onnxpath import Explainer
from onnxpath.autodiff import RULES
from onnxpath.engine.cache import SUFFIX, SessionCache, cache_dir, entry_key

X = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)


def entries(folder):
    return sorted(p.name for p in folder.glob(f"*{SUFFIX}"))


def no_building(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not build a gradient graph")
    monkeypatch.setattr(onnxpath.engine.gradient, "gradient_graph", refuse)


def test_a_second_process_loads_instead_of_building(tmp_path, model, monkeypatch):
    folder = tmp_path / "cache"
    first = Explainer(model, cache=folder)
    expected = first.attribute(X, method="guided-backprop")
    assert len(entries(folder)) == 1 and first.cache.misses == 1
    no_building(monkeypatch)
    second = Explainer(model, cache=folder)
    again = second.attribute(X, method="guided-backprop")
    assert second.cache.hits == 1 and second.cache.misses == 0
    np.testing.assert_allclose(again.maps, expected.maps, rtol=1e-6, atol=1e-7)


def test_pathway_masked_engines_are_cached_too(tmp_path, model, monkeypatch):
    folder = tmp_path / "cache"
    expected = Explainer(model, cache=folder).attribute(X, method="pathway", prune_percent=50)
    no_building(monkeypatch)
    second = Explainer(model, cache=folder)
    again = second.attribute(X, method="pathway", prune_percent=50)
    assert second.cache.misses == 0 and second.cache.hits >= 2  # forward + masked gradients
    np.testing.assert_allclose(again.maps, expected.maps, rtol=1e-6, atol=1e-7)


def test_keys_separate_methods_models_shapes_and_runtimes(tmp_path, model, monkeypatch):
    folder = tmp_path / "cache"
    explainer = Explainer(model, cache=folder)
    explainer.attribute(X, method="gradient")
    explainer.attribute(X, method="guided-backprop")
    explainer.attribute(X, method="gradient", target=1)  # seed as input; its logits serve
    assert len(entries(folder)) == 3
    explainer.predict(X)  # the forward pass
    assert len(entries(folder)) == 4
    other = classifier(tmp_path / "other" / "tiny.onnx", classes=5)
    Explainer(other, cache=folder).attribute(X)
    assert len(entries(folder)) == 5
    base = entry_key(("a",), ("b",), "cpu", ["CPUExecutionProvider"])
    monkeypatch.setattr(ort, "__version__", "0.0.0")
    assert entry_key(("a",), ("b",), "cpu", ["CPUExecutionProvider"]) != base


def test_a_corrupt_entry_is_ignored_and_rebuilt(tmp_path, model):
    folder = tmp_path / "cache"
    expected = Explainer(model, cache=folder).attribute(X).maps
    (entry,) = folder.glob(f"*{SUFFIX}")
    entry.write_bytes(b"\x08\x07 definitely not a model")
    explainer = Explainer(model, cache=folder)
    np.testing.assert_allclose(explainer.attribute(X).maps, expected, rtol=1e-6, atol=1e-7)
    assert explainer.cache.misses == 1
    assert entry.stat().st_size > 100, "rebuilt in place"
    assert Explainer(model, cache=folder).cache.load(entry.name.removesuffix(SUFFIX),
                                                      lambda p: ort.InferenceSession(p))


def test_rules_swapped_at_run_time_are_not_cached(tmp_path, model, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setitem(RULES, "Relu", lambda node, dy, b: [dy[0]])
    Explainer(model, cache=folder).attribute(X)
    assert entries(folder) == []


def test_models_with_external_data_are_not_cached(tmp_path):
    folder = tmp_path / "cache"
    big = classifier(tmp_path / "big.onnx", classes=1100)  # fc: 4400 values, stays on disk
    (tmp_path / "ext").mkdir()
    onnx.save(onnx.load(big), tmp_path / "ext" / "m.onnx", save_as_external_data=True,
              location="w.bin", size_threshold=0)
    Explainer(tmp_path / "ext" / "m.onnx", cache=folder).attribute(X)
    assert entries(folder) == []


def test_cli_no_cache_writes_nothing(capsys, tmp_path, model, images, monkeypatch):
    folder = tmp_path / "cli-cache"
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(folder))
    code, _, err = run_cli(capsys, model, images[0], "--no-cache")
    assert code == 0, err and not folder.exists()
    code, _, _ = run_cli(capsys, model, images[0])
    assert code == 0 and len(entries(folder)) == 1


def test_cache_folder_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ONNXPATH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "onnxpath"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "onnxpath"


def test_trimming_keeps_the_folder_under_its_limit(tmp_path, model):
    folder = tmp_path / "cache"
    cache = SessionCache(folder, max_mb=0.000001)
    Explainer(model, cache=cache).attribute(X)
    assert entries(folder) == [], "over the limit: trimmed right after writing"
    assert SessionCache(folder).clear() == 0


@pytest.mark.parametrize("cache", [False])
def test_explainer_without_cache(tmp_path, model, cache, monkeypatch):
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(tmp_path / "never"))
    Explainer(model, cache=cache).attribute(X)
    assert not (tmp_path / "never").exists()


def test_cache_command_reports_and_clears(capsys, tmp_path, model, monkeypatch):
    from onnxpath.cli import main

    folder = tmp_path / "cmd-cache"
    monkeypatch.setenv("ONNXPATH_CACHE_DIR", str(folder))
    Explainer(model).attribute(X)
    assert main(["cache"]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0 and "removed 1" in capsys.readouterr().out
    assert entries(folder) == []


def test_model_digests_are_remembered_until_the_file_changes(tmp_path, model):
    cache = SessionCache(tmp_path / "cache")
    first = cache.digest(model)
    assert (tmp_path / "cache" / "digests.json").exists()
    assert cache.digest(model) == first
    classifier(model, classes=5)  # rewritten in place: size and mtime change
    assert cache.digest(model) != first
