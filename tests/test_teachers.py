"""Teacher loaders: rsl_rl checkpoints written by rsl_rl itself and rl-tools-layout HDF5 actors act exactly like
their source networks; broken inputs fail with one clear `TeacherError`."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from eyas.teachers import Teacher, TeacherError, check_teacher_env, load_teacher, load_teacher_set

NUM_TEACHER_OBS = 30
NUM_POLICY_OBS = 22


# ---------------------------------------------------------------- rsl_rl


def _dummy_vec_env(num_envs: int = 8):
    from rsl_rl.env import VecEnv

    class DummyEnv(VecEnv):
        """Random observations; just enough of rsl_rl's VecEnv for one PPO iteration."""

        def __init__(self) -> None:
            self.num_envs, self.num_actions, self.max_episode_length = num_envs, 4, 20
            self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
            self.device, self.cfg = "cpu", {}
            self.gen = torch.Generator().manual_seed(0)

        def _obs(self) -> TensorDict:
            return TensorDict(
                {
                    "policy": torch.randn(self.num_envs, NUM_POLICY_OBS, generator=self.gen),
                    "teacher": 3.0 * torch.randn(self.num_envs, NUM_TEACHER_OBS, generator=self.gen) + 1.0,
                },
                batch_size=[self.num_envs],
            )

        def get_observations(self) -> TensorDict:
            return self._obs()

        def step(self, actions):
            self.episode_length_buf += 1
            dones = (self.episode_length_buf >= self.max_episode_length).long()
            self.episode_length_buf[dones.bool()] = 0
            rewards = -actions.square().sum(-1)
            return self._obs(), rewards, dones, {"time_outs": dones.clone()}

    return DummyEnv()


def _train_one_iteration(log_dir, activation: str):
    from rsl_rl.runners import OnPolicyRunner

    actor_cfg = {
        "class_name": "MLPModel",
        "hidden_dims": [32, 16],
        "activation": activation,
        "obs_normalization": True,
        "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 0.5, "std_type": "log"},
    }
    cfg = {
        "num_steps_per_env": 4,
        "save_interval": 100,
        "obs_groups": {"actor": ["teacher"], "critic": ["teacher"]},
        "algorithm": {"class_name": "PPO", "num_learning_epochs": 1, "num_mini_batches": 1, "learning_rate": 1e-2},
        "actor": actor_cfg,
        "critic": {"class_name": "MLPModel", "hidden_dims": [16], "activation": "elu", "obs_normalization": True},
    }
    torch.manual_seed(0)
    runner = OnPolicyRunner(_dummy_vec_env(), cfg, log_dir=str(log_dir), device="cpu")
    runner.learn(1)
    return runner, actor_cfg


@pytest.mark.parametrize("activation, with_sidecar", [("elu", False), ("tanh", True)])
def test_rsl_rl_checkpoint_written_by_rsl_rl_acts_like_its_actor(tmp_path, activation, with_sidecar):
    runner, actor_cfg = _train_one_iteration(tmp_path, activation)
    assert (tmp_path / "model_0.pt").is_file()
    if with_sidecar:  # rsl_rl does not store the activation: eyas writes it to teacher.json
        (tmp_path / "teacher.json").write_text(json.dumps({"actor": actor_cfg, "obs_group": "teacher"}))
    policy = runner.get_inference_policy()
    assert policy.obs_normalizer.count > 0  # the normaliser was updated, so it matters for the comparison

    teacher = load_teacher(tmp_path)  # directory -> latest model_*.pt
    assert isinstance(teacher, Teacher)
    assert (teacher.num_obs, teacher.num_actions, teacher.obs_group) == (NUM_TEACHER_OBS, 4, "teacher")
    assert teacher.meta["activation"] == activation

    obs = _dummy_vec_env(256).get_observations()
    with torch.no_grad():
        expected = policy(obs).clamp(-1, 1)  # deterministic (mean) action, clipped like the env does
    torch.testing.assert_close(teacher.act(obs["teacher"]), expected, rtol=1e-5, atol=1e-6)
    # the same file loaded directly, with the wrong activation, gives different actions (the check can fail)
    if activation != "elu":
        wrong = load_teacher(tmp_path / "model_0.pt", activation="elu")
        assert not torch.allclose(wrong.act(obs["teacher"]), expected, atol=1e-3)


