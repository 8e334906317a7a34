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


def _loads_or_refuses(load, path, error) -> None:
    try:
        load(path)
    except error:
        pass


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
    _loads_or_refuses(eyas.load_rltools_h5, path, RLToolsH5Error)


@FUZZ
@given(data=st.data())
def test_mutated_hdf5_structure(tmp_path, student_file, data):
    path = tmp_path / "mutated.h5"
    shutil.copy(student_file, path)
    name = data.draw(st.sampled_from(_datasets(path)), label="dataset")
    kind = data.draw(st.sampled_from(["shape", "dtype", "nonfinite", "delete", "attribute"]), label="kind")
    with h5py.File(path, "r+") as f:
        old = f[name][()]
        if kind == "attribute":
            group = f[name].parent.parent if name.endswith("parameters") else f[name].parent
            key = data.draw(st.sampled_from(["type", "activation_function"]))
            group.attrs[key] = data.draw(st.sampled_from(["gru", "dense", "", "RELU", "TANH", "mlp"]))
            return _loads_or_refuses(eyas.load_rltools_h5, path, RLToolsH5Error)
        del f[name]
        if kind == "shape":
            shape = data.draw(st.lists(st.integers(0, 50), min_size=0, max_size=3).map(tuple), label="shape")
            f[name] = np.zeros(shape, np.float32)
        elif kind == "dtype":
            f[name] = old.astype(data.draw(st.sampled_from([np.int32, np.int8, np.float16, np.float64])))
        elif kind == "nonfinite" and old.size:
            bad = old.astype(np.float32).copy()
            bad.flat[data.draw(st.integers(0, bad.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            f[name] = bad
    _loads_or_refuses(eyas.load_rltools_h5, path, RLToolsH5Error)


@FUZZ
@given(data=st.data())
def test_mutated_teacher_checkpoint(tmp_path, data):
    ckpt = torch.load(TEACHER, weights_only=True)
    actor = ckpt["actor_state_dict"]
    key = data.draw(st.sampled_from(sorted(actor)), label="tensor")
    kind = data.draw(st.sampled_from(["shape", "dtype", "nonfinite", "delete", "bytes", "not a dict"]), label="kind")
    if kind == "shape":
        actor[key] = torch.zeros(data.draw(st.lists(st.integers(0, 80), min_size=0, max_size=3)))
    elif kind == "dtype":
        actor[key] = actor[key].to(data.draw(st.sampled_from([torch.int32, torch.float16, torch.bool])))
    elif kind == "nonfinite" and actor[key].numel():
        actor[key] = actor[key].to(torch.float32 if actor[key].is_floating_point() else torch.float64).clone()
        actor[key].view(-1)[data.draw(st.integers(0, actor[key].numel() - 1))] = float("nan")
    elif kind == "delete":
        del actor[key]
    elif kind == "not a dict":
        ckpt = [ckpt]
    path = tmp_path / "model_1.pt"
    torch.save(ckpt, path)
    if kind == "bytes":
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 16))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
    _loads_or_refuses(load_teacher, path, TeacherError)
