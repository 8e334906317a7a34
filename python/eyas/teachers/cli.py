"""`eyas teacher {train,eval,export}`: train PPO teachers (rsl_rl) on the embedded env, evaluate, export."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from eyas.cli_args import (ArgumentParser, add_run_flags, at_least, check_output_dir, check_report_outputs, finite_float,
                           resolve_device, run_command, user_error)
from eyas.errors import Interrupted

from .base import TeacherError


def _obs_slice(text: str) -> tuple[int, int]:
    """argparse type of --obs_slice: START:STOP with 0 <= START < STOP."""
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (two integers), got {text!r}") from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"expected 0 <= START < STOP, got {text!r}")
    return start, stop


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train PPO teachers with rsl_rl's OnPolicyRunner",
                       description="Train teachers on the embedded point-control env (observation group 'teacher', or 'privileged' with --obs_group). "
                                   "per-dynamics: one teacher per --dynamics entry and per --sample draw, trained one "
                                   "after another into OUT/<name>/; privileged: one teacher over RAPTOR-randomised "
                                   "dynamics into OUT/<name>/.")
    t.add_argument("--mode", choices=("per-dynamics", "privileged"), default="per-dynamics")
    t.add_argument("--dynamics", action="append", default=[], metavar="SPEC",
                   help="registry model name (crazyflie, x500, ...) or l2f JSON file; repeatable (per-dynamics)")
    t.add_argument("--sample", type=at_least(0), default=0, metavar="N",
                   help="also train N teachers on parameter sets drawn from RAPTOR's randomisation (per-dynamics)")
    t.add_argument("--sample_seed", type=int, default=0, help="seed of the --sample draws")
    t.add_argument("--name", default=None, help="run name (privileged mode; default 'privileged')")
    t.add_argument("--out", required=True, help="output directory (one sub-directory per teacher)")
    t.add_argument("--iterations", type=at_least(1), default=1000, help="max PPO iterations per teacher")
    t.add_argument("--max_minutes", type=finite_float(), default=15.0,
                   help="per-teacher budget of rsl_rl collect+learn time in minutes (<= 0: none)")
    t.add_argument("--num_envs", type=at_least(1), default=1024)
    t.add_argument("--steps_per_env", type=at_least(1), default=None, help="rollout length per iteration (default 32)")
    t.add_argument("--actor_hidden", type=at_least(1), nargs="+", default=None, help="actor MLP widths (default 64 64)")
    t.add_argument("--critic_hidden", type=at_least(1), nargs="+", default=None,
                   help="critic MLP widths (default 128 128)")
    t.add_argument("--lr", type=finite_float(0, above=True), default=None,
                   help="initial learning rate (adaptive KL schedule)")
    t.add_argument("--init_std", type=finite_float(0, above=True), default=None, help="initial action std (default 0.15)")
    t.add_argument("--entropy_coef", type=finite_float(0), default=None)
    t.add_argument("--min_std", type=finite_float(0, above=True), default=None,
                   help="lower bound of the action std (default 0.05)")
    t.add_argument("--select", choices=("best", "last"), default="best",
                   help="teacher checkpoint: best deterministic evaluation return during training, or the last")
    t.add_argument("--eval_interval", type=at_least(0), default=25, help="iterations between evaluations (0: end only)")
    t.add_argument("--eval_envs", type=at_least(1), default=512, help="episodes per evaluation during training")
    t.add_argument("--final_eval_episodes", type=at_least(1), default=1024)
    t.add_argument("--stop_when_solved", action="store_true",
                   help="stop once an evaluation has <= 1%% terminated and <= 5 cm final position error")
    t.add_argument("--env", choices=("raptor", "robust"), default="raptor",
                   help="the MDP: RAPTOR's (hover to a point, undisturbed) or the robust one (moving references, "
                        "actuation delay, wind, gusts, weak motors, observation noise; docs/environment.md)")
    t.add_argument("--obs_group", choices=("teacher", "privileged"), default="teacher",
                   help="what the teacher observes: the env's teacher group, or the privileged group (the teacher "
                        "group and the task's rows: reference acceleration, motor scales, delay, pending commands)")
    t.add_argument("--init_checkpoint", default=None, metavar="PATH",
                   help="continue training from this teacher (rsl_rl model_*.pt or a teacher directory); "
                        "actor, critic and iteration are loaded, the optimizer starts afresh")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run exactly (same command plus --resume): finished teachers are skipped, "
                        "the interrupted one continues after its last complete iteration (docs/teachers.md)")
    t.add_argument("--verbose", action="store_true", help="print rsl_rl's per-iteration report instead of a bar")
    add_run_flags(t)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="eyas teacher", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)

    e = sub.add_parser("eval", help="evaluate teachers (rsl_rl .pt, rl-tools .h5, run dirs or dirs of teachers)")
    e.add_argument("paths", nargs="+")
    e.add_argument("--episodes", type=at_least(1), default=1024)
    e.add_argument("--num_envs", type=at_least(1), default=1024)
    e.add_argument("--dynamics", default=None,
                   help="override: 'randomized', a registry model or an l2f JSON file (default: the teacher's own "
                        "dynamics, or randomised dynamics for privileged teachers)")
    e.add_argument("--obs_slice", type=_obs_slice, default=None, metavar="START:STOP",
                   help="feed the teacher only these columns of its observation group (e.g. 0:26 for RAPTOR's "
                        "pre-training teachers)")
    e.add_argument("--json", default=None, help="write the results to this JSON file")
    add_run_flags(e)

    x = sub.add_parser("export", help="copy a trained teacher's final checkpoint and sidecar (e.g. into fixtures)")
    x.add_argument("run_dir")
    x.add_argument("dest")
    x.add_argument("--keep_optimizer", action="store_true", help="keep the optimizer state (default: dropped)")
    return parser


def _load_params(spec: str):
    from eyas.sim import MODEL_NAMES, Params, model_params

    if spec in MODEL_NAMES:
        return spec, model_params(spec)
    path = Path(spec)
    if not path.is_file():
        raise TeacherError(f"--dynamics {spec!r} is neither a registry model ({', '.join(MODEL_NAMES)}) nor a file")
    try:
        return path.stem, Params.from_l2f_json(path.read_text())
    except (OSError, ValueError, KeyError) as e:
        raise TeacherError(f"cannot read l2f parameters from {path}: {e}") from e


def _train_cfg(args) -> dict:
    """rsl_rl's runner configuration: eyas' default with the flags given."""
    from .train import default_train_cfg

    cfg = default_train_cfg()
    if args.steps_per_env:
        cfg["num_steps_per_env"] = args.steps_per_env
    if args.actor_hidden:
        cfg["actor"]["hidden_dims"] = args.actor_hidden
    if args.critic_hidden:
        cfg["critic"]["hidden_dims"] = args.critic_hidden
    if args.lr is not None:
        cfg["algorithm"]["learning_rate"] = args.lr
    if args.init_std is not None:
        cfg["actor"]["distribution_cfg"]["init_std"] = args.init_std
    if args.entropy_coef is not None:
        cfg["algorithm"]["entropy_coef"] = args.entropy_coef
    if args.min_std is not None:
        cfg["actor"]["distribution_cfg"]["std_range"] = [args.min_std, 10.0]
    return cfg


def _train_jobs(args) -> list[tuple[str, object]]:
    """(teacher name, dynamics) of every teacher the command trains, in order."""
    if args.mode == "privileged":
        if args.dynamics or args.sample:
            raise TeacherError("--dynamics/--sample select per-dynamics teachers; privileged mode uses randomised dynamics")
        return [(args.name or "privileged", "randomized")]
    if args.name:
        raise TeacherError("--name is for privileged mode; per-dynamics teachers are named after their dynamics")
    jobs = [_load_params(spec) for spec in args.dynamics]
    if args.sample:
        from eyas.sim import sample_domain_randomized_params

        drawn = sample_domain_randomized_params(args.sample, torch.Generator().manual_seed(args.sample_seed))
        jobs += [(f"sampled_s{args.sample_seed}_{i:03d}", drawn[i]) for i in range(args.sample)]
    if not jobs:
        raise TeacherError("per-dynamics mode needs --dynamics SPEC and/or --sample N")
    names = [n for n, _ in jobs]
    if len(set(names)) != len(names):
        raise TeacherError(f"teacher names must be unique, got {names}")
    return jobs


def _train(args) -> int:
    from eyas.envs.config import PRESETS

    from . import resume
    from .loading import resolve_checkpoint
    from .options import TrainOptions
    from .train import train_teacher

    out = check_output_dir(args.out, "--out")
    opts = TrainOptions(
        num_envs=args.num_envs, max_iterations=args.iterations,
        max_minutes=args.max_minutes if args.max_minutes > 0 else None,
        seed=args.seed, device=str(resolve_device(args.device)), eval_interval=args.eval_interval,
        eval_envs=args.eval_envs, final_eval_episodes=args.final_eval_episodes, stop_when_solved=args.stop_when_solved,
        quiet=not args.verbose, train_cfg=_train_cfg(args), select=args.select,
        init_checkpoint=str(resolve_checkpoint(Path(args.init_checkpoint))) if args.init_checkpoint else None,
        obs_group=args.obs_group, env_overrides=dict(PRESETS[args.env]),
    )
    for name, dynamics in _train_jobs(args):
        where = resume.progress(out / name) if args.resume else "new"
        if where == "done":
            print(f"[{name}] already trained and evaluated: skipped", flush=True)
            continue
        try:
            side = train_teacher(name, out / name, dynamics, opts, resume=where == "resumable")
        except BaseException as e:
            if isinstance(user_error(e), Interrupted):
                raise Interrupted(f"interrupted; the same command with --resume continues {out / name} after its "
                                  f"last complete iteration") from None
            raise
        if side is not None:  # None: a torchrun rank other than 0 (rank 0 reports)
            print(_trained_line(name, side, out / name), flush=True)
    return 0


def _trained_line(name: str, side: dict, run: Path) -> str:
    ev, tr = side["evaluation"], side["training"]
    return (f"[{name}] {tr['iterations']} it, {tr['env_steps']} steps, train {tr['train_time_s']:.0f} s "
            f"(wall {tr['wall_time_s']:.0f} s, stopped by {tr['stopped_by']}), selected it "
            f"{tr['selected_iteration']}: return {ev['return_mean']:.1f}, terminated "
            f"{100 * ev['share_terminated']:.2f} %, final position error "
            f"{100 * ev['final_position_error_mean']:.2f} cm -> {run / side['checkpoint']}")


def _eval(args) -> int:
    from .base import check_teacher_env
    from .evaluate import evaluate_actor

    check_report_outputs(args)
    device = str(resolve_device(args.device))
    flights = _eval_envs(args, device)
    for teacher, env, _ in flights:  # every teacher against its env before the first episode
        check_teacher_env(teacher, env)
    rows = []
    print(f"{'teacher':<28} {'dynamics':<12} {'episodes':>8} {'return':>9} {'terminated':>11} {'final err':>10} "
          f"{'err last 1s':>12}")
    for teacher, env, label in flights:
        summary = evaluate_actor(teacher, env, args.episodes, seed=args.seed)
        print(f"{teacher.name:<28} {label:<12} {summary['episodes']:>8} {summary['return_mean']:>9.1f} "
              f"{100 * summary['share_terminated']:>10.2f}% {_cm(summary['final_position_error_mean']):>10} "
              f"{_cm(summary['position_error_mean']):>12}", flush=True)
        rows.append({"teacher": teacher.name, "source": teacher.source, "dynamics": label} | summary)
    if args.json:
        from eyas.io import atomic_write

        atomic_write(Path(args.json), json.dumps(rows, indent=1))
    return 0


def _eval_envs(args, device: str) -> list:
    """(teacher, env, "randomized" or "fixed") for every teacher of the paths: its own env settings and dynamics,
    or --dynamics."""
    from eyas.envs import PointControlEnv

    from .evaluate import env_cfg_from_dict
    from .loading import load_teacher_set

    kwargs = {"obs_slice": args.obs_slice} if args.obs_slice else {}
    teachers = load_teacher_set(args.paths if len(args.paths) > 1 else args.paths[0], device=device, **kwargs)
    override = None
    if args.dynamics:
        override = "randomized" if args.dynamics == "randomized" else _load_params(args.dynamics)[1]
    flights = []
    for teacher in teachers:
        dynamics = override if override is not None else (teacher.params if teacher.params is not None else "randomized")
        cfg = env_cfg_from_dict(teacher.meta.get("env_cfg"), num_envs=min(args.num_envs, args.episodes),
                                device=device, seed=args.seed, dynamics=dynamics)
        flights.append((teacher, PointControlEnv(cfg), "randomized" if isinstance(dynamics, str) else "fixed"))
    return flights


def _cm(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f} cm"


def _export(args) -> int:
    """Copy a teacher run's selected checkpoint, sidecar and curve; checked to load as a teacher and as a checkpoint
    to continue training from first, written all together (each to a temporary file, renamed once all are)."""
    import contextlib

    from eyas.io import atomic_path

    from .loading import load_teacher, resolve_checkpoint
    from .rsl_rl_io import read_sidecar, read_training_checkpoint

    run, dest = Path(args.run_dir), check_output_dir(args.dest, "dest")
    ckpt = resolve_checkpoint(run)
    if ckpt.suffix != ".pt":
        raise TeacherError(f"export expects an rsl_rl teacher run, got {ckpt}")
    data = read_training_checkpoint(ckpt)
    load_teacher(ckpt)  # the actor itself: layers that fit together, finite parameters
    if not args.keep_optimizer:
        data.pop("optimizer_state_dict", None)
    sidecar = (read_sidecar(ckpt) or {}) | {"checkpoint": ckpt.name}
    curve = (run / "curve.csv").read_text() if (run / "curve.csv").is_file() else None
    with contextlib.ExitStack() as stack:  # every file renamed into dest, or none
        torch.save(data, stack.enter_context(atomic_path(dest / ckpt.name)))
        stack.enter_context(atomic_path(dest / "teacher.json")).write_text(json.dumps(sidecar, indent=1))
        if curve is not None:
            stack.enter_context(atomic_path(dest / "curve.csv")).write_text(curve)
    print(f"exported {ckpt} -> {dest / ckpt.name} ({(dest / ckpt.name).stat().st_size / 1024:.0f} KiB)")
    return 0


SUBCOMMANDS = ("train", "eval", "export")


def command_name(argv: list[str]) -> str:
    """The command as its errors name it: ``teacher train``, as argparse names it in its own."""
    return f"teacher {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "teacher"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "num_threads", None):
        torch.set_num_threads(args.num_threads)
    return {"train": _train, "eval": _eval, "export": _export}[args.command](args)


if __name__ == "__main__":
    sys.exit(run_command(command_name(sys.argv[1:]), main, sys.argv[1:]))
