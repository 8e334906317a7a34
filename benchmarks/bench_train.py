"""Distillation training speed: the trainer's step vs rl-tools' (the bridge) on the same batch, and epoch time.

(a) one post-training step on a 500 x 64 batch built by `EpisodeDataset.get_batches` (forward with resets, MSE,
    backward, rl-tools Adam): `Distillation.train_step` vs the bridge's `train_step` (numpy in/out) and
    `train_steps_loaded` (C++ only); sample-steps/s = 500 * 64 / step time; plus the step's parity numbers;
(b) one epoch of `eyas distill` with the given teachers (or synthetic teachers): collection (DAgger with an untrained
    student, whose episodes are short, and teacher forcing), the training pass over rl-tools' batches of the
    teacher-forcing data, evaluation;
(c) one APG step (`eyas distill --apg_iterations`, `eyas.distill.apg`: fly --apg_envs episodes for --apg_horizon steps
    through the differentiable simulator, backward, Adam) with the same teachers and student; its sample-steps/s
    against (a)'s imitation step (each APG sample-step also simulates the quadrotor and queries the teacher).

    python benchmarks/bench_train.py [--teachers fixtures/teachers | foundation_policy] [--threads 1] [--device cpu]
                                     [--batch_size 64 --sequence_length 500] [--paths compiled eager] [--json out.json]

(b) and (c) run once per env path (`--paths`, default both): "compiled" builds the envs with
`PointControlEnvCfg(compile=True)` (the env step under torch.compile, `eyas.envs.step.env_step`; its first compile
falls into the offset estimation, which is not part of the epoch figures), "eager" with compile=False. The APG
step follows the env's setting (`eyas.distill.apg.flight_step` compiled, forward and backward; its first
compile falls into `timeit`'s warm-up call). `--json PATH` writes {"apg_step_s": {"compiled", "eager"},
"collect_epoch_s": {"compiled", "eager"}} (collect_epoch_s: the DAgger collection of one epoch, (b)) beside the
full figures ("step", "epoch" and "apg" per path, "info"); a path not run is null.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch

from timing import timeit  # benchmarks/timing.py


def synthetic_dataset(num_obs: int, steps: int, seed: int = 0):
    from eyas.distill.dataset import EpisodeDataset

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(100, 501, (steps // 300 + 1,), generator=g)
    obs = torch.cumsum(0.05 * torch.randn(500, len(lengths), num_obs, generator=g), 0)
    tgt = torch.tanh(obs[..., :4])
    ds = EpisodeDataset(int(lengths.sum()), num_obs, 4)
    ds.add_episodes(obs, tgt, lengths)
    return ds


def bench_step(device: torch.device, repeat: int) -> dict:
    from eyas.bridge import chain_for
    from eyas.distill.trainer import Distillation
    from eyas.model import StudentPolicy

    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    ds = synthetic_dataset(22, 4 * 32000)
    batch = next(ds.get_batches(64, 500, generator=torch.Generator().manual_seed(1)))
    policy = StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0))
    chain = chain_for(policy, 500, 64, dtype=torch.float32)
    # parity of the first step (both start from the same weights and fresh optimizers)
    trainer = Distillation(policy, device=device)
    loss = float(trainer.train_step(batch))
    cpp_loss = float(chain.train_step(batch.observations.numpy(), batch.targets.numpy(), batch.reset.numpy(), 1e-4))
    cpp = chain.get_parameters()
    worst = max(float(np.abs(p.detach().cpu().numpy().reshape(cpp[k].shape) - cpp[k]).max()) / max(float(np.abs(cpp[k]).max()), 1e-30)
                for k, p in policy.rltools_parameters().items())
    batch_dev = type(batch)(batch.observations.to(device), batch.targets.to(device), batch.reset.to(device))
    t_torch = timeit(lambda: trainer.train_step(batch_dev), repeat, 3, sync)
    x, y, r = batch.observations.numpy(), batch.targets.numpy(), batch.reset.numpy()
    t_bridge = timeit(lambda: chain.train_step(x, y, r, 1e-4), repeat, 3)
    t_loaded = timeit(lambda: chain.train_steps_loaded(3, 1e-4), repeat, 1) / 3
    samples = 500 * 64
    return {"torch_step_s": t_torch, "bridge_step_s": t_bridge, "bridge_loaded_step_s": t_loaded,
            "torch_sample_steps_per_s": samples / t_torch, "bridge_sample_steps_per_s": samples / t_bridge,
            "ratio_torch_over_bridge": t_torch / t_bridge, "ratio_torch_over_bridge_loaded": t_torch / t_loaded,
            "parity_first_step": {"loss": loss, "bridge_loss": cpp_loss, "abs_loss_diff": abs(loss - cpp_loss),
                                  "max_rel_param_diff": worst}}


def bench_epoch(args, device: torch.device, compiled: bool) -> tuple[dict, object, object]:
    """(b)'s figures on the compiled or eager env step, plus the teacher bank and student it flew (reused by (c))."""
    from eyas import sim
    from eyas.distill.collect import collect, estimate_position_offsets
    from eyas.teachers import TeacherBank
    from eyas.distill.dataset import EpisodeDataset
    from eyas.distill.evaluation import Evaluator
    from eyas.distill.trainer import Distillation
    from eyas.envs import PointControlEnvCfg
    from eyas.model import StudentPolicy

    if args.teachers:
        from eyas.teachers import load_teachers

        teachers = load_teachers(args.teachers, device)
    else:  # synthetic: affine teachers on the privileged observation, each on a randomised dynamics set
        from torch import nn

        from eyas.teachers import Teacher

        g = torch.Generator().manual_seed(0)
        params = sim.sample_domain_randomized_params(args.num_teachers, g)
        teachers = []
        for i in range(args.num_teachers):
            net = nn.Sequential(nn.Linear(74, 64), nn.ELU(), nn.Linear(64, 4))
            teachers.append(Teacher(net, num_obs=74, params=params[i], name=f"synthetic{i}"))
    bank = TeacherBank(teachers, device)
    cfg = PointControlEnvCfg(compile=compiled)
    g = torch.Generator().manual_seed(1)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    t = time.perf_counter()
    offsets, _ = estimate_position_offsets(bank, cfg, num_episodes=args.num_episodes, num_envs=args.num_envs,
                                           generator=g, device=device)
    t_offsets = time.perf_counter() - t
    ds = EpisodeDataset(len(bank) * args.num_episodes * 500, 22, 4, device=device)
    if args.student:  # a trained student flies DAgger episodes of realistic length
        from eyas.rltools_h5 import load_rltools_h5

        student = load_rltools_h5(args.student).to(device)
    else:
        student = StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)).to(device)
    out = {"teachers": len(bank), "stacked_teachers": bank.stacked, "num_episodes": args.num_episodes,
           "offset_estimation_s": t_offsets}
    for mode, actor in (("dagger", student), ("teacher_forcing", None)):  # train below on the teachers' data
        ds.clear()
        t = time.perf_counter()
        collect(bank, cfg, num_episodes=args.num_episodes, num_envs=args.num_envs, generator=g, device=device,
                student=actor, position_offsets=offsets, dataset=ds)
        sync()
        out[f"collect_{mode}_s"] = time.perf_counter() - t
        out[f"collect_{mode}_env_steps_per_s"] = ds.num_steps / out[f"collect_{mode}_s"]
    trainer = Distillation(student, device=device, batch_size=args.batch_size, sequence_length=args.sequence_length)
    t = time.perf_counter()
    result = trainer.update(ds, g)
    sync()
    out["train_s"] = time.perf_counter() - t
    out["train_batches"] = result["num_batches"]
    out["dataset_steps"] = ds.num_steps
    if result["num_batches"]:
        out["train_sample_steps_per_s"] = result["num_batches"] * args.batch_size * args.sequence_length / out["train_s"]
    evaluator = Evaluator(cfg, randomized=args.eval_episodes, per_model=args.eval_registry_episodes,
                          models=list(sim.MODEL_NAMES), seed=5, device=device)
    t = time.perf_counter()
    evaluator(student)
    out["eval_s"] = time.perf_counter() - t
    out["epoch_dagger_s"] = out["collect_dagger_s"] + out["train_s"] + out["eval_s"]
    # rl-tools' epoch (1000 teachers x 10 episodes x 500 steps = 5e6 steps, ~146 batches of 64 x 500) at these rates
    if result["num_batches"]:
        out["raptor_scale_epoch_s_estimate"] = (5e6 / out["collect_dagger_env_steps_per_s"]
                                                + 5e6 / out["train_sample_steps_per_s"])
    return out, bank, student


