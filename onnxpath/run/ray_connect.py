"""`--engine ray`'s connection to Ray: bounded in time, stoppable, one line when it fails.

- Without an address (and without $RAY_ADDRESS) the run starts a private local Ray. It never
  joins the cluster that `ray start` last recorded in /tmp/ray/ray_current_cluster: that one
  may be gone, and Ray would then retry it for many minutes. `auto` still means that cluster.
- The whole connection (reachability, then `ray.init`) runs in a helper thread, and the main
  thread waits for it at most `timeout` seconds: `ray.init` can block in Ray's own GCS retries
  (about 35 s per try, 20 tries). The main thread keeps handling SIGINT and SIGTERM meanwhile.
- SIGTERM during a run raises `Terminated` (a SystemExit of 143) in the main thread, so the
  run stops at any stage and its cleanup runs; a second SIGTERM kills at once.
- Ray's C++ core writes its warnings straight to file descriptor 2. Without --debug, those
  written while connecting are dropped (the failure is reported in one line instead), and so
  is the error line Ray Data's actor pool causes on every run (ray-project/ray#57733).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time

from onnxpath.errors import EngineError, UsageError

TIMEOUT = 30.0  # seconds: the default bound on a connection (`Cluster.timeout`)
TERMINATED = 128 + signal.SIGTERM  # the exit status of a run stopped by SIGTERM
# A line of Ray's C++ logging at warning level or above: `[2026-01-01 10:00:00,000 W 1 2] ...`
RAY_CORE_WARNING = re.compile(rb"^\[[\d\- :,.]+ [WEF] \d+ \d+\] ")
# Ray Data passes object refs to every actor of its pool (its transform, its context), and
# Ray core reports that at error level for any actor that may restart: not actionable here.
POOL_ACTOR_ARGS = re.compile(rb"has constructor arguments in the object store and "
                             rb"max_restarts > 0")
# When a run stops early (SIGTERM, an error), Ray Data kills its actors, and the raylet reports
# each task still queued on them as failed, a line forwarded to the driver's stderr before
# onnxpath's own one-line message. Not actionable: the run is stopping.
KILLED_AT_TEARDOWN = re.compile(rb"The actor is dead because it was killed by `ray\.kill`")


class Terminated(SystemExit):
    """SIGTERM arrived during a run: the process exits with 143 once cleanup has run."""

    def __init__(self) -> None:
        super().__init__(TERMINATED)


def target(address: str | None) -> str:
    """Where to connect: `address`, else $RAY_ADDRESS, else "local" (a new private Ray).
    `auto` becomes the cluster that `ray start` recorded (or the one running here)."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # another Ray version: let ray.init look (still within the timeout)
        return address
    try:
        return canonicalize_bootstrap_address("auto") or "local"
    except (ConnectionError, ValueError) as err:
        raise EngineError("--address auto found no Ray cluster on this machine: start one "
                          "(ray start --head), give its address, or leave out --address "
                          "for a private local Ray") from err


def check_reachable(address: str | None, timeout: float = 10.0, name: str | None = None) -> None:
    """Ray retries an unreachable head node for minutes; try its port once, briefly, first.
    `name`: how the error names the address (default: the address)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise UsageError(f"--address takes auto, HOST:PORT or ray://HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise EngineError(f"cannot reach the Ray cluster at {name or address}: "
                          f"{err.strerror or type(err).__name__}") from err


def connect(ray, address: str | None, debug: bool = False,
            timeout: float = TIMEOUT) -> Connection | None:
    """Join the cluster at `address` (see `target`) or start a private local one, within
    `timeout` seconds. Returns the connection to close after the run, or None when Ray was
    connected already (by the caller, whose connection it stays)."""
    if ray.is_initialized():
        return None
    given, address = address or os.environ.get("RAY_ADDRESS"), target(address)
    name = f"{address} (the last cluster `ray start` recorded: --address auto)" \
        if given == "auto" and address != "auto" else address
    where = "a new local Ray" if address == "local" else f"the Ray cluster at {name}"
    connection = Connection(ray)
    outcome: dict = {}
    done = threading.Event()

    def keep() -> None:
        try:
            check_reachable(address, timeout, name)
            ray.init(address=address, include_dashboard=False, log_to_driver=True,
                     logging_level=logging.INFO if debug else logging.ERROR)
        except BaseException as err:  # noqa: BLE001 -- handed to the waiting main thread
            outcome["error"] = err
            return
        finally:
            done.set()
        # Ray binds the processes it starts to the life of this thread (PR_SET_PDEATHSIG):
        # it stays until the run is over.
        connection.released.wait()
        if connection.abandoned:  # connected after all, but nobody waits for it any more
            ray.shutdown()

    deadline = time.monotonic() + timeout
    with dropping_stderr(None if debug else RAY_CORE_WARNING):
        connection.thread = threading.Thread(target=keep, name="onnxpath-ray", daemon=True)
        connection.thread.start()
        try:
            while not done.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    raise EngineError(
                        f"{where} did not answer within {timeout:g} s" if address != "local"
                        else f"a new local Ray did not start within {timeout:g} s")
        except BaseException:
            # Ray cannot be interrupted in its connection retries: its thread is left behind
            # (a daemon), to shut down what it may still connect.
            connection.abandon()
            raise
    err = outcome.get("error")
    if isinstance(err, EngineError | UsageError):
        raise err
    if err is not None:  # ConnectionError, RuntimeError, ValueError, ... per version
        raise EngineError(f"cannot connect to {where}: {first_line(err)}") from err
    return connection


class Connection:
    """A connection `connect` made, and the thread that made it."""

    def __init__(self, ray):
        self.ray = ray
        self.thread: threading.Thread | None = None
        self.released = threading.Event()
        self.abandoned = False

    def close(self) -> None:
        """Disconnect (and stop a local Ray), then let the thread go."""
        try:
            self.ray.shutdown()
        finally:
            self.released.set()
        if self.thread is not None:
            self.thread.join(5.0)

    def abandon(self) -> None:
        self.abandoned = True
        self.released.set()


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def stopping_on_sigterm():
    """SIGTERM raises `Terminated` in the main thread (installed there only), once: a second
    one kills at once. Yields `arm`, to call again once Ray is connected: its core worker
    puts its own handler in place (which prints a stack trace first). The previous handler
    is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    def arm() -> None:
        signal.signal(signal.SIGTERM, terminate)

    previous = signal.getsignal(signal.SIGTERM)
    arm()
    try:
        yield arm
    except Terminated:
        print("onnxpath: terminated (SIGTERM); every result already reported is complete",
              file=sys.stderr, flush=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def dropping_stderr(drop: re.Pattern[bytes] | None):
    """File descriptor 2 through a pipe that drops the lines matching `drop` (None: leave it
    alone). Ray's C++ core writes there directly, past sys.stderr."""
    if drop is None:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        yield
        return
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    pump = threading.Thread(target=forward, args=(read, saved, drop), daemon=True,
                            name="onnxpath-stderr")
    pump.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer here: the pump sees its end
        pump.join(1.0)
        if not pump.is_alive():  # else a child process inherited the pipe: keep pumping
            os.close(saved)


def forward(read: int, out: int, drop: re.Pattern[bytes]) -> None:
    """Copy `read` to `out` line by line, less the lines matching `drop`."""
    pending = b""
    while chunk := os.read(read, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not drop.search(line))
        if pending and not pending.startswith(b"["):  # not a log line: a prompt, a bar
            kept, pending = kept + pending, b""
        write_all(out, kept)
    write_all(out, b"" if drop.search(pending) else pending)
    os.close(read)


def write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]
