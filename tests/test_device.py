"""The device-agnostic parts on the device given by ``pytest --device`` (default cpu; scripts/gpu_check.sh: cuda).

Each test checks against a reference that does not depend on the device: l2f's own next states (simulator), the
MDP's formulas (env), rl-tools' C++ chain on the CPU (student, trainer step), a central finite difference (APG),
StudentPolicy on the CPU (InferencePolicy of a device policy). On a CPU they are ordinary tests of the same
code; with ``--device cuda`` they are the CUDA path's tests.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from eyas import InferencePolicy, sim
from eyas.bridge import chain_for
from eyas.distill.apg import AnalyticPolicyGradient, APGConfig
from eyas.distill.collect import collect
from eyas.distill.dataset import EpisodeDataset
from eyas.distill.trainer import Distillation
from eyas.envs import PointControlEnv, PointControlEnvCfg, TerminationCfg
from eyas.teachers import TeacherBank

from test_distill_apg import assert_directional_derivative
from test_distill_runner import linear_teacher
from test_inference import random_student
from test_sim_fidelity import case_params, fx, pack, step_tolerance, unpack  # noqa: F401 (fx is a fixture)

pytestmark = [pytest.mark.device, pytest.mark.usefixtures("single_thread")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sim_step_matches_l2f_on_device(fx, dtype, device):
    for c, name in enumerate(fx["name"]):
        params = case_params(fx, c, dtype)
        x = torch.as_tensor(fx["step_state"][c], dtype=dtype)
        action = torch.as_tensor(fx["step_action"][c], dtype=dtype)
        state = unpack(x, fx["force"][c], fx["torque"][c]).to(device)
        out = pack(sim.step(state, action.to(device), params.to(device)))
        assert out.device.type == device.type
        expected = torch.as_tensor(fx["step_next_state"][c], dtype=torch.float64)
        tol = step_tolerance(x, expected, action, params, fx["force"][c], fx["torque"][c])
        ratio = ((out.cpu().double() - expected).abs() / tol).max().item()
        assert ratio <= 1, f"{name}: step differs from l2f by {ratio:.2f} x the round-off bound"


def test_env_rewards_terminations_and_time_outs_on_device(device):
    env = PointControlEnv(PointControlEnvCfg(num_envs=4, dynamics="crazyflie", device=str(device)))
    assert env.device.type == device.type and env.get_observations()["policy"].device.type == device.type
    env.state.position[1] = torch.tensor([0.0, 0.0, 1.5], device=device)  # beyond the 1 m position threshold
    s = env.state.clone()
    action = torch.tensor([[0.1, -0.2, 0.3, 0.0]], device=device).expand(4, 4)
    _, rewards, dones, extras = env.step(action)
    assert extras["terminated"].tolist() == [False, True, False, False] and dones.tolist() == [0, 1, 0, 0]
    expected = 1.5 - (s.position.norm(dim=-1) + 0.1 * 2 * torch.acos(1 - s.orientation[:, 3].abs())
                      + action.norm(dim=-1))
    torch.testing.assert_close(rewards[[0, 2, 3]], expected[[0, 2, 3]])
    assert rewards[1].item() == -100.0
    env = PointControlEnv(PointControlEnvCfg(num_envs=3, dynamics="randomized", device=str(device),
                                             max_episode_length=4, termination=TerminationCfg(enabled=False)))
    for _ in range(4):
        obs, _, dones, extras = env.step(torch.zeros(3, 4, device=device))
    assert dones.all() and extras["time_outs"].all() and (env.episode_length_buf == 0).all()
    torch.testing.assert_close(obs["policy"][:, :3], env.state.position)


@pytest.mark.compiled
def test_compiled_env_matches_eager_on_device(device):
    """The env step under torch.compile (inductor: C++ on the CPU, triton on CUDA) against the eager step."""
    envs = [PointControlEnv(PointControlEnvCfg(num_envs=64, dynamics="randomized", device=str(device), seed=2,
                                               compile=compiled)) for compiled in (False, True)]
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(30):
            actions = (torch.rand(64, 4, generator=g) * 2 - 1).to(device)
            (obs_e, rew_e, done_e, _), (obs_c, rew_c, done_c, _) = (env.step(actions) for env in envs)
            assert torch.equal(done_e, done_c), t
            torch.testing.assert_close(obs_c["teacher"], obs_e["teacher"], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(rew_c, rew_e, rtol=1e-4, atol=1e-4)
    assert not [w for w in caught if "torch.compile of" in str(w.message)]  # it did compile


def test_student_forward_and_gradients_match_rltools_on_device(device):
    """float64, 32 x 8 with resets: outputs and rl-tools-mode gradients against rl-tools' C++ (on the CPU)."""
    policy = random_student(torch.float64, seed=4)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(32, 8, 22, generator=g, dtype=torch.float64), 0.5 * torch.randn(32, 8, 4, generator=g,
                                                                                        dtype=torch.float64)
    reset = torch.rand(32, 8, generator=g) < 0.1
    chain = chain_for(policy, 32, 8)
    out_cpp = chain.forward(x.numpy(), reset.numpy())
    chain.backward(chain.mse_gradient(out_cpp, y.numpy()))
    grads_cpp = chain.get_gradients()
    on_device = policy.to(device)
    on_device.reset()
    out = on_device(x.to(device), reset.to(device))
    torch.nn.functional.mse_loss(out, y.to(device)).backward()
    assert out.device.type == device.type
    np.testing.assert_allclose(out.detach().cpu().numpy(), out_cpp, rtol=0, atol=1e-12)
    for name, p in on_device.rltools_parameters().items():
        grad = np.zeros(p.shape) if p.grad is None else p.grad.cpu().numpy()
        scale = max(np.abs(grads_cpp[name]).max(), 1e-30)
        assert np.abs(grad.reshape(grads_cpp[name].shape) - grads_cpp[name]).max() <= 1e-10 * scale, name


