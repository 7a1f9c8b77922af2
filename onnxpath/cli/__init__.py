"""The `onnxpath` command: a thin typer layer over the library API.

Errors a user can act on (`OnnxPathError`) print one line on stderr and exit with their code;
`--debug` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from ..errors import OnnxPathError

app = typer.Typer(
    name="onnxpath",
    help="Explain ONNX image classifiers as deployed: pathway gradient, critical pathways and "
         "the standard attribution baselines, on ONNX Runtime alone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



@app.callback()
def _root() -> None:
    """Explain ONNX image classifiers as deployed. See `onnxpath COMMAND --help`."""


from . import (  # noqa: E402,F401,I001
    attribute,  # noqa: E402,F401  (each command module registers itself on `app`)
    check_grad,
    evaluate,
    export,
    inspect,
    pathway,
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="onnxpath", standalone_mode=False)
    except OnnxPathError as err:
        if debug:
            raise
        print(f"onnxpath: error: {err}", file=sys.stderr)
        code = err.exit_code
    except typer.Exit as err:
        code = err.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("onnxpath: interrupted", file=sys.stderr)
        code = 130
    except typer.TyperException as err:  # usage errors: bad option, missing argument, ...
        if not hasattr(err, "show"):
            raise
        err.show()
        code = getattr(err, "exit_code", 2)
    return int(code or 0)


def run() -> None:
    sys.exit(main())
