"""`eyas evaluate` and its scorecard (`eyas.scorecard`): every policy flies the same episodes, the hold-out platforms
are what they say, bad input gets one line."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from eyas import sim
from eyas.model import StudentPolicy
from eyas.scorecard import cli, report
from eyas.scorecard.cases import CASE_NAMES, default_cases
from eyas.scorecard.platforms import HOLDOUT, platform_params
from eyas.scorecard.run import Scorecard

pytestmark = pytest.mark.usefixtures("single_thread")
STUDENT = "fixtures/students/main_job/student.h5"


class Recorder(torch.nn.Module):
    """A policy that records what its env hands it: the episodes' starts and the observation noise of each step."""

    def __init__(self, policy, env):
        super().__init__()
        self.policy, self.env, self.noise, self.starts = policy, env, [], None
        self.num_obs, self.num_actions = policy.num_obs, policy.num_actions

    def reset(self, batch_size=None, device=None, dones=None):
        self.policy.reset(batch_size=batch_size, device=device, dones=dones)

    def forward(self, obs, reset=None):
        if self.starts is None:
            s = self.env.env_state()
            self.starts = [t.clone() for t in (s.X, s.P, s.T, s.F)]
        return self.policy(obs, reset=reset)


def test_every_policy_flies_the_same_episodes_in_every_case(monkeypatch):
    """Two different policies (RAPTOR and a random student, which crashes) meet the same dynamics, initial states,
    tasks (references, delays, winds, gusts, weak motors) and observation noise, step by step, in every case."""
    cases = {name: dataclasses.replace(case, max_episode_length=25) for name, case in default_cases().items()}
    card = Scorecard(cases, episodes=6, seed=3, compile=False)
    policies = [cli.load_policy(str(__import__("eyas").raptor_checkpoint_path())),
                StudentPolicy(22, 4, generator=torch.Generator().manual_seed(1))]
    for case in cases.values():
        for group in case.groups:
            env, _ = card.env(case, group)
            seen = []
            for policy in policies:
                recorder = Recorder(policy, env)
                noise = []
                original = env.observation_noise
                monkeypatch.setattr(env, "observation_noise", lambda: noise.append(original()) or noise[-1])
                card.fly(recorder, case, group)
                monkeypatch.undo()
                seen.append((recorder.starts, noise))
            (starts_a, noise_a), (starts_b, noise_b) = seen
            for a, b in zip(starts_a, starts_b):
                assert torch.equal(a, b), case.label(group)
            for a, b in zip(noise_a, noise_b):
                assert (a is None and b is None) or torch.equal(a, b), case.label(group)
            assert len(noise_a) >= 2


def test_cases_are_the_protocol():
    cases = default_cases()
    assert set(CASE_NAMES) >= {"hover", "holdout", "track_10s", "track_5s", "delay_0ms", "delay_5ms", "delay_10ms",
                               "delay_20ms", "wind", "gust", "weak_motor", "noise_1x", "noise_2x", "noise_4x"}
    track = cases["track_5s"]
    scenario = track.groups[0].scenario
    assert (scenario.reference_amplitude_min, scenario.reference_frequency, scenario.reference_duration,
            scenario.reference_ramp) == ((0.5, 1.0, 0.0), (2.0, 1.0, 1.0), (5.0, 5.0), 3.0)
    assert (track.max_episode_length, track.rms_from, track.headline) == (800, 300, "rms")
    assert {g.label for g in cases["hover"].groups} == {"randomized", *sim.MODEL_NAMES}
    assert [g.scenario.weak_motor_rotor for g in cases["weak_motor"].groups][:4] == [0, 1, 2, 3]


@pytest.mark.parametrize("platform", HOLDOUT, ids=lambda p: p.name)
def test_holdout_platforms_are_what_they_say(platform, tmp_path):
    params = platform_params(platform, torch.float64)
    params.validate()
    torch.testing.assert_close(sim.thrust_to_weight_ratio(params)[0] * torch.cos(
        torch.tensor(platform.tilt_deg * torch.pi / 180, dtype=torch.float64)),
        torch.tensor(platform.thrust_to_weight, dtype=torch.float64))
    torch.testing.assert_close(params.dynamics.mass, torch.tensor([platform.mass], dtype=torch.float64))
    for name in sim.MODEL_NAMES:
        assert not torch.allclose(params.dynamics.mass, sim.model_params(name, torch.float64).dynamics.mass)
    path = tmp_path / f"{platform.name}.json"
    path.write_text(params.to_l2f_json())
    from eyas.scorecard.run import dynamics_file
    torch.testing.assert_close(dynamics_file(str(path), torch.float64).dynamics.J, params.dynamics.J)
    state = sim.State.hover(params)  # the hover command holds it: thrust balances weight
    after = sim.step(state, torch.full((1, 4), 2 * float(params.dynamics.hovering_throttle_relative) - 1,
                                       dtype=torch.float64), params)
    assert after.linear_velocity.abs().max() < 1e-3


def test_evaluate_writes_a_table_json_and_plots(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EYAS_COMPILE", "0")  # three episodes per group: the eager step is quicker than a compile
    from eyas.cli import main

    rc = main(["evaluate", STUDENT, "--cases", "wind", "--episodes", "3", "--json", str(tmp_path / "c.json"),
                   "--plot", str(tmp_path / "plots"), "--num_threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "wind/crazyflie" in out and "raptor" in out
    card = json.loads((tmp_path / "c.json").read_text())
    assert set(card["results"]) == {"wind"} and card["episodes_per_group"] == 3
    entry = card["results"]["wind"]["x500"]["student"]
    assert entry["episodes"] == 3 and len(entry["per_episode"]["position_error"]) == 3
    assert (tmp_path / "plots" / "scorecard.png").is_file()


def test_tracking_flights_are_recorded_and_plotted(tmp_path):
    case = dataclasses.replace(default_cases()["track_5s"], max_episode_length=60, rms_from=30)
    card = Scorecard({case.name: case}, episodes=2, compile=False)
    result = card.run({"raptor": cli.load_policy(str(__import__("eyas").raptor_checkpoint_path()))}, record=1)
    flight = result["flights"]["track_5s/randomized"]["raptor"][0]
    assert len(flight["reference"]) == 60 and abs(flight["reference"][-1][1]) > 0  # the reference moved
    paths = report.plot_tracking(result, tmp_path)
    assert {p.name for p in paths} == {"track_5s_randomized.png", "track_5s_crazyflie.png"}


@pytest.mark.parametrize("args, message", [
    (["--cases", "somersault"], "invalid choice: 'somersault'"),
    (["--episodes", "0"], "--episodes: must be an integer >= 1"),
    (["--dynamics", "missing.json"], "missing.json: not l2f dynamics parameters"),
    (["README.md"], "README.md: not a student policy"),
    (["nothing.h5"], "nothing.h5: no such file"),
    (["--device", "cuda:7"], "--device"),
])
def test_bad_input_gets_one_line_and_exit_2(args, message, capsys, tmp_path):
    from eyas.cli import main

    try:
        rc = main(["evaluate", *args, "--json", str(tmp_path / "out.json")])
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out.json").exists()
