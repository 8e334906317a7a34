"""The scorecard selection rule (`eyas.scorecard.selection`): paired tests decide, round-off does not."""
from __future__ import annotations

import numpy as np
import pytest

from eyas.scorecard.selection import SELECTION, judge, prefer, selection_cases, worse

CASES = {"hover": {"headline": "final"}, "track_5s": {"headline": "rms"}}


def entry(terminated, errors, rms=None) -> dict:
    terminated, errors = np.asarray(terminated, bool), np.asarray(errors, float)
    rms = errors if rms is None else np.asarray(rms, float)
    done = ~terminated
    return {"share_terminated": float(terminated.mean()), "position_error_mean": float(errors[done].mean()),
            "rms_error_mean": float(rms[done].mean()),
            "per_episode": {"terminated": terminated.tolist(), "position_error": errors.tolist(),
                            "rms_error": rms.tolist()}}


def episodes(n=128, seed=0, scale=0.05, spread=0.2):
    return scale * (1 + spread * np.random.default_rng(seed).standard_normal(n))


def test_more_terminations_are_worse_only_beyond_a_paired_test():
    base = np.zeros(128, bool)
    errors = episodes()
    lost = base.copy()
    lost[:10] = True  # 10 episodes lost that the other completed: 10 > 1.96 sqrt(10)
    assert worse(entry(lost, errors), entry(base, errors), rms=False)
    one = base.copy()
    one[:2] = True  # two more: within what a paired test cannot tell from chance
    assert not worse(entry(one, errors), entry(base, errors), rms=False)
    swapped = base.copy()
    swapped[:10] = True
    other = base.copy()
    other[10:18] = True  # both lose episodes: 10 vs 8 is no difference
    assert not worse(entry(swapped, errors), entry(other, errors), rms=False)


def test_a_larger_error_is_worse_when_paired_beyond_the_noise_and_the_floor():
    base = np.zeros(128, bool)
    errors = episodes()
    noise = 0.002 * np.random.default_rng(1).standard_normal(128)
    assert worse(entry(base, 1.10 * errors + noise), entry(base, errors), rms=False)  # +10 %
    assert not worse(entry(base, 1.03 * errors + noise), entry(base, errors), rms=False)  # below the 5 % floor
    scatter = 0.05 * np.random.default_rng(2).standard_normal(128)
    assert not worse(entry(base, 1.10 * errors + scatter), entry(base, errors), rms=False)  # within the scatter
    # the tracking case compares the RMS, not the final error
    assert worse(entry(base, errors, rms=1.2 * errors), entry(base, errors), rms=True)
    assert not worse(entry(base, errors, rms=1.2 * errors), entry(base, errors), rms=False)


def results(**policies) -> dict:
    """{case: {group: {policy: entry}}} from policy=(hover entry, tracking entry)."""
    return {"hover": {"randomized": {k: v[0] for k, v in policies.items()}},
            "track_5s": {"randomized": {k: v[1] for k, v in policies.items()}}}


def test_judge_counts_groups_worse_than_the_reference_and_scores():
    ok, errors = np.zeros(128, bool), episodes()
    raptor = (entry(ok, errors), entry(ok, errors, rms=3 * errors))
    student = (entry(ok, 0.5 * errors), entry(ok, errors, rms=4 * errors))
    verdict = judge(results(raptor=raptor, student=student), CASES, "student", "raptor")
    assert verdict.worse_than_reference == ["track_5s/randomized"]
    assert verdict.score == pytest.approx((np.log(0.5) + np.log(4 / 3)) / 2, rel=1e-9)


def test_prefer_weighs_groups_below_raptor_against_the_score():
    """One group fewer below RAPTOR is worth up to a 10 % larger error everywhere: a candidate that fixes tracking at
    a small cost on hover replaces the best, one that pays for it with a large cost does not."""
    ok, errors = np.zeros(128, bool), episodes()
    raptor = (entry(ok, errors), entry(ok, errors, rms=3 * errors))
    best = (entry(ok, 0.8 * errors), entry(ok, errors, rms=4 * errors))  # tracking worse than RAPTOR
    fixes_tracking = (entry(ok, 0.9 * errors), entry(ok, errors, rms=2.9 * errors))
    assert prefer(results(raptor=raptor, best=best, candidate=fixes_tracking), CASES, "candidate", "best", "raptor")[0]
    pays_too_much = (entry(ok, 2.9 * errors), entry(ok, errors, rms=2.9 * errors))  # hover now 2.9x RAPTOR's
    accepted, why = prefer(results(raptor=raptor, best=best, candidate=pays_too_much), CASES, "candidate", "best",
                           "raptor")
    assert not accepted and "kept the best" in why
    lower_score = (entry(ok, 0.5 * errors), entry(ok, errors, rms=3.8 * errors))  # same groups below RAPTOR
    assert prefer(results(raptor=raptor, best=best, candidate=lower_score), CASES, "candidate", "best", "raptor")[0]


def test_round_off_does_not_change_a_decision():
    """Perturbing every figure at float32 round-off (the other machine, the eager path) keeps each verdict."""
    ok, errors = np.zeros(128, bool), episodes()
    raptor = (entry(ok, errors), entry(ok, errors, rms=3 * errors))
    best = (entry(ok, 0.8 * errors), entry(ok, errors, rms=2.9 * errors))
    for k, candidate in enumerate([(entry(ok, 0.79 * errors), entry(ok, errors, rms=2.9 * errors)),
                                   (entry(ok, 0.7 * errors), entry(ok, errors, rms=3.5 * errors))]):
        jitter = 1 + 1e-6 * np.random.default_rng(k).standard_normal(128)
        shaken = (entry(ok, candidate[0]["per_episode"]["position_error"] * jitter),
                  entry(ok, errors, rms=np.asarray(candidate[1]["per_episode"]["rms_error"]) * jitter))
        plain = prefer(results(raptor=raptor, best=best, candidate=candidate), CASES, "candidate", "best", "raptor")
        assert prefer(results(raptor=raptor, best=best, candidate=shaken), CASES, "candidate", "best",
                      "raptor")[0] == plain[0]


def test_selection_cases_never_fly_the_holdout_platforms():
    cases = selection_cases()
    assert set(cases) == set(SELECTION) and "holdout" not in cases
    assert [g.label for g in cases["track_10s"].groups] == ["randomized"]
    with pytest.raises(ValueError, match="not a selection case"):
        selection_cases(["holdout"])


def test_a_selection_can_name_single_groups():
    """CASE/GROUP keeps one group of a case (several add up; the case's name alone keeps all its selection groups);
    a group the case's selection does not fly is refused by name."""
    cases = selection_cases(["hover/randomized", "wind/crazyflie", "hover/x500"])
    assert {k: [g.label for g in v.groups] for k, v in cases.items()} == {"hover": ["randomized", "x500"],
                                                                        "wind": ["crazyflie"]}
    assert len(selection_cases(["hover/fs", "hover"])["hover"].groups) == len(selection_cases(["hover"])["hover"].groups)
    with pytest.raises(ValueError, match="track_10s has no selection group 'crazyflie'"):
        selection_cases(["track_10s/crazyflie"])
