#!/usr/bin/env python
"""The scorecard (`eyas evaluate`, `eyas.scorecard`) flown in l2f, the C++ simulator RAPTOR was trained in, next to
the embedded env: is the embedded env's verdict l2f's?

For every scorecard case and group (`eyas.scorecard.cases.default_cases`), RAPTOR (the released checkpoint) and
one student fly **the same episodes** in both simulators. The episodes are the scorecard's own: the group's env
from `Scorecard(...).env(case, group)`, reset with the group's seed, gives every row's parameters, initial state
(with l2f's disturbance-force draw and the wind), task (Lissajous reference, delay, gust, weak motor, noise
scale) and the seed of its observation-noise stream. In l2f (`l2f_scenarios.py` says how each mechanism is built
there: the force as gravity, a weak motor as scaled thrust coefficients, a fractional delay as two l2f steps of
f dt and (1 - f) dt, a gust as a change of the row's parameters at its step) the reference, the observation (with
the env's noise draws, reproduced), the terminations (relative to the reference, each row's thresholds) and the
metrics are computed in Python from l2f's states; a policy steps once per 10 ms step, all rows as one batch. In
the embedded env the episodes fly through `Scorecard.fly` (`eyas.envs.rollout`).

Metrics as `eyas.envs.rollout` has them: terminated share (Wilson 95 % interval); the headline error with a 95 %
interval (mean +- 1.96 standard errors over the episodes not terminated): the final error (mean |p - p_ref| over an
episode's last 100 steps) or, on the tracking cases, the RMS of |p - p_ref| after the reference's ramp. RAPTOR's
rows agree when both its intervals overlap between the simulators (an error interval needs two episodes that were
not terminated in each; else the share alone decides). Since the episodes are the same, they are also compared
pair by pair: the share of episodes with the same outcome in both simulators, and the mean |difference| of the
headline error over the episodes that ran out in both.

Checks of the reproduction, per group (printed, and in ``--json``): the first observation (noise included)
against the env's, three more noise draws against the env's, the Lissajous reference against the recorded one,
and a replay: RAPTOR's first ``--replay`` embedded flights, every step of them taken again in l2f from the
embedded state with the same commands (delay buffer, gust and all), the largest one-step state difference
(relative, |dx| / (1 + |x|)) over the flights; with the same mechanisms it stays at float32 rounding (~1e-5).

    python benchmarks/scorecard_l2f.py [--cases hover delay_10ms] [--episodes 128] [--student PATH]
                                       [--seed 0] [--threads 1] [--json OUT] [--replay 8]

Needs `pip install l2f==2.0.18` (a benchmark dependency, never CI's).
"""
from __future__ import annotations

import os
import sys