@pytest.mark.parametrize("normaliser_location", ["inside", "beside", "none"])
def test_legacy_model_state_dict_checkpoint(tmp_path, normaliser_location):
    """rsl_rl <= 3 layout: ActorCritic `model_state_dict` (actor.<i>.*, std) and optional normaliser."""
    torch.manual_seed(1)
    actor = torch.nn.Sequential(
        torch.nn.Linear(NUM_TEACHER_OBS, 24), torch.nn.ELU(), torch.nn.Linear(24, 24), torch.nn.ELU(), torch.nn.Linear(24, 4)
    )
    critic = torch.nn.Sequential(torch.nn.Linear(NUM_TEACHER_OBS, 8), torch.nn.ELU(), torch.nn.Linear(8, 1))
    mean, std = torch.randn(NUM_TEACHER_OBS), torch.rand(NUM_TEACHER_OBS) + 0.5
    norm = {"_mean": mean[None], "_var": std[None] ** 2, "_std": std[None], "count": torch.tensor(1000)}
    sd = {f"actor.{k}": v for k, v in actor.state_dict().items()}
    sd.update({f"critic.{k}": v for k, v in critic.state_dict().items()})
    sd["std"] = torch.ones(4)
    ckpt = {"model_state_dict": sd, "optimizer_state_dict": {}, "iter": 7, "infos": None}
    if normaliser_location == "inside":
        sd.update({f"actor_obs_normalizer.{k}": v for k, v in norm.items()})
    elif normaliser_location == "beside":
        ckpt["obs_norm_state_dict"] = norm
    torch.save(ckpt, tmp_path / "model_7.pt")

    teacher = load_teacher(tmp_path / "model_7.pt")
    x = torch.randn(64, NUM_TEACHER_OBS) * 2
    with torch.no_grad():
        xin = x if normaliser_location == "none" else (x - mean) / (std + 1e-2)
        expected = actor(xin).clamp(-1, 1)
    torch.testing.assert_close(teacher.act(x), expected, rtol=1e-5, atol=1e-6)
    assert teacher.meta["iter"] == 7 and teacher.meta["layout"] == "model_state_dict"


def test_rsl_rl_checkpoint_without_sidecar_takes_its_action_count_from_the_mean_head(tmp_path):
    """An Isaac Lab run's model_*.pt (no eyas sidecar) for a 12-action task: 12 actions, not the quadrotor's 4."""
    torch.manual_seed(2)
    actor = torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.ELU(), torch.nn.Linear(32, 12))
    sd = {f"actor.{k}": v for k, v in actor.state_dict().items()} | {"std": torch.ones(12)}
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}, "iter": 3, "infos": None}, tmp_path / "model_3.pt")
    teacher = load_teacher(tmp_path / "model_3.pt")
    assert (teacher.num_obs, teacher.num_actions) == (48, 12)
    x = torch.randn(5, 48)
    with torch.no_grad():
        torch.testing.assert_close(teacher.act(x), actor(x).clamp(-1, 1))


# ---------------------------------------------------------------- rl-tools HDF5


def _matrix(group, name: str, value: np.ndarray) -> None:
    """rl-tools `matrix` dataset at group/name/parameters (2-D, with its string attributes)."""
    value = np.atleast_2d(np.asarray(value, dtype=np.float32))
    ds = group.create_group(name).create_dataset("parameters", data=value)
    ds.attrs.update({"type": "matrix", "rows": str(value.shape[0]), "cols": str(value.shape[1])})


def _dense(group, weights: np.ndarray, biases: np.ndarray, activation: str) -> None:
    _matrix(group, "weights", weights)
    _matrix(group, "biases", biases[None])
    group.attrs.update({"type": "dense", "activation_function": activation})


def _write_sac_actor(path, num_obs: int, num_layers_attr, seed: int = 0, example=None) -> dict:
    """An rl-tools SAC actor: sequential[mlp(in -> 32 -> 32 -> 2*4), sample_and_squash] with rl-tools attributes."""
    rng = np.random.default_rng(seed)
    shapes = [(32, num_obs), (32, 32), (8, 32)]
    acts = ["RELU", "FAST_TANH", "IDENTITY"]
    names = ["input_layer", "hidden_layer_0", "output_layer"]
    with h5py.File(path, "w") as f:
        actor = f.create_group("actor")
        actor.attrs.update({"type": "sequential", "checkpoint_name": "test", "meta": json.dumps({"environment": {"name": "l2f"}})})
        layers = actor.create_group("layers")
        mlp = layers.create_group("0")
        mlp.attrs.update({"type": "mlp", "num_layers": num_layers_attr})
        for name, (o, i), act in zip(names, shapes, acts):
            _dense(mlp.create_group(name), rng.normal(0, 1 / np.sqrt(i), (o, i)), rng.normal(0, 0.3, o), act)
        layers.create_group("1").attrs["type"] = "sample_and_squash"
        if example is not None:
            ex = f.create_group("example")
            ex.create_dataset("input", data=example[0].astype(np.float32))
            ex.create_dataset("output", data=example[1].astype(np.float32))
    return {"path": path}


