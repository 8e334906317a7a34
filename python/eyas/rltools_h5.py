"""rl-tools HDF5 checkpoints of the student policy (the layout rl-tools' `save` writes).

Layout::

    actor/                        attrs: type="sequential", checkpoint_name, meta (JSON string)
      layers/0/                   attrs: type="dense", activation_function="RELU"
        weights/parameters        (16, obs)  attrs: type="matrix", rows, cols
        biases/parameters         (1, 16)
      layers/1/                   attrs: type="gru"
        weights_input/parameters  (48, 16)   attrs: type="tensor", num_dims, dim_0, ...
        biases_input/parameters   (48,)
        weights_hidden/parameters (48, 16)
        biases_hidden/parameters  (48,)
        initial_hidden_state/parameters (16,)
      layers/2/                   attrs: type="dense", activation_function="IDENTITY"
        weights/parameters        (act, 16)
        biases/parameters         (1, act)
    example/input  (seq, batch, obs), example/output (seq, batch, act)   [optional; foundation_policy needs them]
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from eyas.errors import EyasError
from eyas.io import atomic_with
from eyas.model import StudentPolicy

DENSE_ACTIVATIONS = {0: "RELU", 2: "IDENTITY"}
# RAPTOR's observation spec as its `meta` writes it: position (3), rotation matrix (9), linear velocity (3), body
# angular velocity (3), previous action (4) = l2f's policy observation
RAPTOR_OBSERVATION = "Position.OrientationRotationMatrix.LinearVelocity.AngularVelocityDelayed(0).ActionHistory(1)"


class RLToolsH5Error(EyasError, ValueError):
    """A file that is not a readable rl-tools student checkpoint."""


def _dataset(f: h5py.File, path: str, expected_shape: tuple | None = None, path_name: str = "") -> np.ndarray:
    if path not in f:
        raise RLToolsH5Error(f"{path_name}: missing dataset '{path}'")
    obj = f[path]
    if not isinstance(obj, h5py.Dataset):
        raise RLToolsH5Error(f"{path_name}: '{path}' is not a dataset")
    try:
        data = obj[()]
    except Exception as e:  # truncated files fail here rather than at open
        raise RLToolsH5Error(f"{path_name}: cannot read dataset '{path}': {e}") from e
    if expected_shape is not None and tuple(data.shape) != tuple(expected_shape):
        raise RLToolsH5Error(
            f"{path_name}: dataset '{path}' has shape {tuple(data.shape)}, expected {tuple(expected_shape)}"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise RLToolsH5Error(f"{path_name}: dataset '{path}' has dtype {data.dtype}, expected floating point")
    return data


def _attr(obj, name: str) -> str | None:
    v = obj.attrs.get(name)
    return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))


def raptor_checkpoint_path() -> Path:
    """The released RAPTOR student (`checkpoint.h5` of the foundation-policy package; ImportError without it)."""
    import importlib.resources

    import foundation_policy

    return Path(str(importlib.resources.files(foundation_policy) / "blob" / "checkpoint.h5"))


def load_rltools_h5(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None, **policy_kwargs) -> StudentPolicy:
    """Load an rl-tools ``sequential`` Dense-GRU-Dense actor (e.g. RAPTOR's checkpoint.h5) as a StudentPolicy.

    Raises ``FileNotFoundError`` for a missing file and ``RLToolsH5Error`` (naming the dataset and the
    shapes) for anything that is not this architecture in rl-tools' layout."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    name = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise RLToolsH5Error(f"{name}: not a readable HDF5 file ({e})") from e
    with f:
        try:
            params, num_obs, num_actions, hidden, meta_text, checkpoint_name = _read_actor(f, name)
        except (RuntimeError, KeyError, OSError, TypeError) as e:  # h5py on a corrupt file's inner structure
            raise RLToolsH5Error(f"{name}: corrupt HDF5 file ({type(e).__name__}: "
                                 f"{(str(e).splitlines() or [''])[0][:200]})") from e

    for key, value in params.items():
        if not np.isfinite(value).all():
            raise RLToolsH5Error(f"{name}: parameter {key} contains NaN or inf")
    policy = StudentPolicy(num_obs, num_actions, hidden, dtype=dtype, device=device, **policy_kwargs)
    policy.load_rltools_parameters(params)
    policy.checkpoint_name = checkpoint_name
    policy.meta_text = meta_text  # verbatim, so a re-export can keep the exact attribute
    try:
        policy.meta = json.loads(meta_text) if meta_text else None
    except json.JSONDecodeError:
        policy.meta = meta_text
    return policy


def _read_actor(f: h5py.File, name: str) -> tuple[dict, int, int, int, str, str]:
    """The Dense-GRU-Dense parameters of an open rl-tools file, checked layer by layer (`RLToolsH5Error`)."""
    if "actor" not in f:
        raise RLToolsH5Error(f"{name}: missing group 'actor'")
    actor = f["actor"]
    if _attr(actor, "type") != "sequential":
        raise RLToolsH5Error(f"{name}: 'actor' has type {_attr(actor, 'type')!r}, expected 'sequential'")
    for i, kind in ((0, "dense"), (1, "gru"), (2, "dense")):
        g = f"actor/layers/{i}"
        if g not in f:
            raise RLToolsH5Error(f"{name}: missing group '{g}'")
        if _attr(f[g], "type") != kind:
            raise RLToolsH5Error(f"{name}: '{g}' has type {_attr(f[g], 'type')!r}, expected '{kind}'")
    if "actor/layers/3" in f:
        raise RLToolsH5Error(f"{name}: 'actor/layers' has more than 3 layers; expected Dense-GRU-Dense")
    for i, act in DENSE_ACTIVATIONS.items():
        got = _attr(f[f"actor/layers/{i}"], "activation_function")
        if got != act:
            raise RLToolsH5Error(f"{name}: 'actor/layers/{i}' activation_function is {got!r}, expected '{act}'")

    w0 = _dataset(f, "actor/layers/0/weights/parameters", path_name=name)
    if w0.ndim != 2:
        raise RLToolsH5Error(f"{name}: dataset 'actor/layers/0/weights/parameters' has shape {w0.shape}, "
                             f"expected (hidden_dim, num_obs)")
    hidden, num_obs = w0.shape
    w2 = _dataset(f, "actor/layers/2/weights/parameters", path_name=name)
    if w2.ndim != 2 or w2.shape[1] != hidden:
        raise RLToolsH5Error(f"{name}: dataset 'actor/layers/2/weights/parameters' has shape {w2.shape}, "
                             f"expected (num_actions, {hidden})")
    num_actions = w2.shape[0]
    expected = {
        "0.weights": (hidden, num_obs), "0.biases": (1, hidden),
        "1.weights_input": (3 * hidden, hidden), "1.biases_input": (3 * hidden,),
        "1.weights_hidden": (3 * hidden, hidden), "1.biases_hidden": (3 * hidden,),
        "1.initial_hidden_state": (hidden,),
        "2.weights": (num_actions, hidden), "2.biases": (1, num_actions),
    }
    params = {}
    for key, shape in expected.items():
        layer, pname = key.split(".")
        params[key] = _dataset(f, f"actor/layers/{layer}/{pname}/parameters", shape, name)
    meta_text = _attr(actor, "meta")
    checkpoint_name = _attr(actor, "checkpoint_name")
    return params, num_obs, num_actions, hidden, meta_text, checkpoint_name


def read_example(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The ``example/input`` and ``example/output`` pair stored beside the actor."""
    with h5py.File(path, "r") as f:
        x = _dataset(f, "example/input", path_name=str(path))
        y = _dataset(f, "example/output", path_name=str(path))
    return x, y


def _write_matrix(group: h5py.Group, data: np.ndarray) -> None:
    ds = group.create_dataset("parameters", data=data)
    ds.attrs["type"] = "matrix"
    ds.attrs["rows"] = str(data.shape[0])
    ds.attrs["cols"] = str(data.shape[1])


def _write_tensor(group: h5py.Group | h5py.File, name: str, data: np.ndarray) -> None:
    ds = group.create_dataset(name, data=data)
    ds.attrs["type"] = "tensor"
    ds.attrs["num_dims"] = str(data.ndim)
    for i, d in enumerate(data.shape):
        ds.attrs[f"dim_{i}"] = str(d)


@torch.no_grad()
def save_rltools_h5(policy: StudentPolicy, path: str | os.PathLike, meta: dict | str | None = None, *,
                    checkpoint_name: str = "eyas", example_input: np.ndarray | torch.Tensor | None = None,
                    example: bool = True, seed: int = 0, example_output: np.ndarray | None = None) -> None:
    """Write ``policy`` in rl-tools' layout (float32, as rl-tools' checkpoints), atomically.

    With ``example=True`` an ``example/input``/``example/output`` pair is stored (500 x 2 random
    observations unless ``example_input`` is given) so the file also loads in ``foundation_policy.load``;
    the output is computed from the float32 weights exactly as stored, unless ``example_output`` gives it
    (`eyas export` passes rl-tools' own output for the same weights)."""
    path = Path(path)
    params = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in policy.rltools_parameters().items()}
    if meta is None:
        meta = {"environment": {"name": "l2f", "observation": RAPTOR_OBSERVATION},
                "exported_by": "eyas"}
    meta_text = meta if isinstance(meta, str) else json.dumps(meta)

    ex_in = ex_out = None
    if example:
        if example_input is None:
            g = np.random.default_rng(seed)
            ex_in = g.standard_normal((500, 2, policy.num_obs)).astype(np.float32)
        else:
            ex_in = np.asarray(torch.as_tensor(example_input).cpu(), dtype=np.float32)
        # evaluate the float32 weights as stored (not the in-memory dtype) so the pair is self-consistent
        ref = StudentPolicy(policy.num_obs, policy.num_actions, policy.hidden_dim, dtype=torch.float32)
        ref.load_rltools_parameters(params)
        ex_out = ref(torch.from_numpy(ex_in)).numpy()
        if example_output is not None:
            given = np.asarray(example_output, dtype=np.float32)
            if given.shape != ex_out.shape:
                raise ValueError(f"example_output has shape {given.shape}, expected {ex_out.shape}")
            ex_out = given

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            actor = f.create_group("actor")
            layers = actor.create_group("layers")
            for i, act in DENSE_ACTIVATIONS.items():
                g = layers.create_group(str(i))
                _write_matrix(g.create_group("weights"), params[f"{i}.weights"])
                _write_matrix(g.create_group("biases"), params[f"{i}.biases"].reshape(1, -1))
                g.attrs["activation_function"] = act
                g.attrs["type"] = "dense"
            gru = layers.create_group("1")
            for pname in ("weights_input", "biases_input", "weights_hidden", "biases_hidden", "initial_hidden_state"):
                _write_tensor(gru.create_group(pname), "parameters", params[f"1.{pname}"])
            gru.attrs["type"] = "gru"
            actor.attrs["checkpoint_name"] = checkpoint_name
            actor.attrs["meta"] = meta_text
            actor.attrs["type"] = "sequential"
            if example:
                ex = f.create_group("example")
                _write_tensor(ex, "input", ex_in)
                _write_tensor(ex, "output", ex_out)

    atomic_with(path, write)