def bench_apg(args, bank, student, device: torch.device, compiled: bool) -> dict:
    import copy

    from eyas.distill.apg import AnalyticPolicyGradient, APGConfig
    from eyas.envs import PointControlEnvCfg

    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    apg = AnalyticPolicyGradient(copy.deepcopy(student), bank, PointControlEnvCfg(compile=compiled),
                                 APGConfig(envs=args.apg_envs, horizon=args.apg_horizon,
                                           registry_share=args.apg_registry_share),
                                 generator=torch.Generator().manual_seed(2), device=device)
    steps = []
    t = timeit(lambda: steps.append(apg.update()), args.repeat, 1, sync)
    # an upper bound: rows that end within the horizon stop before its last step
    return {"apg_step_s": t, "envs": args.apg_envs, "horizon": args.apg_horizon,
            "apg_sample_steps_per_s_upper": args.apg_envs * args.apg_horizon / t,
            "ended_within_horizon": sum(s["terminated"] for s in steps) / len(steps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--teachers", nargs="+", default=None,
                   help="teacher files/dirs or foundation_policy, as eyas distill (default: synthetic teachers)")
    p.add_argument("--num_teachers", type=int, default=8, help="synthetic teachers")
    p.add_argument("--student", default=None, help="rl-tools .h5 student for the DAgger rollouts (default: untrained)")
    p.add_argument("--num_episodes", type=int, default=10)
    p.add_argument("--num_envs", type=int, default=1024)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--sequence_length", type=int, default=500)
    p.add_argument("--eval_episodes", type=int, default=100)
    p.add_argument("--eval_registry_episodes", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--apg_envs", type=int, default=1024)
    p.add_argument("--apg_horizon", type=int, default=200)
    p.add_argument("--apg_registry_share", type=float, default=0.0,
                   help="share of APG flights on the registry models (the main job: 0.25; privileged teachers only)")
    p.add_argument("--skip_step", action="store_true", help="skip (a), e.g. without the bridge")
    p.add_argument("--paths", nargs="+", default=["compiled", "eager"], choices=["compiled", "eager"],
                   help="env step paths for (b) and (c)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None}
    print(json.dumps(info))
    results = {"info": info}
    if not args.skip_step:
        results["step"] = bench_step(device, args.repeat)
        s = results["step"]
        print(f"(a) 500x64 step: torch {1e3 * s['torch_step_s']:.0f} ms ({s['torch_sample_steps_per_s']:.0f} sample-steps/s), "
              f"bridge {1e3 * s['bridge_step_s']:.0f} ms (C++ only {1e3 * s['bridge_loaded_step_s']:.0f} ms); "
              f"torch/bridge {s['ratio_torch_over_bridge']:.2f}x; first-step parity: |dloss| "
              f"{s['parity_first_step']['abs_loss_diff']:.1e}, max rel param diff {s['parity_first_step']['max_rel_param_diff']:.1e}")
    results["epoch"], results["apg"] = {}, {}
    for path in ("compiled", "eager"):
        if path in args.paths:
            results["epoch"][path], results["apg"][path] = bench_path(args, device, path, results.get("step"))
        else:
            results["epoch"][path] = results["apg"][path] = None
    results["collect_epoch_s"] = {p: None if e is None else e["collect_dagger_s"] for p, e in results["epoch"].items()}
    results["apg_step_s"] = {p: None if a is None else a["apg_step_s"] for p, a in results["apg"].items()}
    print(f"collect_epoch_s {results['collect_epoch_s']}, apg_step_s {results['apg_step_s']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def bench_path(args, device, path: str, step: dict | None) -> tuple[dict, dict | None]:
    """(b) and (c) on one env path."""
    compiled = path == "compiled"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e, bank, student = bench_epoch(args, device, compiled)
    e["compile_fell_back_to_eager"] = any("torch.compile of" in str(w.message) for w in caught)
    if e["compile_fell_back_to_eager"]:
        print(f"[{path}] note: torch.compile failed here, the env ran eager (see the warning)")
    print(f"(b) [{path}] epoch, {e['teachers']} teachers x {e['num_episodes']} episodes ({e['dataset_steps']} steps): "
          f"offsets (incl. any first compile) {e['offset_estimation_s']:.1f} s, collect teacher-forcing "
          f"{e['collect_teacher_forcing_s']:.1f} s, DAgger {e['collect_dagger_s']:.1f} s "
          f"({e['collect_dagger_env_steps_per_s']:.0f} env-steps/s), train {e['train_s']:.1f} s "
          f"({e['train_batches']} batches, {e.get('train_sample_steps_per_s', 0):.0f} sample-steps/s), "
          f"eval {e['eval_s']:.1f} s -> DAgger epoch {e['epoch_dagger_s']:.1f} s"
          + (f"; rl-tools-scale epoch (5e6 steps) ~{e['raptor_scale_epoch_s_estimate']:.0f} s"
             if "raptor_scale_epoch_s_estimate" in e else ""), flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = bench_apg(args, bank, student, device, compiled)
    a["compile_fell_back_to_eager"] = any("torch.compile of" in str(w.message) for w in caught)
    print(f"(c) [{path}] APG step, {a['envs']} episodes x {a['horizon']} steps: {a['apg_step_s']:.2f} s "
          f"(<= {a['apg_sample_steps_per_s_upper']:.0f} sample-steps/s; {100 * a['ended_within_horizon']:.0f} % of the "
          f"episodes ended within the horizon)"
          + (f"; per sample-step {a['apg_step_s'] / (a['envs'] * a['horizon']) / (step['torch_step_s'] / 32000):.0f}x"
             f" an imitation step's (a)" if step else ""), flush=True)
    return e, a


if __name__ == "__main__":
    main()
