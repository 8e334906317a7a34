"""The teachers committed under fixtures/teachers load, fit the env and still fly.

Bounds: on held-out episodes the crazyflie teacher terminates 0.6-0.8 % of its episodes and the privileged
teacher ~5 % (docs/teachers.md). On 256 episodes the number of terminations is ~Binomial(256, p): the bounds below
(13 and 32 episodes) are over 6 and 5 standard deviations above the expected ~2 and 12.8, so they only fail if
the teachers (or the env they were trained in) changed, not by chance.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from eyas.envs import PointControlEnv
from eyas.teachers import check_teacher_env, load_teacher_set
from eyas.teachers.evaluate import env_cfg_from_dict, evaluate_actor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "teachers"


@pytest.fixture(scope="module")
def teachers():
    return {t.name: t for t in load_teacher_set(FIXTURES)}


def test_both_teachers_load_with_their_dynamics(teachers):
    assert sorted(teachers) == ["crazyflie", "privileged"]
    assert teachers["crazyflie"].params is not None and teachers["privileged"].params is None
    for t in teachers.values():
        assert t.num_obs == 74 and t.num_actions == 4 and t.obs_group == "teacher"


@pytest.mark.parametrize("name, max_terminated, max_final_error", [("crazyflie", 13 / 256, 0.05),
                                                                    ("privileged", 32 / 256, 0.20)])
def test_teachers_fly(teachers, name, max_terminated, max_final_error):
    teacher = teachers[name]
    dynamics = teacher.params if teacher.params is not None else "randomized"
    env = PointControlEnv(env_cfg_from_dict(teacher.meta.get("env_cfg"), num_envs=256, seed=11, dynamics=dynamics))
    check_teacher_env(teacher, env)
    result = evaluate_actor(teacher, env, 256, seed=11)
    assert result["share_terminated"] <= max_terminated, result
    assert result["final_position_error_mean"] <= max_final_error, result
    assert result["return_mean"] > 500, result


ROBUST = Path(__file__).resolve().parents[1] / "fixtures" / "robust_teacher"


def test_the_robust_teacher_flies_its_scenario():
    """fixtures/robust_teacher: 90 privileged observations; 9.6 % of 1,024 held-out episodes of its scenario terminated
    (fixtures/robust_teacher/README.md). On 256 episodes ~24.5 are expected (sd ~4.7): 48 is 5 sd above."""
    (teacher,) = load_teacher_set(ROBUST)
    assert (teacher.num_obs, teacher.obs_group, teacher.params) == (90, "privileged", None)
    env = PointControlEnv(env_cfg_from_dict(teacher.meta.get("env_cfg"), num_envs=256, seed=11, dynamics="randomized"))
    assert env.cfg.scenario.delay_ms[1] > 0 and env.cfg.scenario.reference_share > 0  # its scenario, not RAPTOR's MDP
    check_teacher_env(teacher, env)
    result = evaluate_actor(teacher, env, 256, seed=11)
    assert result["share_terminated"] <= 48 / 256, result
    assert result["return_mean"] > 400, result
