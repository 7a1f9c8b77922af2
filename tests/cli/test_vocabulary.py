"""One vocabulary across the commands: a flag spelled the same in several commands is the same
flag (spellings, type, default, help), except where VARIANTS says why a command differs.

The commands and their options are read from the click command typer builds, so a new command
(or a new flag on one) is compared without touching this file.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import typer

from onnxpath.cli import app, main
from onnxpath.cli.declare import RENAMED
from onnxpath.version import __version__

COMMANDS = typer.main.get_command(app).commands

# (spelling, command): why that command's flag of this spelling is worded or defaults
# differently, though it means the same. Every other command with the spelling must declare it
# identically. A spelling that meant two things was renamed in one command (see RENAMED).
VARIANTS = {
    ("--target", "attribute"): "the class to explain, as in pathway and check-grad; attribute "
                               "explains any number of classes, so it also takes topK",
    ("--out", "evaluate"): "where results go, a folder, as in attribute; evaluate's holds its "
                           "CSV, JSON, plots and report, and is local (a Path, no s3://)",
    ("--out", "export"): "where the result goes; export's result is one file, the gradient "
                         "graph: a required local path",
    ("--batch-size", "evaluate"): "inputs per run; evaluate measures the fastest batch by "
                                  "default (None), attribute streams results a batch at a "
                                  "time (1)",
    ("--seed", "attribute"): "a random seed: the methods' (smoothgrad, rise, uniform "
                             "baseline); None leaves each method's default (0)",
    ("--seed", "evaluate"): "a random seed: scenes, subsets, tie-breaks and noise of the "
                            "protocols",
    ("--seed", "pathway"): "a random seed: the random and learned selections",
    ("--seed", "check-grad"): "a random seed: the random input and directions",
}


def options():
    """{spelling: {command: click option}} for every option of every command, but the hidden
    old spellings (each an alias of the flag it became; see test_old_spellings_are_aliases)."""
    found = defaultdict(dict)
    for name, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                for spelling in (*param.opts, *param.secondary_opts):
                    found[spelling][name] = param
    return found


def spellings(param) -> tuple[str, ...]:
    return tuple(sorted((*param.opts, *param.secondary_opts)))


def meaning(param) -> tuple:
    """What a user sees of a flag: its spellings, type, default, help and visibility."""
    kind = param.type_descriptor.annotation if hasattr(param, "type_descriptor") else param.type
    return (spellings(param), str(kind), repr(param.default), param.help, param.hidden)


SHARED = {s: cmds for s, cmds in options().items() if len(cmds) > 1}


def test_the_commands_are_enumerated():
    assert {"attribute", "pathway", "evaluate", "export", "check-grad", "inspect"} <= set(COMMANDS)
    assert {"--method", "--out", "--target", "--prune", "--output", "-o", "-m"} <= set(SHARED)


@pytest.mark.parametrize("spelling", sorted(SHARED))
def test_a_spelling_names_one_flag_everywhere(spelling):
    """-o is --out wherever it exists, -m is --method/--methods, --prune has -p, ..."""
    found = {name: spellings(param) for name, param in SHARED[spelling].items()}
    assert len(set(found.values())) == 1, found


@pytest.mark.parametrize("spelling", sorted(s for s in SHARED if s.startswith("--")))
def test_a_shared_flag_means_the_same(spelling):
    commands = SHARED[spelling]
    regular = {name: meaning(p) for name, p in commands.items()
               if (spelling, name) not in VARIANTS}
    assert len(set(regular.values())) <= 1, f"{spelling} differs between commands: {regular}"
    common = next(iter(regular.values()), None)
    for name, param in commands.items():
        if (spelling, name) in VARIANTS:
            assert meaning(param) != common, (
                f"{spelling} in {name} is declared like the others: drop it from VARIANTS")


def test_every_variant_is_a_shared_spelling():
    for spelling, name in VARIANTS:
        assert name in SHARED.get(spelling, {}), (spelling, name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_keeps_square_brackets(capsys, name):
    """Rich took `[text]` in `pip install 'onnxpath[text]'` for a style tag and dropped it."""
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    helps = [p.help or "" for p in COMMANDS[name].params] + [COMMANDS[name].help or ""]
    for text in helps:
        for word in text.replace("\\[", "[").split():
            if "[" in word and "]" in word:  # a bracketed word reaches the page whole
                assert word.strip("().,") in out.replace("\n", " "), word
    if name == "attribute":
        assert "'onnxpath[text]'" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"onnxpath {__version__}"


def test_unknown_flags_get_suggestions(capsys):
    assert main(["attribute", "model.onnx", "--stpes", "8"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --stpes" in err and "--steps" in err


def test_unknown_flags_never_suggest_hidden_old_spellings(capsys):
    """evaluate's --samples is hidden (the old --subsets): a near miss suggests --subsets."""
    assert main(["evaluate", "model.onnx", "--sample", "8"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --sample" in err and "--subsets" in err and "--samples" not in err
    assert main(["evaluate", "model.onnx", "--tolerence", "8"]) == 2
    err = capsys.readouterr().err
    assert "--pointing-tolerance" in err and "--tolerance" not in err.replace("--tolerence", "")


def test_old_spellings_are_aliases():
    """Every hidden option is the old spelling of a visible flag of the same command, listed in
    RENAMED, and absent from --help."""
    hidden = {(name, spelling) for name, command in COMMANDS.items() for param in command.params
              if getattr(param, "hidden", False) for spelling in param.opts}
    assert hidden == set(RENAMED)
    for (name, old), new in RENAMED.items():
        visible = {s for p in COMMANDS[name].params if not getattr(p, "hidden", False)
                   for s in p.opts}
        assert new in visible and old not in visible, (name, old, new)
    assert {("evaluate", "--masks"), ("evaluate", "--tolerance"), ("evaluate", "--fill"),
            ("evaluate", "--samples")} <= set(RENAMED)


@pytest.mark.parametrize("old, new", [("--tolerance", "--pointing-tolerance"),
                                      ("--masks", "--truth"), ("--fill", "--removed-fill")])
def test_an_old_spelling_and_its_new_one_together_is_an_error(capsys, old, new):
    assert main(["evaluate", "model.onnx", "--scenes", "1", old, "1", new, "1"]) == 2
    err = capsys.readouterr().err
    assert f"{old} is the old spelling of {new}; give {new} only" in err
    assert len(err.strip().splitlines()) == 1
