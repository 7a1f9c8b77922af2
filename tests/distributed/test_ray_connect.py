"""`--engine ray`'s connection: a stale cluster, a dead or silent address, SIGTERM and SIGINT.

Each run is a child process with its own $RAY_TMPDIR (where `ray start` records its address,
as /tmp/ray/ray_current_cluster on a user's machine), so no test touches another's Ray. The
children are ended by id at teardown if anything is left of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from distributed_inputs import make_inputs
from pipeline_models import default_sigint

from onnxpath.errors import EngineError
from onnxpath.run.ray import Cluster, on_ray

pytest.importorskip("ray")

RAY_BIN = Path(sys.executable).with_name("ray")
RUN = ("--engine", "ray", "--actors", "1", "-q")


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """A short private $RAY_TMPDIR (Ray's socket paths must stay short), without
    $RAY_ADDRESS; at teardown, any process still running from it is killed."""
    folder = Path(tempfile.mkdtemp(prefix="opr", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield folder
    kill(processes_under(folder))
    shutil.rmtree(folder, ignore_errors=True)


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def processes_under(folder: Path) -> list[int]:
    """Processes whose command line names `folder` (Ray's own name their session folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(folder).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def stale(ray_tmpdir) -> str:
    """A cluster started with `ray start`, then killed uncleanly: its address file stays."""
    port = free_port()
    started = subprocess.run(
        [str(RAY_BIN), "start", "--head", "--num-cpus", "1", "--port", str(port),
         "--include-dashboard=false", "--disable-usage-stats"],
        capture_output=True, text=True, timeout=120, start_new_session=True)
    assert started.returncode == 0, started.stderr
    kill(processes_under(ray_tmpdir))
    recorded = ray_tmpdir / "ray" / "ray_current_cluster"
    assert recorded.exists()
    address = recorded.read_text().strip()
    assert address.endswith(f":{port}")
    return address


@pytest.fixture
def listener():
    """A port that accepts TCP connections and never answers (a hung head node)."""
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen(64)
        server.settimeout(60)
        yield server


@pytest.fixture
def silent(listener) -> str:
    return f"127.0.0.1:{listener.getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def onnxpath(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onnxpath", "attribute", *map(str, args)],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)


def finish(child: subprocess.Popen, timeout: float) -> tuple[int, str, str, float]:
    start = time.monotonic()
    out, err = child.communicate(timeout=timeout)
    return child.returncode, out, err, time.monotonic() - start


def test_without_an_address_a_stale_cluster_is_ignored_for_a_private_local_ray(
        stale, tmp_path, model):
    inputs = make_inputs(tmp_path / "in", 2)
    code, out, err, _ = finish(onnxpath(model, *inputs, *RUN, cwd=tmp_path), 120)
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert err == ""  # nothing from Ray: no GCS retries, no core_worker.cc line

    # The dead address itself, given explicitly: an error at once (exit 2 in the CLI).
    start = time.monotonic()
    with pytest.raises(EngineError) as caught, on_ray(Cluster(stale, timeout=10), False):
        pass
    assert time.monotonic() - start < 5
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"cannot reach the Ray cluster at {stale}: Connection refused"


def test_a_cluster_that_never_answers_is_one_line_within_the_timeout(ray_tmpdir, silent,
                                                                     tmp_path):
    script = ("import sys, time\n"
              "from onnxpath.errors import EngineError\n"
              "from onnxpath.run.ray import Cluster, on_ray\n"
              "start = time.monotonic()\n"
              "try:\n"
              f"    with on_ray(Cluster({silent!r}, timeout=3), debug=False):\n"
              "        pass\n"
              "except EngineError as err:\n"
              "    print(f'{time.monotonic() - start:.1f}', err.exit_code, err, file=sys.stderr)\n"
              "    sys.exit(err.exit_code)\n")
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert child.returncode == 2
    seconds, code, *message = child.stderr.split(" ", 2)
    assert child.stderr.count("\n") == 1  # no Ray lines: its GCS warnings are dropped
    assert 3 <= float(seconds) < 6 and code == "2"
    assert message == [f"the Ray cluster at {silent} did not answer within 3 s\n"]


@pytest.mark.parametrize("stop, code, line", [
    (signal.SIGTERM, 143, "onnxpath: terminated (SIGTERM); every result already reported is "
                          "complete"),
    (signal.SIGINT, 130, "onnxpath: interrupted"),
])
def test_a_signal_stops_the_connection_at_once(ray_tmpdir, listener, silent, tmp_path, model,
                                               stop, code, line):
    inputs = make_inputs(tmp_path / "in", 1)
    child = onnxpath(model, *inputs, *RUN, "--address", silent, cwd=tmp_path)
    knock, _ = listener.accept()  # it is connecting (Ray would retry for minutes)
    time.sleep(1)
    assert child.poll() is None
    child.send_signal(stop)
    status, out, err, seconds = finish(child, 30)
    assert status == code and out == ""
    assert [text for text in err.splitlines() if text] == [line]
    assert seconds < 5


def test_sigterm_mid_run_stops_it_promptly_in_one_line(ray_tmpdir, tmp_path, model):
    inputs = make_inputs(tmp_path / "in", 300)
    out = tmp_path / "out"
    child = onnxpath(model, *inputs, *RUN, "-o", out, cwd=tmp_path)
    deadline = time.monotonic() + 90
    while not list(out.glob("*.npy")) and time.monotonic() < deadline:  # actors at work
        assert child.poll() is None, child.communicate()
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    status, _, err, seconds = finish(child, 30)
    assert status == 143
    assert err.splitlines() == ["onnxpath: terminated (SIGTERM); every result already "
                                "reported is complete"]
    assert seconds < 20
    assert len(list(out.glob("*.npy"))) < 300  # it did stop


def test_the_stderr_filter_drops_ray_teardown_noise_and_keeps_the_rest():
    """What `dropping_stderr` lets through while a run is connected: the raylet's report of
    tasks failed because a stopping run killed their actors goes; other lines, colour codes
    and all, and a partial last line stay."""
    from onnxpath.run.ray_connect import KILLED_AT_TEARDOWN, forward
    killed = (b"\x1b[33m(raylet)\x1b[0m Task MapWorker(MapBatches(ExplainBatch)).submit failed."
              b" There are 2 retries remaining, so the task will be retried. Error: The actor "
              b"is dead because it was killed by `ray.kill`.\n")
    died = b"\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task.\n"
    read, write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(write, died + killed + b"onnxpath: terminated (SIGTERM)\n" + b"partial")
    os.close(write)
    forward(read, out_write, KILLED_AT_TEARDOWN)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as kept:
        assert kept.read() == died + b"onnxpath: terminated (SIGTERM)\npartial"