def _threads_before_openmp_loads() -> None:
    """OMP_NUM_THREADS from ``--threads``, set before torch and l2f load their OpenMP runtimes (both read it once)."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            os.environ["OMP_NUM_THREADS"] = sys.argv[i + 1]
        elif arg.startswith("--threads="):
            os.environ["OMP_NUM_THREADS"] = arg.split("=", 1)[1]


_threads_before_openmp_loads()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import eyas  # noqa: E402
from eyas.envs.rollout import EpisodeStats  # noqa: E402
from eyas.envs.scenario import TASK  # noqa: E402
from eyas.scorecard.cases import CASE_NAMES, default_cases  # noqa: E402
from eyas.scorecard.cli import load_policy  # noqa: E402
from eyas.scorecard.run import Scorecard, summary  # noqa: E402
from l2f_scenarios import (STATE_FIELDS, Episodes, L2FBatch, NoiseDraws, lissajous, observe,  # noqa: E402
                           terminated)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDENT = REPO / "fixtures" / "students" / "main_job" / "student.h5"
RAPTOR = "raptor"
TAIL_STEPS, SETTLE_RADIUS = 100, 0.1  # `eyas.envs.rollout.rollout`'s defaults, which the scorecard uses


# ------------------------------------------------------------------------------------------- flying in l2f
@torch.no_grad()
def fly_l2f(policy: torch.nn.Module, ep: Episodes, rms_from: int) -> EpisodeStats:
    """One episode per row of ``ep`` in l2f with ``policy`` (step-wise, all rows one batch), as the embedded env
    flies it (module docstring). A finished row is held where it ended and its observation zeroed until all end."""
    sim = L2FBatch(ep)
    sim.write(ep.state)
    noise, n, steps = NoiseDraws(ep), ep.n, ep.max_steps
    # the commands a[t], a[t-1], ...: the env fills its delay buffer and action history with the initial rotor speeds
    commands = np.repeat(ep.normalized_rpm(ep.state)[:, None], int(sim.k.max()) + 2, 1)
    x, dt = ep.state.copy(), ep.dt.astype(np.float64)
    gust_step, gust_force = ep.task[:, TASK.GUST_STEP], ep.task[:, TASK.GUST_FORCE]
    errors = np.full((n, steps), math.nan)
    lengths, ended, failed = np.full(n, steps), np.zeros(n, bool), np.zeros(n, bool)
    policy.reset(batch_size=n)
    reset = torch.ones(n, dtype=torch.bool)
    for t in range(steps):
        obs = observe(x, lissajous(ep.task, t * dt), commands[:, 0], ep.clip)
        drawn = noise.draw()  # drawn every step whatever the rows do, as the env does
        if drawn is not None:
            obs[:, :18] += drawn
        obs[ended] = 0
        action = policy(torch.from_numpy(obs), reset=reset).numpy().astype(np.float32)
        reset = torch.zeros(n, dtype=torch.bool)
        commands = np.concatenate([action[:, None], commands[:, :-1]], 1)
        gusts = np.nonzero(gust_step == t)[0]
        if len(gusts):  # the env adds the gust to the force before integrating the step of its length
            sim.add_force(gusts, gust_force[gusts])
        sim.step(commands)
        x = np.where(ended[:, None], x, sim.read())
        reference = lissajous(ep.task, (t + 1) * dt)
        errors[~ended, t] = np.linalg.norm(x[~ended, :3] - reference[0][~ended], axis=-1)
        done = terminated(x, reference, ep.thresholds) & ~ended
        lengths[done], failed[done] = t + 1, True
        ended |= done
        if ended.all():
            break
    return episode_stats(errors, lengths, failed, rms_from)


def episode_stats(errors: np.ndarray, lengths: np.ndarray, failed: np.ndarray, rms_from: int) -> EpisodeStats:
    """`EpisodeStats` of episodes given their |p - p_ref| after each step ``errors`` (n, steps), as
    `eyas.envs.rollout` forms them: the tail mean over the last 100 steps, the RMS over the steps from
    ``rms_from`` on, the settling step (after which the error stays within 10 cm). Returns are not computed."""
    n = len(lengths)
    tail, final, rms, settled = (np.full(n, math.nan) for _ in range(4))
    for i, length in enumerate(lengths):
        e = errors[i, :length]
        tail[i], final[i] = e[-TAIL_STEPS:].mean(), e[-1]
        late = e[rms_from:]
        rms[i] = math.sqrt(float(np.mean(late * late))) if len(late) else math.nan
        over = np.nonzero(e > SETTLE_RADIUS)[0]
        settled[i] = over[-1] + 1 if len(over) else 0
    f64 = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return EpisodeStats(returns=f64(np.full(n, math.nan)), lengths=torch.as_tensor(lengths, dtype=torch.long),
                        terminated=torch.as_tensor(failed), position_error=f64(tail), final_position_error=f64(final),
                        rms_error=f64(rms), settling_steps=f64(settled), tail_steps=TAIL_STEPS)


# ------------------------------------------------------------------------------------------- reproduction checks
def check_start(env, ep: Episodes) -> dict:
    """The largest differences between the env's first observation (noise included) and three more noise draws,
    and this script's (`l2f_scenarios`): both zero up to float32 rounding when the reproduction is right."""
    obs = env.reset(seed=ep.seed)[0]["policy"].numpy()
    noise = NoiseDraws(ep)
    mine = observe(ep.state, lissajous(ep.task, np.zeros(ep.n)), ep.normalized_rpm(ep.state), ep.clip)
    first = noise.draw()
    if first is not None:
        mine[:, :18] += first
    out = {"first_observation": float(np.abs(obs - mine).max())}
    if first is not None:
        out["noise_draws"] = max(float(np.abs(env.observation_noise()[:, :18].numpy() - noise.draw()).max())
                                 for _ in range(3))
    return out


def state_at(flight: dict, t: int) -> np.ndarray:
    return np.concatenate([flight[name][t] for name, _ in STATE_FIELDS]).astype(np.float32)


