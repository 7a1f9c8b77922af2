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
from onnxpath.version import __version__

COMMANDS = typer.main.get_command(app).commands

# (spelling, command): why that command's flag of this spelling means something else. Every
# other command with the spelling must declare it identically.
VARIANTS = {
    ("--target", "attribute"): "attribute explains any number of classes: it also takes topK "
                               "(pathway and check-grad explain one class)",
    ("--out", "evaluate"): "evaluate's folder holds its CSV, JSON, plots and report: local, a "
                           "Path",
    ("--out", "export"): "export writes one file, the gradient graph: a required local path",
    ("--batch-size", "evaluate"): "evaluate measures the fastest batch by default (None); "
                                  "attribute streams results a batch at a time (1)",
    ("--seed", "attribute"): "the methods' seed (smoothgrad, rise, uniform baseline); None "
                             "leaves each method's default",
    ("--seed", "evaluate"): "seeds scenes, subsets, tie-breaks and noise of the protocols",
    ("--seed", "pathway"): "seeds the random and learned selections",
    ("--seed", "check-grad"): "seeds the random input and directions",
    ("--samples", "evaluate"): "hidden: the old spelling of --subsets (sensitivity-n), kept "
                               "working with a warning",
    ("--fill", "evaluate"): "the protocols' removed-pixel value: zero, mean or per-channel "
                            "numbers (attribute's is occlusion's one number)",
    ("--masks", "evaluate"): "ground-truth masks read from a folder (pathway writes its "
                             "masks to an .npz)",
    ("--json", "evaluate"): "evaluate prints its table on stdout; --json names the file the "
                            "full report goes to",
    ("--tolerance", "evaluate"): "the pointing game's tolerance in pixels (check-grad's is the "
                                 "relative error that passes)",
    ("--size", "export"): "no image is read: HxW only fixes dynamic spatial dims",
    ("--size", "inspect"): "no image is read: HxW only fixes dynamic spatial dims",
    ("--size", "check-grad"): "no image is read: HxW of the random input",
    ("--keep-probabilities", "check-grad"): "the same switch, worded for a check",
}


def options():
    """{spelling: {command: click option}} for every option of every command."""
    found = defaultdict(dict)
    for name, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option":
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
