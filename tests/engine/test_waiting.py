"""How a session's idle worker threads wait: the sessions of graphs with a backward pass spin
briefly between kernels and stop spinning when a run returns; forward graphs, the intake probe
and runtimes too old to bound a spin keep their workers asleep (`spin_entries`)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxpath import Explainer
from onnxpath.engine.cache import SessionCache
from onnxpath.ort import sessions

pytestmark = pytest.mark.filterwarnings(
    "ignore::onnxpath.methods.pathway.PathwayChangeWarning")

SPIN = "session.intra_op.allow_spinning"
DURATION = "session.intra_op.spin_duration_us"
STOP = "session.force_spinning_stop"


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w", (16, 3, 3, 3)), ("fc", (16, 10)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("MatMul", ["f", "fc"], ["logits"])],
        "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], weights)
    path = tmp_path / "net.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                     .SerializeToString())
    return path


def waiting(session_or_options) -> dict[str, str]:
    """The waiting entries a session (or options) holds; ORT raises for a key never set."""
    options = session_or_options.get_session_options() \
        if hasattr(session_or_options, "get_session_options") else session_or_options
    found = {}
    for key in (SPIN, DURATION, STOP):
        with contextlib.suppress(RuntimeError):
            found[key] = options.get_session_config_entry(key)
    return found


BRIEF = {SPIN: "1", DURATION: str(sessions.BRIEF_SPIN_US), STOP: "1"}
ASLEEP = {SPIN: "0"}
X = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


def explain(path, **kwargs) -> Explainer:
    explainer = Explainer(path, threads=2, **kwargs)
    explainer.predict(X)  # the forward session
    explainer.attribute(X, "gradient", target=3)
    explainer.attribute(X, "pathway", target=3)
    return explainer


def the_sessions(explainer: Explainer) -> tuple[object, list, list]:
    """(the forward session, the gradient sessions, the pathway's tap sessions)."""
    engine = explainer.engine(X.shape)
    taps = [s for recipe, s in engine._sessions.items() if recipe[0] == "contribution-taps"]
    return engine._forward, list(engine._gradients.values()), taps


@pytest.mark.skipif(not sessions.BOUNDED_SPIN, reason="this ONNX Runtime cannot bound a spin")
@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "cached"])
def test_backward_graphs_spin_briefly_and_forward_graphs_sleep(model, tmp_path, cached):
    kwargs = {"cache": SessionCache(tmp_path / "cache")} if cached else {"cache": False}
    if cached:
        explain(model, **kwargs)  # fills the cache; the explainer below loads from it
    explainer = explain(model, **kwargs)
    forward, gradients, taps = the_sessions(explainer)
    assert gradients and taps
    for session in [*gradients, *taps]:
        assert waiting(session) == BRIEF
    assert waiting(forward) == ASLEEP
    if cached:
        assert kwargs["cache"].hits > 0


def test_a_runtime_that_cannot_bound_a_spin_keeps_every_worker_asleep(model, monkeypatch):
    monkeypatch.setattr(sessions, "BOUNDED_SPIN", False)
    forward, gradients, taps = the_sessions(explain(model, cache=False))
    for session in [forward, *gradients, *taps]:
        assert waiting(session) == ASLEEP


def test_the_probe_and_plain_sessions_sleep():
    assert sessions.spin_entries(False) == ASLEEP
    assert waiting(sessions.session_options(1, once=True, brief_spin=True)) == ASLEEP
    assert waiting(sessions.session_options(2)) == ASLEEP


def test_spinning_changes_no_map(model):
    maps = {}
    for bounded in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sessions, "BOUNDED_SPIN", bounded)
            explainer = Explainer(model, threads=2, cache=False)
            maps[bounded] = [explainer.attribute(X, m, target=3).maps
                             for m in ("gradient", "pathway")]
    for a, b in zip(maps[False], maps[True], strict=True):
        np.testing.assert_array_equal(a, b)