def check_flights(ep: Episodes, flights: list[dict]) -> dict:
    """Replay the recorded embedded flights (the first rows' first episodes) one step at a time in l2f: from each
    recorded state, with the recorded commands (the delay buffer filled as the env fills it) and the row's gust,
    the largest relative difference to the next recorded state; also the reference against the recorded one and
    whether this script's termination fires where the env's did not."""
    rows = np.arange(len(flights))
    sim, fill = L2FBatch(ep, rows), ep.normalized_rpm(ep.state[rows], rows)
    slots, lengths = int(sim.k.max()) + 2, [len(f["action"]) for f in flights]
    state_error = reference_error = 0.0
    early = 0
    for t in range(max(lengths)):
        live = np.array([t < L for L in lengths])
        now = np.stack([state_at(f, min(t, L - 1)) for f, L in zip(flights, lengths)])
        reference = lissajous(ep.task[rows], t * ep.dt[rows].astype(np.float64))
        recorded = np.stack([f["reference"][min(t, L - 1)] for f, L in zip(flights, lengths)])
        reference_error = max(reference_error, float(np.abs(reference[0] - recorded)[live].max()))
        early += int((terminated(now, reference, ep.thresholds[rows]) & live).sum()) if t else 0
        commands = np.stack([[f["action"][t - j] if t - j >= 0 else fill[i] for j in range(slots)]
                             if t < L else np.repeat(fill[i][None], slots, 0)
                             for i, (f, L) in enumerate(zip(flights, lengths))]).astype(np.float32)
        gusts = np.nonzero(ep.task[rows, TASK.GUST_STEP] == t)[0]
        if len(gusts):
            sim.add_force(gusts, ep.task[rows][gusts][:, TASK.GUST_FORCE])
        sim.write(now, rows)
        sim.step(commands)
        after = np.array([t + 1 < L for L in lengths])
        if after.any():
            want = np.stack([state_at(f, min(t + 1, L - 1)) for f, L in zip(flights, lengths)])
            gap = np.abs(sim.read() - want) / (1 + np.abs(want))
            state_error = max(state_error, float(gap[after].max()))
    return {"replay_state": state_error, "reference": reference_error, "early_terminations": early,
            "replayed_steps": int(sum(lengths) - len(lengths))}


# ------------------------------------------------------------------------------------------- comparison
def headline(s: dict, case) -> tuple[float, list[float]]:
    """The case's headline error [m] and its 95 % interval from a `summary`."""
    key = "rms_error" if case.headline == "rms" else "position_error"
    return s[f"{key}_mean"], s[f"{key}_ci95"]


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def agreement(embedded: dict, in_l2f: dict, case) -> dict:
    """Whether the two simulators' intervals overlap: terminated share, and the headline error where both have
    an interval (two or more episodes not terminated). Paired too, as the episodes are the same: the share of
    episodes with the same outcome (terminated in both or neither) and the mean |difference| of the headline
    error over the episodes that ran out in both."""
    share = overlap(embedded["share_terminated_ci95"], in_l2f["share_terminated_ci95"])
    a, b = headline(embedded, case)[1], headline(in_l2f, case)[1]
    comparable = all(math.isfinite(v) for v in (*a, *b))
    error = overlap(a, b) if comparable else None
    key = "rms_error" if case.headline == "rms" else "position_error"
    pe, pl = embedded["per_episode"], in_l2f["per_episode"]
    te, tl = np.array(pe["terminated"]), np.array(pl["terminated"])
    both = ~te & ~tl
    gap = np.abs(np.array(pe[key]) - np.array(pl[key]))[both]
    return {"share": share, "error": error, "agree": share and error is not False,
            "same_outcome": float(np.mean(te == tl)), "completed_in_both": int(both.sum()),
            "error_difference_mean": float(gap.mean()) if len(gap) else math.nan}


CELL = 38  # characters of one simulator's figures in the table


def cell(s: dict, case) -> str:
    low, high = s["share_terminated_ci95"]
    value, (a, b) = headline(s, case)
    error = "   --" if not math.isfinite(value) else f"{100 * value:5.1f}"
    interval = "" if not math.isfinite(a) else f" [{100 * a:4.1f},{100 * b:5.1f}]"
    return f"{100 * s['share_terminated']:5.1f}% [{100 * low:4.1f},{100 * high:5.1f}] {error}{interval}".ljust(CELL)


def table_row(label: str, row: dict, case) -> str:
    parts = [f"{label:<26}"]
    for name, sims in row["policies"].items():
        mark = {True: "yes", False: "NO "}[sims["agreement"]["agree"]]
        parts += [cell(sims["embedded"], case), cell(sims["l2f"], case), mark]
    return " | ".join(parts)


def table_header(names: list[str]) -> list[str]:
    sub = "term. share [95 %]  error cm [95 %]"
    head = f"{'case/group':<26}" + "".join(f" | {n + ' embedded':<{CELL}} | {n + ' l2f':<{CELL}} | ok " for n in names)
    return [head, f"{'':<26}" + f" | {sub:<{CELL}} | {sub:<{CELL}} |    " * len(names)]


