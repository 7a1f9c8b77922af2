"""The `onnxpath` command: a thin typer layer over the library API.

Errors a user can act on (`OnnxPathError`) print one line on stderr and exit with their code;
`--debug` anywhere on the command line shows the traceback instead. SIGTERM stops a command at
any stage like Ctrl-C does: cleanup runs (atomic files, --npz, the report), one line, exit 143.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from difflib import get_close_matches

import typer

from onnxpath import errors
from onnxpath.errors import OnnxPathError, unexpected
from onnxpath.run.ray_connect import Terminated
from onnxpath.version import __version__

app = typer.Typer(
    name="onnxpath",
    help="Explain ONNX image classifiers as deployed: pathway gradient, critical pathways and "
         "the standard attribution baselines, on ONNX Runtime alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"onnxpath {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Show the version and exit.",
                                       callback=show_version, is_eager=True)) -> None:
    """Explain ONNX image classifiers as deployed. See `onnxpath COMMAND --help`."""


from onnxpath.cli import (  # noqa: E402,F401,I001
    attribute,  # noqa: E402,F401  (each command module registers itself on `app`)
    cache,
    check_grad,
    evaluate,
    export,
    inspect,
    pathway,
)


def one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach users as one plain line, not Python's two with a source excerpt."""
    print(f"onnxpath: warning: {message}", file=file or sys.stderr, flush=True)


class SigTerm(Terminated):
    """SIGTERM outside the Ray engine's own handler (which says so itself): imports, model
    load, planning, any local run."""


@contextlib.contextmanager
def stopping_on_sigterm():
    """For the whole command, SIGTERM raises `SigTerm` in the main thread, once (a second one
    kills at once); the previous handler is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SigTerm

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    errors.STAGE.clear()
    shown = warnings.showwarning
    if not debug:
        warnings.showwarning = one_line_warnings
    try:
        with stopping_on_sigterm():
            code = app(args=args, prog_name="onnxpath", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into a returned 130, silently
            print("onnxpath: interrupted", file=sys.stderr)
    except Terminated as err:
        # Every result already reported is complete on disk (atomic writes); the Ray engine's
        # own handler has said so already.
        if isinstance(err, SigTerm):
            print("onnxpath: terminated (SIGTERM); every result already reported is complete",
                  file=sys.stderr, flush=True)
        code = err.code
    except OnnxPathError as err:
        if debug:
            raise
        print(f"onnxpath: error: {err}", file=sys.stderr)
        code = err.exit_code
    except typer.Exit as err:
        code = err.exit_code
    except (KeyboardInterrupt, typer.Abort):
        # Every result already reported is complete on disk (atomic writes); say so briefly.
        print("onnxpath: interrupted", file=sys.stderr)
        code = 130
    except typer.TyperException as err:  # usage errors: bad option, missing argument, ...
        if not hasattr(err, "show"):
            raise
        suggest_visible(err)
        err.show()
        code = getattr(err, "exit_code", 2)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do. Further writes to
        # the dead pipe, including the interpreter's final flush, go to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    except Exception as err:  # a bug: one line, never a traceback unless asked for
        if debug:
            raise
        print(f"onnxpath: error: {subject(args)}{unexpected(err, stage_of(args))}",
              file=sys.stderr)
        code = 2
    finally:
        warnings.showwarning = shown
    return int(code or 0)


def suggest_visible(err: Exception) -> None:
    """click's "Possible options" for an unknown flag, from those --help lists: a near miss of
    a hidden old spelling (`declare.renamed`) suggests the flag it now is."""
    command = getattr(getattr(err, "ctx", None), "command", None)
    if not hasattr(err, "possibilities") or command is None:
        return
    from onnxpath.cli.declare import RENAMED

    spellings = {spelling: RENAMED.get((command.name, spelling))
                 if getattr(param, "hidden", False) else spelling
                 for param in command.params
                 for spelling in (*param.opts, *param.secondary_opts) if spelling.startswith("--")}
    matches = get_close_matches(err.option_name, list(spellings))
    err.possibilities = [s for s in dict.fromkeys(spellings[m] for m in matches) if s]


def subject(args: list[str]) -> str:
    """The model the command was given (its first argument), as a prefix of the line."""
    model = next((a for a in args[1:2] if not a.startswith("-")), None)
    return f"{model}: " if model else ""


def stage_of(args: list[str]) -> str:
    """What the command was doing: the last stage the library announced, else the command."""
    if errors.STAGE:
        return errors.STAGE[-1]
    return f"running {args[0] if args else 'onnxpath'}"


def run() -> None:
    sys.exit(main())
