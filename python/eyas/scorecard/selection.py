"""Choosing a student by the scorecard: a rule that decides on paired comparisons with enough episodes, so that
round-off (another machine, the compiled or eager path) cannot flip it between students of different quality.

`selection_cases` is the part of the scorecard a training run selects on (`SELECTION`: hover on every model, both
tracking speeds, 10 and 20 ms of delay, wind, gusts, weak motors, the strongest noise; never the hold-out platforms,
which no training decision may see), at 128 episodes per group, from a seed of its own (the scorecard's default
episodes stay held out). `judge` compares a candidate's flights with RAPTOR's and with the best student's so far,
episode by episode (all fly the same episodes):

* a group is **worse** for the candidate than for another policy when its terminations are more frequent by a
  paired test (McNemar: the episodes only one of the two lost, ``n_c - n_o > 1.96 sqrt(n_c + n_o)``), or its
  headline error (final error, tracking RMS) on the episodes both completed is higher by more than
  ``ERROR_FLOOR`` (5 %) with the paired mean difference beyond 1.96 standard errors;
* its **objective** is the number of groups worse than RAPTOR plus ``SCORE_WEIGHT`` times its score, the mean
  over groups of ``ln(error / RAPTOR's error) + TERMINATION_WEIGHT * (terminated share - RAPTOR's)``: one group
  falling below RAPTOR costs as much as every group's error growing by 10 %;
* a candidate replaces the best when its objective is lower.

Differences below a test's reach (sub-millimetre moves on near-deterministic registry episodes, a terminated
episode more or less) neither refuse a candidate nor count against RAPTOR.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from .cases import Case, default_cases

ERROR_FLOOR = 0.05  # relative: an error difference smaller than this never makes a group worse
TERMINATION_WEIGHT = 5.0  # score per unit of terminated share (5 points = a 28 % larger error)
SCORE_WEIGHT = 10.0  # objective per unit of score (a group worse than RAPTOR = a 10 % larger error everywhere)
SELECTION_EPISODES = 128
SELECTION_SEED_OFFSET = 7_919  # selection episodes: the run's seed plus this (the scorecard's default seed is 0)


# case -> the groups a selection flies (None: all of the case's)
SELECTION = {"hover": None, "track_5s": ("randomized", "crazyflie", "x500"), "track_10s": ("randomized",),
             "delay_10ms": None, "delay_20ms": None, "wind": None, "gust": None, "weak_motor": None, "noise_4x": None}


def selection_cases(names: list[str] | None = None) -> dict[str, Case]:
    """The scorecard cases (``names``, default `SELECTION`'s) with the groups a selection flies; a name
    ``case/group`` keeps that one group of the case (several such names add up)."""
    cases = default_cases()
    selected = {case: tuple(g for g in cases[case].groups if keep is None or g.label in keep)
                for case, keep in SELECTION.items()}
    wanted: dict[str, set | None] = {}  # case -> the groups named (None: all its selection groups)
    for name in names if names is not None else SELECTION:
        case, _, group = name.partition("/")
        if case not in SELECTION:
            raise ValueError(f"{case!r} is not a selection case; cases: {', '.join(SELECTION)}")
        labels = [g.label for g in selected[case]]
        if group and group not in labels:
            raise ValueError(f"{name!r}: {case} has no selection group {group!r}; groups: {', '.join(labels)}")
        if not group:
            wanted[case] = None
        elif wanted.get(case, set()) is not None:
            wanted.setdefault(case, set()).add(group)
    return {case: dataclasses.replace(cases[case], groups=tuple(g for g in selected[case]
                                                                 if keep is None or g.label in keep))
            for case, keep in wanted.items()}


class Verdict(NamedTuple):
    worse_than_reference: list[str]  # groups (case/group) worse than RAPTOR's
    score: float

    @property
    def objective(self) -> float:
        return len(self.worse_than_reference) + SCORE_WEIGHT * self.score


def _arrays(entry: dict, rms: bool) -> tuple[np.ndarray, np.ndarray]:
    e = entry["per_episode"]
    return np.asarray(e["terminated"], dtype=bool), np.asarray(e["rms_error" if rms else "position_error"], float)


def worse(candidate: dict, other: dict, rms: bool) -> bool:
    """Whether ``candidate``'s flights of a group are worse than ``other``'s on the same episodes (module docstring)."""
    t_c, e_c = _arrays(candidate, rms)
    t_o, e_o = _arrays(other, rms)
    lost_c, lost_o = int((t_c & ~t_o).sum()), int((t_o & ~t_c).sum())
    if lost_c - lost_o > 1.96 * math.sqrt(lost_c + lost_o):
        return True
    both = ~t_c & ~t_o
    if both.sum() < 2:
        return False
    d = e_c[both] - e_o[both]
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(int(both.sum()))
    return mean > ERROR_FLOOR * float(e_o[both].mean()) and mean > 1.96 * se


def judge(results: dict, cases: dict, name: str, reference: str) -> Verdict:
    """Policy ``name``'s verdict against ``reference`` over every group of a scorecard ``results``."""
    worse_groups, terms = [], []
    for case, groups in results.items():
        rms = cases[case]["headline"] == "rms"
        for group, row in groups.items():
            c, r = row[name], row[reference]
            if worse(c, r, rms):
                worse_groups.append(f"{case}/{group}")
            error = c["rms_error_mean" if rms else "position_error_mean"]
            base = r["rms_error_mean" if rms else "position_error_mean"]
            ratio = math.log(max(error, 1e-4) / max(base, 1e-4)) if error == error and base == base else 1.0
            terms.append(ratio + TERMINATION_WEIGHT * (c["share_terminated"] - r["share_terminated"]))
    return Verdict(worse_groups, float(np.mean(terms)))


def prefer(results: dict, cases: dict, candidate: str, best: str, reference: str) -> tuple[bool, str]:
    """Whether ``candidate`` replaces ``best`` (module docstring), and why in a few words."""
    c, b = judge(results, cases, candidate, reference), judge(results, cases, best, reference)
    said = f"{len(c.worse_than_reference)} groups worse than RAPTOR, score {c.score:+.3f}"
    if c.objective < b.objective:
        return True, f"{NEW_BEST}: {said}"
    return False, f"kept the best: {said} (the best's: {len(b.worse_than_reference)}, {b.score:+.3f})"


NEW_BEST = "new best"
