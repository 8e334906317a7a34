"""The compiled env step (`eyas.envs.step.env_step` under torch.compile) flies like the eager one, and falls back."""
from __future__ import annotations

import pytest
import torch

from eyas.envs import PointControlEnv, PointControlEnvCfg
from eyas import compilation
from eyas.envs import step as env_step_module

pytestmark = pytest.mark.usefixtures("single_thread")

# float32 round-off of two operation orders (inductor fuses and reorders), grown over <= 200 steps of flight whose
# episodes end within tens of steps under random actions: measured <= 2e-5 on the observations. A row restarted
# from the wrong pool entry or with the wrong parameters differs by O(0.1 - 1).
OBS_TOL = 1e-3


@pytest.mark.compiled
@pytest.mark.parametrize("dynamics", ["randomized", "crazyflie"])
def test_compiled_step_flies_like_the_eager_one(dynamics):
    envs = [PointControlEnv(PointControlEnvCfg(num_envs=48, dynamics=dynamics, seed=4, compile=c)) for c in (False, True)]
    g = torch.Generator().manual_seed(5)
    finished = 0
    for step in range(200):
        actions = 0.6 * (torch.rand(48, 4, generator=g) * 2 - 1)
        (obs_e, rew_e, done_e, ext_e), (obs_c, rew_c, done_c, ext_c) = (env.step(actions) for env in envs)
        assert torch.equal(done_e, done_c), step
        assert torch.equal(ext_e["terminated"], ext_c["terminated"]), step
        for group in ("policy", "teacher"):
            assert (obs_e[group] - obs_c[group]).abs().max() <= OBS_TOL, (step, group)
        assert torch.allclose(rew_e, rew_c, rtol=1e-4, atol=1e-3), step
        assert ("log" in ext_e) == ("log" in ext_c)
        if "log" in ext_e:
            for key, value in ext_e["log"].items():
                assert torch.allclose(value, ext_c["log"][key], rtol=1e-4, atol=1e-3), (step, key)
        finished += int(done_e.sum())
    assert finished > 48  # resets were exercised, most rows more than once
    assert torch.equal(envs[0].episode_length_buf, envs[1].episode_length_buf)
    for a, b in zip(envs[0].params.leaves(), envs[1].params.leaves()):
        assert torch.equal(a, b)  # the parameters come from the same draws, copied not computed


@pytest.mark.compiled
def test_one_compiled_step_serves_every_num_envs():
    """Only the batch is symbolic in the compiled step (`eyas.compilation.mark_batch_dims`): a second env size reuses the
    first one's graph, without a new trace."""
    from torch._dynamo.utils import counters

    PointControlEnv(PointControlEnvCfg(num_envs=48, seed=0, compile=True)).step(torch.zeros(48, 4))
    compiled = counters["frames"]["ok"]
    for n in (20, 300):
        env = PointControlEnv(PointControlEnvCfg(num_envs=n, seed=0, compile=True))
        env.step(torch.zeros(n, 4))
        env.step(torch.zeros(n, 4))
    assert counters["frames"]["ok"] == compiled


def test_a_failing_compile_falls_back_to_eager(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(compilation, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken)
    env = PointControlEnv(PointControlEnvCfg(num_envs=8, seed=0, compile=True))
    eager = PointControlEnv(PointControlEnvCfg(num_envs=8, seed=0, compile=False))
    actions = torch.zeros(8, 4)
    with pytest.warns(RuntimeWarning, match="running it eager"):
        obs, *_ = env.step(actions)
    assert torch.equal(obs["policy"], eager.step(actions)[0]["policy"])


def test_the_compile_setting(monkeypatch):
    monkeypatch.setenv("EYAS_COMPILE", "0")
    assert compilation.compile_enabled(None) is False and compilation.compile_enabled(True) is True
    monkeypatch.setenv("EYAS_COMPILE", "1")
    assert compilation.compile_enabled(None) is True and compilation.compile_enabled(False) is False
    monkeypatch.delenv("EYAS_COMPILE")
    assert compilation.compile_enabled(None) is True
    assert PointControlEnv(PointControlEnvCfg(num_envs=2, compile=False))._step is env_step_module.env_step
