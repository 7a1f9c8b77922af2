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
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any, NamedTuple

import typer
from typer.core import DEFAULT_MARKUP_MODE
from typer.models import ParameterInfo


class Flag(NamedTuple):
    """One command-line parameter. `name` is typer's parameter name (the attribute on `o`),
    `type` the annotation typer converts the value to, `info` a `typer.Option(...)` or
    `typer.Argument(...)` with the flag's spelling, default and help."""

    name: str
    type: Any
    info: ParameterInfo


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

    def register(func: Callable[[SimpleNamespace], int]) -> Callable[[SimpleNamespace], int]:
        def callback(**values):
            return func(SimpleNamespace(**values))

        callback.__signature__ = params
        callback.__name__ = func.__name__
        callback.__qualname__ = func.__qualname__
        callback.__module__ = func.__module__
        callback.__doc__ = plain(func.__doc__)
        app.command(name)(callback)
        return func

    return register
