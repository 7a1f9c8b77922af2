"""Flags as data, and the decorator that turns a list of them into a typer command.

A command's options used to be one long signature of `typer.Option(...)` defaults, retyped in
each command that shared them, so the same flag drifted apart. Here a flag is declared once
(`Flag`: parameter name, Python type, typer's `OptionInfo`/`ArgumentInfo`), flags are grouped
in tuples (see `options`), and `@command(app, GROUP, FLAG, ...)` registers a function that
takes one namespace `o` of every value. Typer reads the command's parameters from
`inspect.signature`, which honours `__signature__`: the decorator builds that signature from
the flags, in the order given, so `--help` lists them in that order.

Help texts are plain text: where typer renders help with Rich markup, their square brackets
(`pip install 'onnxpath[text]'`) are escaped, so Rich does not take them for style tags.

A flag that was renamed keeps its old spelling as a hidden alias (`renamed`): the old spelling
still works, prints one warning line naming the new flag, and its value reaches the command as
the new flag's. `RENAMED` lists every alias of every command; `--help` and click's "Possible
options" never show them.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any, NamedTuple

import typer
from typer.core import DEFAULT_MARKUP_MODE
from typer.models import ParameterInfo

from onnxpath.errors import UsageError


class Flag(NamedTuple):
    """One command-line parameter. `name` is typer's parameter name (the attribute on `o`),
    `type` the annotation typer converts the value to, `info` a `typer.Option(...)` or
    `typer.Argument(...)` with the flag's spelling, default and help."""

    name: str
    type: Any
    info: ParameterInfo
    renamed: str | None = None  # a hidden old spelling: the name of the flag it now is
    why: str = ""  # said after the warning, e.g. what the old spelling means elsewhere


CONTEXT = "click_context"  # the parameter typer fills with the click context
# (command, old spelling): the new spelling, for every hidden alias of every command.
RENAMED: dict[tuple[str, str], str] = {}


def spelling(flag: Flag) -> str:
    """The flag's first long spelling, as help and messages name it."""
    return next(d for d in flag.info.param_decls if d.startswith("--")).split("/")[0]


def renamed(old: str, new: Flag, why: str = "") -> Flag:
    """`old`, the former spelling of `new`: hidden, no default, the same type. Given, it warns
    in one line and its value becomes `new`'s (given with `new` too: a usage error)."""
    name = f"{new.name}__{old.lstrip('-').replace('-', '_')}"
    return Flag(name, new.type, typer.Option(None, old, hidden=True,
                                             help=f"Old spelling of {spelling(new)}."),
                renamed=new.name, why=why)


def flags_of(declared: Iterable[Flag | tuple]) -> list[Flag]:
    """Flags and (nested) groups of flags, flattened in order."""
    flags: list[Flag] = []
    for item in declared:
        if isinstance(item, Flag):
            flags.append(item)
        elif isinstance(item, tuple):
            flags.extend(flags_of(item))
        else:
            raise TypeError(f"not a Flag or a group of flags: {item!r}")
    return flags


def plain(text: str | None) -> str | None:
    """`text` as Rich shows it literally, when typer renders help with Rich markup."""
    if text is None or DEFAULT_MARKUP_MODE != "rich":
        return text
    from rich.markup import escape
    return escape(text)


def signature(flags: list[Flag]) -> inspect.Signature:
    """The signature typer reads: one keyword parameter per flag, its info (a copy, its help
    made `plain`) as the default."""
    names = [f.name for f in flags]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # two declarations of one parameter: the command would keep only one
        raise TypeError(f"flags declared twice: {', '.join(twice)}")
    params = []
    for f in flags:
        info = copy.copy(f.info)  # a shared declaration is escaped once per command
        info.help = plain(info.help)
        params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=info, annotation=f.type))
    return inspect.Signature(params)


def command(app: typer.Typer, *declared: Flag | tuple, name: str | None = None
            ) -> Callable[[Callable[[SimpleNamespace], int]], Callable[[SimpleNamespace], int]]:
    """Register `func(o) -> int` on `app` as a command taking the `declared` flags, in order.

    The command's name, help and examples come from `func` (`name` overrides the name, as in
    `app.command(name)`). `func` itself is returned unchanged, so it can be called with any
    namespace."""
    flags = flags_of(declared)
    params = signature(flags)
    by_name = {f.name: f for f in flags}
    aliases = [f for f in flags if f.renamed is not None]
    unknown = [f.renamed for f in aliases if f.renamed not in by_name]
    if unknown:
        raise TypeError(f"renamed to flags the command lacks: {', '.join(unknown)}")

    if aliases:  # typer hands the click context to a parameter of this type
        params = params.replace(parameters=[*params.parameters.values(), inspect.Parameter(
            CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)])

    def register(func: Callable[[SimpleNamespace], int]) -> Callable[[SimpleNamespace], int]:
        title = name or func.__name__.replace("_", "-")
        for alias in aliases:
            RENAMED[(title, spelling(alias))] = spelling(by_name[alias.renamed])

        def callback(**values):
            ctx = values.pop(CONTEXT, None)
            for alias in aliases:
                value = values.pop(alias.name)
                if value is not None:
                    new = by_name[alias.renamed]
                    given = ctx is not None and ctx.get_parameter_source(new.name).name \
                        == "COMMANDLINE"
                    values[new.name] = take_old(title, alias, new, value, given)
            return func(SimpleNamespace(**values))

        callback.__signature__ = params
        callback.__name__ = func.__name__
        callback.__qualname__ = func.__qualname__
        callback.__module__ = func.__module__
        callback.__doc__ = plain(func.__doc__)
        app.command(name)(callback)
        return func

    return register


def take_old(command_name: str, alias: Flag, new: Flag, value, given: bool):
    """The value given to `alias`, the old spelling of `new`, once the user is told; an error
    when `new` is `given` as well."""
    old, now = spelling(alias), spelling(new)
    if given:
        raise UsageError(f"{old} is the old spelling of {now}; give {now} only")
    why = f" ({alias.why})" if alias.why else ""
    print(f"onnxpath: warning: {command_name} {old} is now {now}{why}; {old} will go",
          file=sys.stderr, flush=True)
    return value