def test_trainer_steps_match_rltools_on_device(device):
    """Two `Distillation.train_step`s (forward with resets, MSE, backward, rl-tools Adam) on a dataset batch."""
    g = torch.Generator().manual_seed(6)
    lengths = torch.tensor([20, 32, 9, 32, 25, 32, 14, 32, 30, 32, 18, 32])
    obs = torch.cumsum(0.1 * torch.randn(32, len(lengths), 22, generator=g, dtype=torch.float64), 0)
    ds = EpisodeDataset(int(lengths.sum()), 22, 4, dtype=torch.float64)
    ds.add_episodes(obs, torch.tanh(obs[..., :4]), lengths)
    batch = next(ds.get_batches(8, 32, generator=torch.Generator().manual_seed(1)))
    assert batch.reset is not None and batch.reset[1:].any()
    policy = random_student(torch.float64, seed=7)
    chain = chain_for(policy, 32, 8)
    trainer = Distillation(policy, device=device, batch_size=8, sequence_length=32)
    for step in range(2):
        loss = float(trainer.train_step(batch))
        loss_cpp = chain.train_step(batch.observations.numpy(), batch.targets.numpy(), batch.reset.numpy(), 1e-4)
        assert abs(loss - loss_cpp) <= 1e-12 * max(1.0, abs(loss_cpp)), step
    params_cpp = chain.get_parameters()
    for name, p in policy.rltools_parameters().items():
        assert p.device.type == device.type
        diff = np.abs(p.detach().cpu().numpy().reshape(params_cpp[name].shape) - params_cpp[name]).max()
        assert diff <= 1e-12 * max(np.abs(params_cpp[name]).max(), 1.0), name


def test_apg_gradient_is_the_derivative_of_its_loss_on_device(device):
    """float64 APG loss on the device: autograd's directional derivative equals the central finite difference."""
    teachers = [linear_teacher(2, None), linear_teacher(1, sim.model_params("crazyflie"))]
    for t in teachers:
        t.net[0].weight.data.zero_()  # constant labels: no gradient path through the teachers
    student = random_student(torch.float64, seed=8).to(device)
    student.gradient_mode = "exact"
    apg = AnalyticPolicyGradient(student, TeacherBank(teachers, device), PointControlEnvCfg(dtype="float64"),
                                 APGConfig(envs=8, horizon=25), generator=torch.Generator().manual_seed(5),
                                 device=device)
    start = apg.generator.get_state()

    def loss():
        apg.generator.set_state(start)
        apg._next_teacher = 0
        return apg.loss()[0]

    assert loss().device.type == device.type
    assert_directional_derivative(loss, list(student.parameters()))


def test_collect_and_inference_policy_from_a_device_student(device):
    """DAgger collection with the student and teachers on the device fills a device dataset; an InferencePolicy
    made from that student acts like it (on the CPU)."""
    student = random_student(torch.float32, seed=9).to(device)
    bank = TeacherBank([linear_teacher(1, sim.model_params("crazyflie")), linear_teacher(2, None)], device)
    ds = EpisodeDataset(2 * 4 * 500, 22, 4, device=device)
    collect(bank, PointControlEnvCfg(), num_episodes=4, num_envs=8, generator=torch.Generator().manual_seed(3),
            device=device, student=student, dataset=ds)
    assert ds.num_steps > 0 and ds.observations.device.type == device.type
    fast = InferencePolicy(student, 3)
    obs = 0.5 * torch.randn(3, 22, generator=torch.Generator().manual_seed(4))
    student.reset(batch_size=3)
    for _ in range(20):
        with torch.no_grad():
            expected = student(obs.to(device)).cpu().numpy()
        assert np.abs(fast.step(obs.numpy()) - expected).max() <= 1e-6
