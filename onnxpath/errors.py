"""Errors a user can act on. Each carries the exit code that `conventions.md` assigns.

The CLI prints `str(error)` on one line and exits with `error.exit_code`; anything that is not an
`OnnxPathError` is a bug and keeps its traceback.
"""


class OnnxPathError(Exception):
    """Base class: a one-line message that names the thing and what to do."""

    exit_code = 2


class ModelError(OnnxPathError):
    """The model cannot be loaded, normalised or differentiated. Nothing is processed."""


class NotDifferentiableError(ModelError):
    """Gradient methods cannot apply to this model; forward-only methods still can."""


class UnsupportedOpError(NotDifferentiableError):
    """An op on the differentiated path has no gradient rule."""

    def __init__(self, ops: list[tuple[str, str]]):
        self.ops = ops
        listed = ", ".join(f"{op} (node '{name}')" for op, name in ops)
        super().__init__(
            f"no gradient rule for {listed}; gradient methods cannot apply: rerun with "
            "--fallback occlusion (or -m occlusion, rise), or report the op"
        )


class InputError(OnnxPathError):
    """One input (image, tensor) is unusable. A batch records it and goes on."""

    exit_code = 1


class UsageError(OnnxPathError):
    """Bad options or arguments. Nothing is processed."""


class DeviceError(OnnxPathError):
    """The requested device cannot be used (no CUDA provider, or it failed to start)."""


class OutputError(OnnxPathError):
    """The output folder cannot be written. Nothing is processed."""


DEBUG_HINT = "rerun with --debug to see the traceback"
# The stage onnxpath last entered (loading, normalising, building, running): what a one-line
# report of an unexpected error names. Set by `stage()`; the CLI clears it per command.
STAGE: list[str] = []


def stage(text: str) -> None:
    """Announce the stage being entered (replaces the previous one)."""
    STAGE[:] = [text]


def unexpected(err: BaseException, stage: str) -> str:
    """One line for an exception onnxpath did not foresee (a bug): what failed, where, and
    how to see more."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if len(what) > 300:
        what = what[:297] + "..."
    return f"unexpected error while {stage} ({what}); {DEBUG_HINT}"
