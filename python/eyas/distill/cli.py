"""`eyas distill` / `python -m eyas.distill`: distil teachers into the RAPTOR GRU student (rl-tools post-training).

Defaults are rl-tools' (src/foundation_policy/post_training/config.h): 1000 epochs, 10 episodes per teacher and
epoch, batches of 64 sequences of 500 steps, Adam lr 1e-4, 10 teacher-forcing epochs, on-policy, shuffled.
Boolean flags take an optional value: ``--on_policy``, ``--on_policy false``, ``--no_on_policy``. Settings may come
from a recipe, ``--config recipes/main_job.toml`` (`eyas.distill.recipe`); flags given override it.
Exit status: 0 done, 2 bad input (one line on stderr, nothing written), 1 another torchrun rank stopped or timed
out, 130 interrupted. Under torchrun: ``torchrun --nproc_per_node N -m eyas.distill ...`` (docs/scaling.md).
"""
from __future__ import annotations

import argparse
import json
import sys

from eyas.cli_args import ArgumentParser, check_output_dir, run_command
from eyas.distill.config import DistillConfig, flag_table
from eyas.distill.recipe import recipe_argv
from eyas.errors import EyasError, Interrupted

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
GROUPS = {"apg_": "APG fine-tuning (not rl-tools: after the epochs, backpropagate flights through the "
                  "differentiable simulator; docs/distillation.md)"}


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_flag(parser, name: str, default, meta: dict) -> None:
    """One flag from a `DistillConfig` field: type from the default unless the field says otherwise."""
    if isinstance(default, bool):
        parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default, metavar="BOOL",
                            help=f"{meta['help']} (default {str(default).lower()})")
        parser.add_argument(f"--no_{name}", dest=name, action="store_false", help=argparse.SUPPRESS)
        return
    kwargs = dict(meta["argparse"])
    if "nargs" not in kwargs and "type" not in kwargs and default is not None:
        kwargs["type"] = type(default)
    if name == "teacher_checkpoint":
        default = None  # an empty list means "none given"
    parser.add_argument(f"--{name}", default=default, help=meta["help"], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    defaults = DistillConfig().to_dict()
    p = ArgumentParser(prog="eyas distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = {prefix: p.add_argument_group(title) for prefix, title in GROUPS.items()}
    for name, f in flag_table():
        if f.metadata.get("flag", True):
            group = next((g for prefix, g in groups.items() if name.startswith(prefix)), p)
            _add_flag(group, name, defaults[name], f.metadata)
    p.add_argument("--config", metavar="RECIPE.toml",
                   help="settings from a recipe: a TOML file of these flags by name (recipes/main_job.toml); flags "
                        "given on the command line override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --log_dir from its last complete epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    names = set(DistillConfig().to_dict())
    values = {k: v for k, v in vars(args).items() if k in names}
    values["teacher_checkpoint"] = list(args.teacher_checkpoint or [])
    return DistillConfig.from_flags(**values)


def with_recipe(argv: list[str]) -> list[str]:
    """``argv`` with the settings of its --config recipe (if any) written before it as flags, so that the command
    line's own flags override them (`eyas.distill.recipe`)."""
    parser = build_parser()
    path = parser.parse_args(argv).config
    if path is None:
        return argv
    names = {name for name, f in flag_table() if f.metadata.get("flag", True)}
    return recipe_argv(path, parser, names) + argv


def _explicit(argv: list[str] | None) -> set[str]:
    """Names of the options given on the command line (not defaulted)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def resume_config(args: argparse.Namespace, argv: list[str] | None) -> DistillConfig:
    """--resume: the saved run's settings, overridden by the options given now."""
    from pathlib import Path

    from eyas.distill.dataset import DistillationError

    path = Path(args.log_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DistillationError(f"--resume: cannot read {path}: {e}") from e
    given = config_from_args(args).to_dict()
    known = set(given)
    saved = {k: v for k, v in saved.items() if k in known}
    for name in _explicit(argv) & known:
        saved[name] = given[name]
    return DistillConfig.from_flags(**saved)


def main(argv: list[str] | None = None) -> int:
    """`eyas distill`; under torchrun (WORLD_SIZE / RANK / LOCAL_RANK set) every rank runs this with the same flags
    (`eyas.distill.distributed`). A rank that fails says so in one line, ``rank K: ...``."""
    from eyas.distill.distributed import launched

    argv = with_recipe(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    who = ""
    try:
        with launched() as world:
            who = f"rank {world.rank}: " if world.distributed else ""
            # rank 0 reads the run directory (config.json of --resume); every rank gets its settings
            cfg = world.from_main(lambda: resume_config(args, argv) if args.resume else config_from_args(args))
            check_output_dir(cfg.log_dir, "--log_dir")
            from eyas.distill.report import summary_lines
            from eyas.distill.runner import DistillationRunner

            summary = DistillationRunner(cfg, resume=args.resume, progress=not args.quiet, world=world).run()
    except EyasError as e:  # said by `eyas.cli_args.run_command`, naming the rank under torchrun
        e.args = (f"{who}{e}", *e.args[1:])
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"{who}interrupted; the last complete epoch can be continued with --resume") from None
    if summary is not None:  # rank 0
        print("\n".join(summary_lines(summary, cfg.task, cfg.log_dir, cfg.plots)))
    return 0


if __name__ == "__main__":
    sys.exit(run_command("distill", main, sys.argv[1:]))
