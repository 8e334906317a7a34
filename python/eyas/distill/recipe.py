"""Recipes: a run's settings in a TOML file, ``eyas distill --config recipes/main_job.toml``.

A recipe holds `eyas distill` flags by name (``num_envs = 256``, ``teacher_checkpoint = ["fixtures/teachers/..."]``,
``on_policy = false``), at the top level. It is read as if its settings were written on the command line before
the flags given there, so those override it; an unknown name, a table, a list for a one-value flag, or a value the
flag refuses is an error naming the file. The run saves its resolved settings as ``config.json`` beside its
checkpoints, whatever they came from.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from eyas.distill.dataset import DistillationError


def read_recipe(path: str | Path) -> dict:
    """The settings of the recipe at ``path`` (a TOML file), not yet checked."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise DistillationError(f"--config {path}: reading recipes needs Python >= 3.11 (tomllib)") from None
    path = Path(path)
    if not path.is_file():
        raise DistillationError(f"--config {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        raise DistillationError(f"--config {path}: not a TOML recipe ({e})") from e


def recipe_argv(path: str | Path, parser: argparse.ArgumentParser, names: set[str]) -> list[str]:
    """The recipe at ``path`` as ``--name value ...`` tokens of ``parser`` (`eyas distill`'s), each value checked by
    the flag it sets; ``names``: the settings a recipe may hold. Errors name the file."""
    settings = read_recipe(path)
    actions = {s[2:]: a for a in parser._actions for s in a.option_strings if s[2:] in names}
    unknown = sorted(k for k in settings if k not in actions)
    if unknown:
        raise DistillationError(f"--config {path}: unknown settings {', '.join(unknown)} (a recipe holds eyas "
                                f"distill's flags by name, e.g. num_envs = 256)")
    tokens: list[str] = []
    for name, value in settings.items():
        many = actions[name].nargs in ("+", "*")
        values = value if isinstance(value, list) else [value]
        if isinstance(value, dict) or (isinstance(value, list) and not many) or any(
                isinstance(v, (list, dict)) for v in values):
            raise DistillationError(f"--config {path}: {name} takes {'a list of values' if many else 'one value'}, "
                                    f"got {value!r}")
        tokens += [f"--{name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    _check(tokens, path, parser)
    return tokens


def _check(tokens: list[str], path, parser: argparse.ArgumentParser) -> None:
    """Parse the recipe's tokens alone, so a value a flag refuses is reported as the recipe's."""
    def error(message: str):
        raise DistillationError(f"--config {path}: {message}")

    parser.error = error  # argparse reports through this method; here it names the recipe
    try:
        parser.parse_args(tokens)
    finally:
        del parser.error
