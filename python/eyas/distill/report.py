"""The end of a distillation run: save the best, distilled and final actors, evaluate them on the final held-out
episodes (teachers on the same episodes as a reference), write summary.json, flights and plots; and the console
summary `eyas distill` prints."""
from __future__ import annotations

from eyas.distill import checkpoint
from eyas.distill.evaluation import raptor_policy, record_flights, teacher_policy_fn
from eyas.distill.setup import RunSetup
from eyas.distill.state import RunState
from eyas.io import atomic_write_json
from eyas.model import StudentPolicy
from eyas.scorecard.cases import default_cases
from eyas.scorecard.report import case_lines
from eyas.scorecard.run import Scorecard


def save_final_actors(run: RunSetup, state: RunState, last_distilled: dict, final
                      ) -> tuple[StudentPolicy, int, str, dict | None]:
    """best_actor, final_actor (and distilled_actor after APG); returns (best, epoch chosen, rule, APG summary)."""
    weights, best_epoch, chosen = state.distilled_actor(last_distilled)
    distilled = run.new_student(weights).eval()
    meta = {"epoch_chosen": best_epoch, "selection": chosen, "teachers": len(run.bank)}
    apg_summary = None
    tuned = state.finetune
    if tuned is not None:  # the APG phase ran: its best candidate is the best actor
        best = run.new_student(tuned.best["student"]).eval()
        run.save_actor(distilled, run.log_dir, "distilled_actor", meta)
        meta = {**meta, "apg_iteration_chosen": tuned.best["iteration"],
                "selection": f"{chosen}, then APG: the best candidate on the scorecard's selection cases beside "
                             f"RAPTOR (eyas.scorecard.selection)"}
        chosen = meta["selection"]
        rows = tuned.history
        apg_summary = {"iterations": rows[-1]["iteration"], "best_iteration": tuned.best["iteration"],
                       "best_worse_than_raptor": next(r["worse_than_raptor"] for r in rows
                                                      if r["iteration"] == tuned.best["iteration"]),
                       "seconds": {"train_s": sum(r["train_s"] for r in rows), "eval_s": sum(r["eval_s"] for r in rows)},
                       "distilled_actor_final_eval": final(distilled)}
        final_meta = {"epoch": len(state.history) - 1, "apg_iteration": rows[-1]["iteration"]}
    else:
        best, final_meta = distilled, {"epoch": len(state.history) - 1}
    run.save_actor(best, run.log_dir, "best_actor", meta)
    run.save_actor(run.new_student(state.final_student).eval(), run.log_dir, "final_actor", final_meta)
    return best, best_epoch, chosen, apg_summary


def privileged_teachers_on_final(run: RunSetup, final) -> list[dict]:
    """Up to three teachers trained over randomised dynamics fly the final episodes (every group in one flight):
    the like-for-like reference."""
    privileged = [t for t in run.bank.teachers if getattr(t, "params", None) is None][:3]
    if not any(name == final.held_out for name, _, _ in final.groups):
        return []
    return [final.evaluate_fn(teacher_policy_fn(t)) for t in privileged]


def held_out_mean(evals: list[dict], held_out: str) -> dict | None:
    """Mean held-out return and share terminated over teachers' evaluations (None without any)."""
    rows = [e[held_out] for e in evals]
    if not rows:
        return None
    return {"teachers": len(rows), "return_mean": sum(r["return_mean"] for r in rows) / len(rows),
            "share_terminated": sum(r["share_terminated"] for r in rows) / len(rows)}


def final_scorecard(run: RunSetup, best: StudentPolicy, raptor: StudentPolicy | None) -> dict | None:
    """Every case of `eyas evaluate` (the hold-out platforms included: this is a report, not a choice), the best
    actor beside RAPTOR on the same episodes (seed: the scorecard's default), without the per-episode lists."""
    episodes = run.cfg.evaluation.final_scorecard_episodes
    if not (run.caps.fixed_dynamics and run.caps.l2f_observation) or episodes == 0:
        return None
    policies = {"student": best} | ({"raptor": raptor} if raptor is not None else {})
    card = Scorecard(default_cases(), episodes=episodes, device=run.device,
                     compile=run.env_cfg.compile).run(policies)
    for groups in card["results"].values():
        for row in groups.values():
            for entry in row.values():
                entry.pop("per_episode", None)
    return {k: v for k, v in card.items() if k != "flights"}