# ------------------------------------------------------------------------------------------- run
def fly_group(card: Scorecard, case, group, policies: dict, replay: int) -> dict:
    """Every policy on the group's episodes in both simulators, with the reproduction checks."""
    env, seed = card.env(case, group)
    ep = Episodes.read(env, seed)
    checks = check_start(env, ep)
    row = {"case": case.name, "group": group.label, "headline": case.headline, "seed": seed, "policies": {}}
    for name, policy in policies.items():
        started = time.perf_counter()
        record = min(replay, ep.n) if name == RAPTOR else 0
        stats = card.fly(policy, case, group, record)
        embedded_s = time.perf_counter() - started
        if record:
            checks |= check_flights(ep, stats.trajectories)
        started = time.perf_counter()
        in_l2f = summary(fly_l2f(policy.eval(), ep, case.rms_from))
        row["policies"][name] = {"embedded": summary(stats), "l2f": in_l2f, "seconds": {
            "embedded": embedded_s, "l2f": time.perf_counter() - started}}
        row["policies"][name]["agreement"] = agreement(row["policies"][name]["embedded"], in_l2f, case)
    row["checks"] = checks
    return row


def summary_lines(rows: list[dict], names: list[str]) -> list[str]:
    """Agreements per policy and case, the paired figures, then the reproduction checks' worst values."""
    out = []
    for name in names:
        marks = [r["policies"][name]["agreement"] for r in rows]
        per_case = {}
        for r, m in zip(rows, marks):
            hits = per_case.setdefault(r["case"], [0, 0])
            hits[0], hits[1] = hits[0] + m["agree"], hits[1] + 1
        out.append(f"{name}: embedded and l2f agree within their 95 % intervals on {sum(m['agree'] for m in marks)} "
                   f"of {len(rows)} groups (" + ", ".join(f"{c} {a}/{n}" for c, (a, n) in per_case.items()) + ")")
        episodes = sum(r["policies"][name]["l2f"]["episodes"] for r in rows)
        same = sum(m["same_outcome"] * r["policies"][name]["l2f"]["episodes"] for r, m in zip(rows, marks))
        gaps = [m["error_difference_mean"] for m in marks if math.isfinite(m["error_difference_mean"])]
        out.append(f"  paired: the same outcome (terminated or not) in {same:.0f} of {episodes} episodes; headline "
                   f"|difference| over episodes completed in both: mean {100 * np.mean(gaps):.2f} cm per group, "
                   f"largest {100 * max(gaps):.2f} cm" if gaps else "  paired: no episode completed in both")
    worst = lambda key: max((r["checks"][key] for r in rows if key in r["checks"]), default=None)  # noqa: E731
    shown = lambda key: "n/a" if worst(key) is None else f"{worst(key):.2e}"  # noqa: E731
    out.append(f"reproduction checks, worst over groups: first observation {shown('first_observation')}, noise draws "
               f"{shown('noise_draws')}, reference {shown('reference')} m, one-step replay {shown('replay_state')} "
               f"(relative), terminations where the env had none: "
               f"{sum(r['checks'].get('early_terminations', 0) for r in rows)}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=list(CASE_NAMES), metavar="CASE",
                   help=f"cases to fly (default: all: {' '.join(CASE_NAMES)})")
    p.add_argument("--episodes", type=int, default=128, help="episodes per group (default 128)")
    p.add_argument("--student", type=Path, default=DEFAULT_STUDENT, help="student policy (.h5 or eyas .pt)")
    p.add_argument("--seed", type=int, default=0, help="the scorecard's seed (default 0, as eyas evaluate's)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads (default 1)")
    p.add_argument("--replay", type=int, default=8, help="RAPTOR flights per group replayed step by step in l2f")
    p.add_argument("--json", type=Path, help="write every row (summaries with per-episode results, checks)")
    args = p.parse_args(argv)
    if args.episodes < 2:
        p.error("--episodes must be >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    student = load_policy(str(args.student))
    name = args.student.parent.name if args.student.stem == "student" else args.student.stem
    policies = {RAPTOR: eyas.load_rltools_h5(eyas.raptor_checkpoint_path()), name: student}
    cases = {k: v for k, v in default_cases().items() if k in args.cases}
    card = Scorecard(cases, episodes=args.episodes, seed=args.seed)
    print(f"RAPTOR ({eyas.raptor_checkpoint_path()}) and {name} ({args.student}), {args.episodes} episodes per "
          f"group, seed {args.seed}, {args.threads} thread(s); errors in cm (tracking cases: RMS after the ramp)")
    print("\n".join(table_header(list(policies))), flush=True)
    rows, started = [], time.perf_counter()
    for case in cases.values():
        for group in case.groups:
            row = fly_group(card, case, group, policies, args.replay)
            rows.append(row)
            print(table_row(case.label(group), row, case), flush=True)
            print(f"  {case.label(group)}: {time.perf_counter() - started:.0f} s; checks "
                  + ", ".join(f"{k} {v:.2g}" for k, v in row["checks"].items()), file=sys.stderr, flush=True)
    print("\n".join(summary_lines(rows, list(policies))))
    seconds = time.perf_counter() - started
    print(f"({len(rows)} groups x {len(policies)} policies x 2 simulators in {seconds:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"episodes_per_group": args.episodes, "seed": args.seed, "seconds": seconds,
                                         "l2f": "2.0.18", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
