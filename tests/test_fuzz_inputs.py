"""Fuzzing: mutated rl-tools HDF5 students and teacher checkpoints (bytes, shapes, dtypes, attributes, NaN/inf)
either load or raise the documented error type (`RLToolsH5Error`, `TeacherError`); nothing else escapes."""
import shutil

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eyas
from eyas import RLToolsH5Error
from eyas.teachers import TeacherError, load_teacher

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEACHER = "fixtures/teachers/crazyflie/model_324.pt"


@pytest.fixture(scope="module")
def student_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "student.h5"
    eyas.save_rltools_h5(eyas.StudentPolicy(22, 4), path)
    return path


def _datasets(path) -> list[str]:
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def _loads_or_refuses(load, path, error, *, refuse: bool, sound) -> None:
    """``load(path)`` raises ``error`` (it must, when ``refuse``), or what it loads passes ``sound``: a clean load
    passes only with a usable result."""
    try:
        loaded = load(path)
    except error:
        return
    assert not refuse, f"{path.name}: the mutation was loaded instead of refused"
    sound(loaded)


def _sound_student(policy) -> None:
    """Finite parameters, rl-tools' student widths, and finite actions of the right shape."""
    assert policy.num_actions == 4 and policy.hidden_dim == 16
    assert all(bool(torch.isfinite(t).all()) for t in policy.state_dict().values())
    with torch.no_grad():
        actions = policy(torch.randn(3, 2, policy.num_obs))
    assert actions.shape == (3, 2, 4) and bool(torch.isfinite(actions).all())


def _sound_teacher(expected=None):
    """A check of a loaded teacher: finite parameters and actions (equal to ``expected`` where given)."""
    obs = torch.randn(8, 74, generator=torch.Generator().manual_seed(0))

    def check(teacher) -> None:
        assert all(bool(torch.isfinite(t).all()) for t in teacher.net.state_dict().values() if t.is_floating_point())
        actions = teacher.act(obs)
        assert actions.shape == (8, 4) and bool(torch.isfinite(actions).all())
        if expected is not None:
            assert torch.equal(actions, expected(obs))
    return check


@FUZZ
@given(data=st.data())
def test_mutated_hdf5_bytes(tmp_path, student_file, data):
    raw = bytearray(student_file.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    for _ in range(data.draw(st.integers(1, 16), label="flips")):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "mutated.h5"
    path.write_bytes(bytes(raw))
    _loads_or_refuses(eyas.load_rltools_h5, path, RLToolsH5Error, refuse=False, sound=_sound_student)


@FUZZ
@given(data=st.data())
def test_mutated_hdf5_structure(tmp_path, student_file, data):
    """A parameter of another shape, dtype or with NaN/inf, a missing one, or a changed layer type or activation is
    refused; the one legitimate reshape (the first layer's input width: another student's observations) and any
    change to the example (not part of the network) load as a usable student."""
    path = tmp_path / "mutated.h5"
    shutil.copy(student_file, path)
    name = data.draw(st.sampled_from(_datasets(path)), label="dataset")
    kind = data.draw(st.sampled_from(["shape", "dtype", "nonfinite", "delete", "attribute"]), label="kind")
    parameter = name.startswith("actor/")
    with h5py.File(path, "r+") as f:
        old = f[name][()]
        if kind == "attribute":
            group = f[name].parent.parent if name.endswith("parameters") else f[name].parent
            key = data.draw(st.sampled_from(["type", "activation_function"]))
            value = data.draw(st.sampled_from(["gru", "dense", "", "RELU", "TANH", "mlp"]))
            changed = str(group.attrs.get(key)) != value and (key == "type" or "activation_function" in group.attrs)
            group.attrs[key] = value
            refuse = changed and parameter
        else:
            del f[name]
            if kind == "shape":
                shape = data.draw(st.lists(st.integers(0, 50), min_size=0, max_size=3).map(tuple), label="shape")
                f[name] = np.zeros(shape, np.float32)
                other_width = name == "actor/layers/0/weights/parameters" and len(shape) == 2 and shape[0] == 16
                refuse = parameter and shape != old.shape and not other_width
            elif kind == "dtype":
                dtype = data.draw(st.sampled_from([np.int32, np.int8, np.float16, np.float64]))
                f[name] = old.astype(dtype)
                refuse = parameter and not np.issubdtype(dtype, np.floating)
            elif kind == "nonfinite":
                bad = old.astype(np.float32).copy()
                bad.flat[data.draw(st.integers(0, bad.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
                f[name] = bad
                refuse = parameter
            else:
                refuse = parameter
    _loads_or_refuses(eyas.load_rltools_h5, path, RLToolsH5Error, refuse=refuse, sound=_sound_student)


UNUSED = ("obs_normalizer._var", "obs_normalizer.count")  # in rsl_rl's state dict, not in the deterministic actor
STD = "distribution."  # the action std: checked, but no part of the deterministic actor


@FUZZ
@given(data=st.data())
def test_mutated_teacher_checkpoint(tmp_path, data):
    """Any NaN/inf tensor, a used tensor of another size or of integer dtype, a missing layer, normaliser half or
    std, flipped bytes that break the file, or not a dict are refused; changes to tensors the actor does not use load
    a teacher acting exactly as the original."""
    ckpt = torch.load(TEACHER, weights_only=True)
    original = load_teacher(TEACHER)
    actor = ckpt["actor_state_dict"]
    key = data.draw(st.sampled_from(sorted(actor)), label="tensor")
    kind = data.draw(st.sampled_from(["shape", "dtype", "nonfinite", "delete", "bytes", "not a dict"]), label="kind")
    refuse, same = kind in ("nonfinite", "not a dict"), key in UNUSED
    if kind == "shape":
        actor[key] = torch.zeros(data.draw(st.lists(st.integers(0, 80), min_size=0, max_size=3)))
        refuse = not same and actor[key].numel() != ckpt["actor_state_dict"][key].numel()
    elif kind == "dtype":
        actor[key] = actor[key].to(data.draw(st.sampled_from([torch.int32, torch.float16, torch.bool])))
        refuse, same = not same and not actor[key].is_floating_point(), same or key.startswith(STD)
    elif kind == "nonfinite":
        actor[key] = actor[key].to(torch.float32 if actor[key].is_floating_point() else torch.float64).clone()
        actor[key].view(-1)[data.draw(st.integers(0, actor[key].numel() - 1))] = data.draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    elif kind == "delete":
        del actor[key]
        refuse, same = not same and not key.startswith(STD), same or key.startswith(STD)
    elif kind == "not a dict":
        ckpt = [ckpt]
    path = tmp_path / "model_1.pt"
    torch.save(ckpt, path)
    if kind == "bytes":
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 16))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
    _loads_or_refuses(load_teacher, path, TeacherError, refuse=refuse,
                      sound=_sound_teacher(original.act if same and kind != "bytes" else None))