def test_rltools_actor_matches_foundation_policy_reader(tmp_path):
    import foundation_policy as fp
    num_obs = 26
    x = np.random.default_rng(5).normal(0, 2, (7, 3, num_obs)).astype(np.float32)  # [T, B, obs] like rl-tools examples
    # foundation_policy's reader subtracts from `num_layers`, so give it an int; rl-tools itself writes a string
    _write_sac_actor(tmp_path / "fp.h5", num_obs, num_layers_attr=3)
    with h5py.File(tmp_path / "fp.h5", "r") as f:
        reference = fp.layer_dispatch(f["actor"])
    y = reference.evaluate(x)
    assert y.shape == (7, 3, 4) and np.abs(y).max() < 1

    _write_sac_actor(tmp_path / "actor.h5", num_obs, num_layers_attr="3", example=(x, y))
    teacher = load_teacher(tmp_path / "actor.h5")
    assert (teacher.num_obs, teacher.num_actions, teacher.params) == (num_obs, 4, None)
    assert teacher.meta["format"] == "rl_tools" and teacher.meta["example_max_abs_diff"] < 1e-5
    out = teacher.act(torch.from_numpy(x.reshape(-1, num_obs))).numpy().reshape(7, 3, 4)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)


def test_rltools_example_mismatch_is_reported(tmp_path):
    x = np.zeros((2, 1, 26), np.float32)
    _write_sac_actor(tmp_path / "bad.h5", 26, "3", example=(x, np.full((2, 1, 4), 0.5, np.float32)))
    with pytest.raises(TeacherError, match="example output"):
        load_teacher(tmp_path / "bad.h5")


def test_recurrent_rltools_actor_is_refused():
    from eyas import raptor_checkpoint_path

    with pytest.raises(TeacherError, match="GRU"):
        load_teacher(raptor_checkpoint_path())


# ---------------------------------------------------------------- sets and errors


def test_teacher_set_from_directory_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        _write_sac_actor(tmp_path / f"{i}.h5", 26, "3", seed=i)
    (tmp_path / "notes.txt").write_text("not a teacher")
    teachers = load_teacher_set(tmp_path)
    assert [t.name for t in teachers] == ["1", "2", "10"]
    assert [t.name for t in load_teacher_set([tmp_path / "2.h5", tmp_path / "1.h5"])] == ["2", "1"]
    assert len(load_teacher_set(tmp_path / "10.h5")) == 1


def test_clear_errors(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher(tmp_path / "missing.pt")
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher_set(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="no teachers"):
        load_teacher_set(tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="cannot read rsl_rl checkpoint"):
        load_teacher(tmp_path / "junk.pt")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(TeacherError, match="cannot read rl-tools HDF5"):
        load_teacher(tmp_path / "junk.h5")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(TeacherError, match="not an rsl_rl PPO checkpoint"):
        load_teacher(tmp_path / "other.pt")
    (tmp_path / "weights.onnx").write_bytes(b"")
    with pytest.raises(TeacherError, match="unknown teacher file type"):
        load_teacher(tmp_path / "weights.onnx")


def test_width_mismatch_names_both_widths(tmp_path):
    _write_sac_actor(tmp_path / "a.h5", 26, "3")
    teacher = load_teacher(tmp_path / "a.h5")
    with pytest.raises(TeacherError, match=r"expects 26 .*got 22"):
        teacher.act(torch.zeros(5, 22))

    class Env:
        num_actions = 4

        def get_observations(self):
            return TensorDict({"policy": torch.zeros(3, 22), "teacher": torch.zeros(3, 29)}, batch_size=[3])

    with pytest.raises(TeacherError, match=r"expects 26 .*'teacher'.* 29 wide"):
        check_teacher_env(teacher, Env())
    teacher.obs_group = "policy"
    with pytest.raises(TeacherError, match=r"expects 26 .*'policy'.* 22 wide"):
        check_teacher_env(teacher, Env())
