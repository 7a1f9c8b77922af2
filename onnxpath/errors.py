"""Errors a user can act on. Each carries the exit code that `conventions.md` assigns.

The CLI prints `str(error)` on one line and exits with `error.exit_code`; anything that is not an
`OnnxPathError` is a bug and keeps its traceback.
"""


class OnnxPathError(Exception):
    """Base class: a one-line message that names the thing and what to do."""

    exit_code = 2


class ModelError(OnnxPathError):
    """The model cannot be loaded, normalised or differentiated. Nothing is processed."""


class UnsupportedOpError(ModelError):
    """An op on the differentiated path has no gradient rule."""

    def __init__(self, ops: list[tuple[str, str]]):
        self.ops = ops
        listed = ", ".join(f"{op} (node '{name}')" for op, name in ops)
        super().__init__(
            f"no gradient rule for {listed}; use a forward-only method (occlusion, rise) "
            "or report the op"
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


class EngineError(OnnxPathError):
    """The distributed engine (Ray) is not installed or its cluster cannot be reached."""