def finish(run: RunSetup, state: RunState, last_distilled: dict) -> dict:
    """Everything a run writes at its end; returns the summary (summary.json). ``last_distilled``: the
    distillation's last student (the distilled actor when no DAgger epoch ran)."""
    c = run.cfg
    final = run.evaluator(c.evaluation.final_eval_episodes, max(c.evaluation.eval_registry_episodes, 10),
                          seed=c.seed + 2_000_029)
    best, best_epoch, chosen, apg_summary = save_final_actors(run, state, last_distilled, final)
    final_eval = final(best)
    teacher_evals = privileged_teachers_on_final(run, final)
    raptor = raptor_policy(run.caps, run.num_obs, run.num_actions, run.device)
    flights = (record_flights(best, run.env_cfg, run.device, seed=c.seed + 3_000_017)
               if run.caps.fixed_dynamics and run.caps.l2f_observation else None)
    teachers = state.teacher_eval["summary"]
    held_out = final_eval.get(final.held_out)
    summary = {
        "environment": {"backend": run.caps.name, "task": c.task, "config": run.env_cfg.to_dict()},
        "held_out": final.held_out,
        "best_actor": str(run.log_dir / "best_actor.h5"), "best_epoch": best_epoch, "selection": chosen,
        "best_collection_return": state.best["return"],
        "teachers": {"count": len(run.bank), "return_mean": teachers["return_mean"],
                     "share_terminated": teachers["share_terminated"], "episodes_each": state.teacher_eval["episodes"]},
        "final_eval": final_eval,
        "privileged_teachers_on_held_out": held_out_mean(teacher_evals, final.held_out),
        # the same final episodes flown by the released RAPTOR policy and by the (first) privileged teacher
        "raptor_final_eval": final(raptor) if raptor is not None else None,
        "teacher_final_eval": teacher_evals[0] if teacher_evals and run.caps.fixed_dynamics else None,
        "student_vs_teachers": (held_out["return_mean"] / teachers["return_mean"]
                                if held_out and teachers["return_mean"] else None),
        "gradient_steps": state.gradient_steps, "epochs": len(state.history),
        "world_size": run.world.size,  # processes (torchrun ranks); "seconds" are rank 0's
        "seconds": {k: sum(r.get(k, 0.0) for r in state.history) for k in ("collect_s", "train_s", "eval_s")},
        "apg": apg_summary,
    }
    summary["scorecard"] = final_scorecard(run, best, raptor)
    summary["foundation_policy_check"] = checkpoint.check_foundation_policy(run.log_dir / "best_actor.h5")
    atomic_write_json(run.log_dir / "summary.json", summary)
    if flights is not None:
        atomic_write_json(run.log_dir / "flights.json", flights, indent=None)
    if c.plots:
        from eyas.distill.plots import plot_run

        summary["plots"] = [str(p) for p in plot_run(run.log_dir)]
    return summary


def summary_lines(summary: dict, task: str, log_dir: str, plots: bool) -> list[str]:
    """What `eyas distill` prints at the end of a run."""
    import json

    held_out = summary["held_out"]
    final = summary["final_eval"].get(held_out)
    teachers = summary["teachers"]
    lines = [json.dumps({k: summary[k] for k in ("best_actor", "best_epoch", "gradient_steps", "epochs")}),
             f"teachers (own dynamics): mean return {teachers['return_mean']:.1f}, "
             f"terminated {100 * teachers['share_terminated']:.2f}%"]
    if final:
        where = "held-out randomised dynamics" if held_out == "randomized" else f"task {task}"
        lines.append(f"best student ({where}, {final['episodes']} episodes): mean return "
                     f"{final['return_mean']:.1f} ({100 * summary['student_vs_teachers']:.1f}% of teachers), "
                     f"terminated {100 * final['share_terminated']:.2f}%")
    ref = summary.get("privileged_teachers_on_held_out")
    if ref:
        lines.append(f"  teacher(s) on the same held-out set: mean return {ref['return_mean']:.1f}, "
                     f"terminated {100 * ref['share_terminated']:.2f}%")
    apg = summary.get("apg")
    if apg:
        before = apg["distilled_actor_final_eval"][held_out]
        lines.append(f"  before APG (rl-tools' algorithm, epoch {summary['best_epoch']}): mean return "
                     f"{before['return_mean']:.1f}, terminated {100 * before['share_terminated']:.2f}%; APG chose "
                     f"iteration {apg['best_iteration']} of {apg['iterations']}")
    for name, ev in summary["final_eval"].items():
        if name != held_out:
            lines.append(f"  {name:<11} return {ev['return_mean']:7.1f}  terminated {100 * ev['share_terminated']:5.1f}%")
    lines += position_error_table(summary)
    if summary.get("scorecard"):
        lines += ["the scorecard (eyas evaluate's cases, the same episodes for both; per group: docs/evaluation.md):",
                  *case_lines(summary["scorecard"])]
    names = ["training.png"] + (["flights.png"] if summary["environment"]["backend"] == "embedded" else [])
    lines.append(f"outputs in {log_dir}: best_actor.h5 (rl-tools), best_actor.pt, "
                 + ("distilled_actor.h5, " if apg else "") + "summary.json, TensorBoard events"
                 + ("".join(f", {name}" for name in names) if plots else ""))
    return lines


def _cell(ev: dict | None) -> str:
    if ev is None:
        return f"{'-':>27}"
    low, high = ev.get("position_error_ci95", (float("nan"),) * 2)
    error = f"{100 * ev['position_error_mean']:5.1f} [{100 * low:4.1f}, {100 * high:4.1f}]"
    return f"{100 * ev['share_terminated']:5.1f}% {error:>20}"


def position_error_table(summary: dict) -> list[str]:
    """Per group (held-out randomised dynamics, each registry model): share terminated and final position error
    in cm with its 95 % interval, for the student, rl-tools' algorithm alone, the teacher and RAPTOR, all on the
    same final episodes."""
    columns = [("student", summary["final_eval"]),
               ("rl-tools alone", (summary.get("apg") or {}).get("distilled_actor_final_eval")),
               ("teacher", summary.get("teacher_final_eval")), ("RAPTOR", summary.get("raptor_final_eval"))]
    columns = [(name, evals) for name, evals in columns if evals]
    if len(columns) < 2 and not any("position_error_mean" in ev for ev in summary["final_eval"].values()):
        return []
    lines = ["final position error (cm, mean |p - target| over the last second of episodes not terminated, 95 % "
             "interval) and share terminated, the same episodes for every policy:",
             f"  {'group':<11} {'episodes':>8} " + " ".join(f"{name:>27}" for name, _ in columns)]
    for group, ev in summary["final_eval"].items():
        lines.append(f"  {group:<11} {ev['episodes']:>8} "
                     + " ".join(_cell(evals.get(group)) for _, evals in columns))
    return lines
