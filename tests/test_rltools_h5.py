"""rl-tools HDF5 import/export: bad files give one clear error; writes are atomic."""
import os

import h5py
import numpy as np
import pytest
import torch

import eyas
from eyas import RLToolsH5Error


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.h5"
    eyas.save_rltools_h5(eyas.StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)), path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        eyas.load_rltools_h5(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("this is not HDF5")
    with pytest.raises(RLToolsH5Error, match="not a readable HDF5 file"):
        eyas.load_rltools_h5(path)


def test_truncated_file(tmp_path, good_file):
    data = good_file.read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RLToolsH5Error, match="not a readable HDF5 file|cannot read dataset|missing"):
        eyas.load_rltools_h5(path)


def test_missing_dataset(good_file):
    with h5py.File(good_file, "a") as f:
        del f["actor/layers/1/weights_hidden/parameters"]
    with pytest.raises(RLToolsH5Error, match="missing dataset 'actor/layers/1/weights_hidden/parameters'"):
        eyas.load_rltools_h5(good_file)


def test_wrong_shape(good_file):
    with h5py.File(good_file, "a") as f:
        del f["actor/layers/1/biases_input/parameters"]
        f["actor/layers/1/biases_input"].create_dataset("parameters", data=np.zeros(47, np.float32))
    with pytest.raises(RLToolsH5Error, match=r"'actor/layers/1/biases_input/parameters' has shape \(47,\), "
                                             r"expected \(48,\)"):
        eyas.load_rltools_h5(good_file)


def test_wrong_layer_type(good_file):
    with h5py.File(good_file, "a") as f:
        f["actor/layers/1"].attrs["type"] = "dense"
    with pytest.raises(RLToolsH5Error, match="'actor/layers/1' has type 'dense', expected 'gru'"):
        eyas.load_rltools_h5(good_file)


def test_nan_parameters(good_file):
    with h5py.File(good_file, "a") as f:
        f["actor/layers/0/weights/parameters"][0, 0] = np.nan
    with pytest.raises(RLToolsH5Error, match="0.weights contains NaN"):
        eyas.load_rltools_h5(good_file)


def test_save_is_atomic(tmp_path, good_file, monkeypatch):
    """A failing write leaves the previous file untouched and no temp file behind."""
    before = good_file.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(eyas.rltools_h5, "_write_tensor", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        eyas.save_rltools_h5(eyas.StudentPolicy(22, 4), good_file)
    assert good_file.read_bytes() == before
    assert os.listdir(good_file.parent) == [good_file.name]


def test_policy_rejects_bad_observations():
    policy = eyas.StudentPolicy(22, 4)
    with pytest.raises(ValueError, match="expects 22 observation features .* got 26"):
        policy(torch.zeros(8, 26))
    with pytest.raises(ValueError, match="NaN or inf"):
        policy(torch.full((8, 22), float("nan")))
    with pytest.raises(TypeError, match="float64 but the policy is torch.float32"):
        policy(torch.zeros(8, 22, dtype=torch.float64))
    with pytest.raises(ValueError, match="reset must be a bool tensor of shape"):
        policy(torch.zeros(5, 8, 22), reset=torch.zeros(5, 7, dtype=torch.bool))
