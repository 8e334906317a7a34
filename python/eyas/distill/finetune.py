"""The fine-tuning phase of a distillation run (not rl-tools): APG steps on the distilled best actor
(`eyas.distill.apg`), every ``eval_every`` steps a candidate flown through the scorecard's selection cases beside
RAPTOR (`eyas.scorecard.selection`); the best candidate by that rule becomes the run's best actor.

Its state (``FineTuneState``, saved in state.pt with the rest of the run) holds the APG trainer, the evaluated
rows and the best candidate with its flights (the rule compares candidates with the best episode by episode).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from eyas.distill.apg import STATS as APG_STATS
from eyas.distill.apg import AnalyticPolicyGradient
from eyas.distill.evaluation import raptor_policy
from eyas.distill.setup import RunSetup
from eyas.model import StudentPolicy
from eyas.scorecard.run import Scorecard
from eyas.scorecard.selection import NEW_BEST, SELECTION_SEED_OFFSET, judge, prefer, selection_cases

REFERENCE, BEST, CANDIDATE = "raptor", "best", "candidate"


@dataclass
class FineTuneState:
    """What the phase has done: rows (one per evaluation), the best candidate and its flights, the trainer."""

    history: list = field(default_factory=list)
    best: dict | None = None  # {"iteration", "student", "results"}
    reference: dict | None = None  # RAPTOR's flights of the selection cases (or the distilled actor's)
    trainer: dict | None = None

    def to_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "reference": self.reference, "trainer": self.trainer}

    @classmethod
    def from_dict(cls, saved: dict) -> "FineTuneState":
        return cls(saved["history"], saved["best"], saved.get("reference"), saved.get("trainer"))


def weights(student: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


class FineTuning:
    """The phase for one run: the student starts from ``start`` (the distilled actor; a new phase) or ``state``
    (resume); ``progress_bar(iterable, name, initial, total)`` wraps the steps."""

    def __init__(self, run: RunSetup, generator: torch.Generator, state: FineTuneState | None, start: dict,
                 progress_bar: Callable):
        self.run, self.cfg, self.progress_bar = run, run.cfg.apg, progress_bar
        self.state = state or FineTuneState()
        self.student = run.new_student()
        self.apg = AnalyticPolicyGradient(self.student, run.bank, run.env_cfg, self.cfg, generator=generator,
                                          device=run.device, world=run.world)
        cases = selection_cases(list(self.cfg.select_cases) if self.cfg.select_cases is not None else None)
        self.card = Scorecard(cases, episodes=self.cfg.eval_episodes,
                              seed=run.cfg.seed + SELECTION_SEED_OFFSET, device=run.device,
                              compile=getattr(run.env_cfg, "compile", None))
        if self.state.trainer is not None:
            self.apg.load_state_dict(self.state.trainer)
        else:
            self.student.load_state_dict(start)

    def fly(self, policy: StudentPolicy) -> dict:
        """``{case: {group: summary}}`` of ``policy`` on the selection cases."""
        results = self.card.run({CANDIDATE: policy.eval()})["results"]
        return {case: {group: row[CANDIDATE] for group, row in groups.items()} for case, groups in results.items()}

    def _begin(self) -> None:
        """A new phase: RAPTOR's flights of the selection cases (the distilled actor's without RAPTOR), the
        distilled actor's, and the first row."""
        raptor = raptor_policy(self.run.caps, self.run.num_obs, self.run.num_actions, self.run.device)
        first = self.fly(self.student)
        self.state.reference = self.fly(raptor) if raptor is not None else first
        self.state.best = {"iteration": 0, "student": weights(self.student), "results": first}
        self.state.history.append(self._row(0, first, [], 0.0, 0.0, NEW_BEST))

    def run_phase(self, logger, save: Callable[[], None]) -> StudentPolicy:
        """APG steps to ``cfg.iterations``, evaluating and selecting every ``cfg.eval_every``; ``save()`` writes the
        run state after each evaluation. Returns the last evaluated policy (the final actor)."""
        if self.state.best is None:
            self._begin()
        t0, window = time.perf_counter(), []
        for _ in self.progress_bar(range(self.apg.iteration, self.cfg.iterations), "apg", self.apg.iteration,
                                   self.cfg.iterations):
            window.append(self.apg.update())
            logger.apg_step(window[-1], self.apg.iteration, APG_STATS)
            if self.apg.iteration % self.cfg.eval_every and self.apg.iteration < self.cfg.iterations:
                continue
            train_s, t1 = time.perf_counter() - t0, time.perf_counter()
            self._evaluate(logger, window, train_s, t1)
            save()
            window, t0 = [], time.perf_counter()
        return self.apg.evaluated

    def _evaluate(self, logger, window: list, train_s: float, t1: float) -> None:
        evaluated = self.apg.evaluated.eval()  # the student, or its weights' moving average (--apg_average_decay)
        results = self.fly(evaluated)
        merged = merge({REFERENCE: self.state.reference, BEST: self.state.best["results"], CANDIDATE: results})
        accepted, why = prefer(merged, self.card_cases(), CANDIDATE, BEST, REFERENCE)
        if accepted:
            self.state.best = {"iteration": self.apg.iteration, "student": weights(evaluated), "results": results}
        row = self._row(self.apg.iteration, results, window, train_s, time.perf_counter() - t1, why)
        self.state.history.append(row)
        self.state.trainer = self.apg.state_dict()
        self.run.save_actor(evaluated, self.run.log_dir / "checkpoints" / f"apg_{self.apg.iteration}", "actor",
                            {"apg_iteration": self.apg.iteration})
        logger.evaluation(row["eval"], self.apg.iteration, prefix="apg/")
        logger.flush()
        logger.print(apg_line(row))

    def card_cases(self) -> dict:
        return {name: {"headline": case.headline} for name, case in self.card.cases.items()}

    def _row(self, iteration: int, results: dict, window: list, train_s: float, eval_s: float, why: str) -> dict:
        """One row of the phase's history: the candidate's verdict, its figures per group (no per-episode lists),
        and the mean training statistics since the previous row."""
        verdict = judge(merge({REFERENCE: self.state.reference, CANDIDATE: results}), self.card_cases(), CANDIDATE,
                        REFERENCE)
        flat = {f"{case}/{group}": {k: v for k, v in entry.items() if k != "per_episode"}
                for case, groups in results.items() for group, entry in groups.items()}
        mean = {k: (sum(w[k] for w in window) / len(window) if window else None) for k in APG_STATS}
        return {"iteration": iteration, "eval": flat, "worse_than_raptor": verdict.worse_than_reference,
                "score": verdict.score, "selection": why, **mean, "train_s": train_s, "eval_s": eval_s,
                "skipped": sum(bool(w.get("skipped")) for w in window)}


def merge(by_policy: dict[str, dict]) -> dict:
    """``{case: {group: {policy: summary}}}`` from each policy's ``{case: {group: summary}}``."""
    first = next(iter(by_policy.values()))
    return {case: {group: {name: results[case][group] for name, results in by_policy.items()} for group in groups}
            for case, groups in first.items()}


def apg_line(row: dict) -> str:
    hover = row["eval"].get("hover/randomized", {})
    cost = f"cost {row['cost']:.4f} imitation {row['imitation']:.5f} | " if row["cost"] is not None else ""
    return (f"apg {row['iteration']:5d} {cost}hover randomised {100 * hover.get('share_terminated', 0):4.1f}% "
            f"terminated, {100 * hover.get('position_error_mean', float('nan')):.2f} cm | "
            f"{len(row['worse_than_raptor'])} groups worse than RAPTOR, score {row['score']:+.3f} | "
            f"{row['train_s']:.1f}s train {row['eval_s']:.1f}s eval | {row['selection']}")
