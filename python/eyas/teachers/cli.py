"""`eyas teacher {train,eval,export}`: train PPO teachers (rsl_rl) on the embedded env, evaluate, export."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from eyas.cli import ArgumentParser
from .base import TeacherError


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="eyas teacher", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train PPO teachers with rsl_rl's OnPolicyRunner",
                       description="Train teachers on the embedded point-control env (observation group 'teacher'). "
                                   "per-dynamics: one teacher per --dynamics entry and per --sample draw, trained one "
                                   "after another into OUT/<name>/; privileged: one teacher over RAPTOR-randomised "
                                   "dynamics into OUT/<name>/.")
    t.add_argument("--mode", choices=("per-dynamics", "privileged"), default="per-dynamics")
    t.add_argument("--dynamics", action="append", default=[], metavar="SPEC",
                   help="registry model name (crazyflie, x500, ...) or l2f JSON file; repeatable (per-dynamics)")
    t.add_argument("--sample", type=int, default=0, metavar="N",
                   help="also train N teachers on parameter sets drawn from RAPTOR's randomisation (per-dynamics)")
    t.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draws")
    t.add_argument("--name", default=None, help="run name (privileged mode; default 'privileged')")
    t.add_argument("--out", required=True, help="output directory (one sub-directory per teacher)")
    t.add_argument("--iterations", type=int, default=1000, help="max PPO iterations per teacher")
    t.add_argument("--max-minutes", type=float, default=15.0,
                   help="per-teacher budget of rsl_rl collect+learn time in minutes (<= 0: none)")
    t.add_argument("--num-envs", type=int, default=1024)
    t.add_argument("--steps-per-env", type=int, default=None, help="rollout length per iteration (default 32)")
    t.add_argument("--actor-hidden", type=int, nargs="+", default=None, help="actor MLP widths (default 64 64)")
    t.add_argument("--critic-hidden", type=int, nargs="+", default=None, help="critic MLP widths (default 128 128)")
    t.add_argument("--lr", type=float, default=None, help="initial learning rate (adaptive KL schedule)")
    t.add_argument("--init-std", type=float, default=None, help="initial action std (default 0.15)")
    t.add_argument("--entropy-coef", type=float, default=None)
    t.add_argument("--min-std", type=float, default=None, help="lower bound of the action std (default 0.05)")
    t.add_argument("--select", choices=("best", "last"), default="best",
                   help="teacher checkpoint: best deterministic evaluation return during training, or the last")
    t.add_argument("--eval-interval", type=int, default=25, help="iterations between evaluations (0: end only)")
    t.add_argument("--eval-envs", type=int, default=512, help="episodes per evaluation during training")
    t.add_argument("--final-eval-episodes", type=int, default=1024)
    t.add_argument("--stop-when-solved", action="store_true",
                   help="stop once an evaluation has <= 1%% terminated and <= 5 cm final position error")
    t.add_argument("--init-checkpoint", default=None, metavar="PATH",
                   help="continue training from this teacher (rsl_rl model_*.pt or a teacher directory); "
                        "actor, critic and iteration are loaded, the optimizer starts afresh")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run exactly (same command plus --resume): finished teachers are skipped, "
                        "the interrupted one continues after its last complete iteration (docs/teachers.md)")
    t.add_argument("--verbose", action="store_true", help="print rsl_rl's per-iteration report instead of a bar")
    _add_common(t)

    e = sub.add_parser("eval", help="evaluate teachers (rsl_rl .pt, rl-tools .h5, run dirs or dirs of teachers)")
    e.add_argument("paths", nargs="+")
    e.add_argument("--episodes", type=int, default=1024)
    e.add_argument("--num-envs", type=int, default=1024)
    e.add_argument("--dynamics", default=None,
                   help="override: 'randomized', a registry model or an l2f JSON file (default: the teacher's own "
                        "dynamics, or randomised dynamics for privileged teachers)")
    e.add_argument("--obs-slice", default=None, metavar="START:STOP",
                   help="feed the teacher only these columns of its observation group (e.g. 0:26 for RAPTOR's "
                        "pre-training teachers)")
    e.add_argument("--json", default=None, help="write the results to this JSON file")
    _add_common(e)

    x = sub.add_parser("export", help="copy a trained teacher's final checkpoint and sidecar (e.g. into fixtures)")
    x.add_argument("run_dir")
    x.add_argument("dest")
    x.add_argument("--keep-optimizer", action="store_true", help="keep the optimizer state (default: dropped)")
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


def _train(args) -> int:
    from . import resume
    from .loading import resolve_checkpoint
    from .train import TrainOptions, default_train_cfg, train_teacher

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
    opts = TrainOptions(
        num_envs=args.num_envs, max_iterations=args.iterations,
        max_minutes=args.max_minutes if args.max_minutes and args.max_minutes > 0 else None,
        seed=args.seed, device=args.device, eval_interval=args.eval_interval, eval_envs=args.eval_envs,
        final_eval_episodes=args.final_eval_episodes, stop_when_solved=args.stop_when_solved,
        quiet=not args.verbose, train_cfg=cfg, select=args.select,
        init_checkpoint=str(resolve_checkpoint(Path(args.init_checkpoint))) if args.init_checkpoint else None,
    )
    jobs: list[tuple[str, object]] = []
    if args.mode == "privileged":
        if args.dynamics or args.sample:
            raise TeacherError("--dynamics/--sample select per-dynamics teachers; privileged mode uses randomised dynamics")
        jobs.append((args.name or "privileged", "randomized"))
    else:
        if args.name:
            raise TeacherError("--name is for privileged mode; per-dynamics teachers are named after their dynamics")
        for spec in args.dynamics:
            jobs.append(_load_params(spec))
        if args.sample:
            from eyas.sim import sample_domain_randomized_params

            gen = torch.Generator().manual_seed(args.sample_seed)
            drawn = sample_domain_randomized_params(args.sample, gen)
            jobs += [(f"sampled_s{args.sample_seed}_{i:03d}", drawn[i]) for i in range(args.sample)]
        if not jobs:
            raise TeacherError("per-dynamics mode needs --dynamics SPEC and/or --sample N")
    names = [n for n, _ in jobs]
    if len(set(names)) != len(names):
        raise TeacherError(f"teacher names must be unique, got {names}")
    results = []
    for name, dynamics in jobs:
        where = resume.progress(Path(args.out) / name) if args.resume else "new"
        if where == "done":
            print(f"[{name}] already trained and evaluated: skipped", flush=True)
            continue
        side = train_teacher(name, Path(args.out) / name, dynamics, opts, resume=where == "resumable")
        if side is None:  # a torchrun rank other than 0: rank 0 reports
            continue
        ev, tr = side["evaluation"], side["training"]
        print(f"[{name}] {tr['iterations']} it, {tr['env_steps']} steps, train {tr['train_time_s']:.0f} s "
              f"(wall {tr['wall_time_s']:.0f} s, stopped by {tr['stopped_by']}), selected it {tr['selected_iteration']}: return {ev['return_mean']:.1f}, "
              f"terminated {100 * ev['share_terminated']:.2f} %, final position error "
              f"{100 * ev['final_position_error_mean']:.2f} cm -> {Path(args.out) / name / side['checkpoint']}",
              flush=True)
        results.append(side)
    return 0


def _eval(args) -> int:
    from eyas.envs import PointControlEnv

    from .evaluate import env_cfg_from_dict, evaluate_actor
    from .loading import load_teacher_set

    kwargs = {}
    if args.obs_slice:
        start, stop = (int(v) for v in args.obs_slice.split(":"))
        kwargs["obs_slice"] = (start, stop)
    teachers = load_teacher_set(args.paths if len(args.paths) > 1 else args.paths[0], device=args.device, **kwargs)
    override = None
    if args.dynamics:
        override = "randomized" if args.dynamics == "randomized" else _load_params(args.dynamics)[1]
    rows = []
    print(f"{'teacher':<28} {'dynamics':<12} {'episodes':>8} {'return':>9} {'terminated':>11} {'final err':>10} "
          f"{'err last 1s':>12}")
    for teacher in teachers:
        dynamics = override if override is not None else (teacher.params if teacher.params is not None else "randomized")
        num_envs = min(args.num_envs, args.episodes)
        cfg = env_cfg_from_dict(teacher.meta.get("env_cfg"), num_envs=num_envs, device=args.device, seed=args.seed,
                                dynamics=dynamics)
        env = PointControlEnv(cfg)
        summary = evaluate_actor(teacher, env, args.episodes, seed=args.seed)
        label = "randomized" if isinstance(dynamics, str) else "fixed"
        print(f"{teacher.name:<28} {label:<12} {summary['episodes']:>8} {summary['return_mean']:>9.1f} "
              f"{100 * summary['share_terminated']:>10.2f}% {_cm(summary['final_position_error_mean']):>10} "
              f"{_cm(summary['position_error_mean']):>12}", flush=True)
        rows.append({"teacher": teacher.name, "source": teacher.source, "dynamics": label} | summary)
    if args.json:
        from eyas.io import atomic_write

        atomic_write(Path(args.json), json.dumps(rows, indent=1))
    return 0


def _cm(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f} cm"


def _export(args) -> int:
    from .loading import resolve_checkpoint
    from .rsl_rl_io import read_checkpoint, read_sidecar
    from eyas.io import atomic_torch_save, atomic_write

    run = Path(args.run_dir)
    ckpt = resolve_checkpoint(run)
    if ckpt.suffix != ".pt":
        raise TeacherError(f"export expects an rsl_rl teacher run, got {ckpt}")
    data = read_checkpoint(ckpt)
    if not args.keep_optimizer:
        data.pop("optimizer_state_dict", None)
    sidecar = read_sidecar(ckpt) or {}
    sidecar["checkpoint"] = ckpt.name
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(dest / ckpt.name, data)
    atomic_write(dest / "teacher.json", json.dumps(sidecar, indent=1))
    if (run / "curve.csv").is_file():
        atomic_write(dest / "curve.csv", (run / "curve.csv").read_text())
    print(f"exported {ckpt} -> {dest / ckpt.name} ({(dest / ckpt.name).stat().st_size / 1024:.0f} KiB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return {"train": _train, "eval": _eval, "export": _export}[args.command](args)
    except TeacherError as e:
        print(f"eyas teacher: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
