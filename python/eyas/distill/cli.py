"""`eyas distill` / `python -m eyas.distill`: distil teachers into the RAPTOR GRU student (rl-tools post-training).

Defaults are rl-tools' (src/foundation_policy/post_training/config.h): 1000 epochs, 10 episodes per teacher and
epoch, batches of 64 sequences of 500 steps, Adam lr 1e-4, 10 teacher-forcing epochs, on-policy, shuffled.
Boolean flags take an optional value: ``--on_policy``, ``--on_policy false``, ``--no_on_policy``.
Exit status: 0 done, 2 bad input (one line on stderr, nothing written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys

from eyas.distill.runner import TASK_ID, DistillConfig

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help_text: str) -> None:
    parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default, metavar="BOOL",
                        help=f"{help_text} (default {str(default).lower()})")
    parser.add_argument(f"--no_{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


APG_FLAGS = {  # --apg_<name>: DistillConfig.apg_<name>
    "iterations": "APG steps after the distillation epochs (0: rl-tools' algorithm only)",
    "envs": "episodes flown per APG step",
    "horizon": "steps differentiated per episode",
    "learning_rate": "Adam step size of APG",
    "imitation_weight": "weight of the teacher-imitation term in the APG loss",
    "barrier_weight": "weight of the barrier before the termination thresholds",
    "barrier_start": "share of each termination threshold where the barrier starts",
    "tilt_weight": "weight of the tilt cost 1 - R_zz",
    "grad_clip": "gradient-norm clip",
    "eval_every": "evaluate (and select the best actor) every N APG steps",
    "eval_episodes": "randomised-dynamics episodes per APG evaluation (plus --eval_registry_episodes per model)",
}


def build_parser() -> argparse.ArgumentParser:
    d = DistillConfig()
    p = argparse.ArgumentParser(prog="eyas distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default=TASK_ID, help="environment id (the embedded env unless Isaac Lab provides it)")
    p.add_argument("--env_backend", choices=("auto", "embedded", "isaaclab"), default=d.env_backend,
                   help="auto: Isaac Lab when it is installed and registers --task, else the embedded l2f env")
    p.add_argument("--isaaclab_packages", nargs="+", default=d.isaaclab_packages, metavar="PACKAGE",
                   help="packages that register Isaac Lab tasks (imported once the simulator runs): isaaclab_tasks "
                        "plus your extension's, e.g. my_extension.tasks")
    p.add_argument("--teacher_checkpoint", nargs="+", default=None, metavar="PATH", required=False,
                   help="teacher file(s) (.pt rsl_rl / .h5 rl-tools), teacher run directories, or a directory of "
                        "teachers (one teacher per dynamics set, as RAPTOR)")
    p.add_argument("--num_envs", type=int, default=d.num_envs, help="environment rows flown in parallel")
    p.add_argument("--n_epochs", type=int, default=d.n_epochs, help="epochs (N_EPOCH)")
    p.add_argument("--num_episodes", type=int, default=d.num_episodes, help="episodes per teacher and epoch")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="sequences per batch")
    p.add_argument("--sequence_length", type=int, default=d.sequence_length,
                   help="steps per sequence; 1 = MLP-style batches of single steps")
    p.add_argument("--learning_rate", type=float, default=d.learning_rate, help="Adam step size (alpha)")
    p.add_argument("--epoch_teacher_forcing", type=int, default=d.epoch_teacher_forcing,
                   help="epochs in which the teacher flies (behaviour cloning) before DAgger")
    _add_bool(p, "on_policy", d.on_policy, "rebuild the dataset every epoch (otherwise aggregate)")
    _add_bool(p, "shuffle", d.shuffle, "shuffle episodes before packing batches")
    _add_bool(p, "position_offset_correction", d.position_offset_correction,
              "subtract each teacher's steady-state position offset from the student's stored positions")
    p.add_argument("--offset_episodes", type=int, default=d.offset_episodes,
                   help="teacher episodes for the steady-state offset / solved check")
    p.add_argument("--min_teacher_return", type=float, default=d.min_teacher_return,
                   help="refuse teachers whose mean return is lower (default: rl-tools' SOLVED_RETURN 300 on the "
                        "l2f env, no check on Isaac Lab tasks)")
    p.add_argument("--gradient_mode", choices=("rltools", "exact"), default=d.gradient_mode,
                   help="GRU gradients as rl-tools computes them, or exact autograd (learns the initial state)")
    p.add_argument("--init_student", default=None, metavar="PATH",
                   help="start from this student instead of rl-tools' initialisation: an rl-tools .h5 actor, an eyas "
                        "distill .pt (best_actor.pt), or foundation_policy (the released RAPTOR policy)")
    p.add_argument("--eval_episodes", type=int, default=d.eval_episodes,
                   help="held-out randomised-dynamics episodes per evaluation")
    p.add_argument("--eval_registry_episodes", type=int, default=d.eval_registry_episodes,
                   help="episodes per registry model per evaluation (0: none)")
    p.add_argument("--eval_models", nargs="*", default=None, help="registry models to evaluate on (default: all)")
    p.add_argument("--eval_every", type=int, default=d.eval_every, help="evaluate every N epochs")
    p.add_argument("--final_eval_episodes", type=int, default=d.final_eval_episodes,
                   help="held-out randomised episodes for the best actor's final evaluation")
    p.add_argument("--checkpoint_every", type=int, default=d.checkpoint_every, help="checkpoint every N epochs")
    p.add_argument("--max_dataset_steps", type=int, default=None,
                   help="cap of an aggregating dataset (oldest episodes dropped); default: all epochs")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log_dir", default=d.log_dir, help="run directory (checkpoints, TensorBoard, plots)")
    p.add_argument("--resume", action="store_true", help="continue the run in --log_dir from its last complete epoch")
    _add_bool(p, "plots", d.plots, "write training.png and flights.png at the end")
    p.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g = p.add_argument_group("APG fine-tuning (not rl-tools: after the epochs, backpropagate flights through the "
                             "differentiable simulator; docs/distillation.md)")
    for name, text in APG_FLAGS.items():
        default = getattr(d, f"apg_{name}")
        g.add_argument(f"--apg_{name}", type=type(default), default=default, help=text)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    fields = {k: v for k, v in vars(args).items() if k in DistillConfig.__dataclass_fields__}
    fields["teacher_checkpoint"] = list(args.teacher_checkpoint or [])
    return DistillConfig(**fields)


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
    saved["offset_window"] = tuple(saved["offset_window"])
    given = config_from_args(args).to_dict()
    for name in _explicit(argv) & set(saved):
        saved[name] = tuple(given[name]) if name == "offset_window" else given[name]
    return DistillConfig(**{k: v for k, v in saved.items() if k in DistillConfig.__dataclass_fields__})


def main(argv: list[str] | None = None) -> int:
    from eyas.distill.dataset import DistillationError
    from eyas.envs.isaaclab_task import IsaacLabError

    args = build_parser().parse_args(argv)
    try:
        cfg = resume_config(args, argv) if args.resume else config_from_args(args)
        from eyas.distill.runner import DistillationRunner

        runner = DistillationRunner(cfg, resume=args.resume, progress=not args.quiet)
        summary = runner.run()
    except (DistillationError, IsaacLabError) as e:
        print(f"eyas distill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eyas distill: interrupted; the last complete epoch can be continued with --resume", file=sys.stderr)
        return 130
    held_out = summary["held_out"]
    final = summary["final_eval"].get(held_out)
    teachers = summary["teachers"]
    print(json.dumps({k: summary[k] for k in ("best_actor", "best_epoch", "gradient_steps", "epochs")}, indent=None))
    print(f"teachers (own dynamics): mean return {teachers['return_mean']:.1f}, "
          f"terminated {100 * teachers['share_terminated']:.2f}%")
    if final:
        where = "held-out randomised dynamics" if held_out == "randomized" else f"task {cfg.task}"
        print(f"best student ({where}, {final['episodes']} episodes): mean return "
              f"{final['return_mean']:.1f} ({100 * summary['student_vs_teachers']:.1f}% of teachers), "
              f"terminated {100 * final['share_terminated']:.2f}%")
    ref = summary.get("privileged_teachers_on_held_out")
    if ref:
        print(f"  teacher(s) on the same held-out set: mean return {ref['return_mean']:.1f}, "
              f"terminated {100 * ref['share_terminated']:.2f}%")
    apg = summary.get("apg")
    if apg:
        before = apg["distilled_actor_final_eval"][held_out]
        print(f"  before APG (rl-tools' algorithm, epoch {summary['best_epoch']}): mean return "
              f"{before['return_mean']:.1f}, terminated {100 * before['share_terminated']:.2f}%; APG chose iteration "
              f"{apg['best_iteration']} of {apg['iterations']}")
    for name, ev in summary["final_eval"].items():
        if name != held_out:
            print(f"  {name:<11} return {ev['return_mean']:7.1f}  terminated {100 * ev['share_terminated']:5.1f}%")
    plots = ["training.png"] + (["flights.png"] if summary["environment"]["backend"] == "embedded" else [])
    print(f"outputs in {cfg.log_dir}: best_actor.h5 (rl-tools), best_actor.pt, "
          + ("distilled_actor.h5, " if apg else "") + "summary.json, TensorBoard events"
          + ("".join(f", {name}" for name in plots) if cfg.plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
