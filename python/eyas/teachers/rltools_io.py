"""Rebuild an rl-tools HDF5 actor (`actor` group) as a deterministic torch network.

Layout (as written by rl-tools' `save(device, model, group)`): every module group has a string attribute `type`:
  * `dense`: datasets `weights/parameters [out, in]`, `biases/parameters [1, out] or [out]`, attribute
    `activation_function` (IDENTITY, RELU, GELU, TANH, FAST_TANH, SIGMOID);
  * `mlp`: attribute `num_layers` (string or int) and groups `input_layer`, `hidden_layer_<i>`, `output_layer`;
  * `sequential`: group `layers` with children `0`, `1`, ...;
  * `sample_and_squash`: no weights; deterministic output is tanh of the first half of its input (the mean);
  * `standardize`: `mean/parameters`, `precision/parameters`: `(x - mean) * precision`.
Recurrent (`gru`) actors are not feed-forward teachers and are refused.
An optional root group `example` (`input`, `output`, evaluated by rl-tools in evaluation mode) is checked on load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import TeacherError
from .nets import SquashedMean, Standardize, linear, rltools_activation


def _attr_str(group, name: str) -> str:
    value = group.attrs[name]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else str(value)


def _param(group, name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(group[name]["parameters"][()], dtype=np.float32))


def build_module(group) -> nn.Module:
    """Torch module for one rl-tools module group (dispatch on its `type` attribute)."""
    if "type" not in group.attrs:
        raise TeacherError(f"rl-tools group {group.name!r} has no 'type' attribute")
    kind = _attr_str(group, "type")
    if kind == "dense":
        w = _param(group, "weights")
        b = _param(group, "biases").reshape(-1)
        return nn.Sequential(linear(w, b), rltools_activation(_attr_str(group, "activation_function")))
    if kind == "mlp":
        n = int(_attr_str(group, "num_layers"))
        names = ["input_layer"] + [f"hidden_layer_{i}" for i in range(n - 2)] + ["output_layer"]
        return nn.Sequential(*(build_module(group[k]) for k in names))
    if kind == "sequential":
        layers = group["layers"]
        return nn.Sequential(*(build_module(layers[str(i)]) for i in range(len(layers))))
    if kind == "sample_and_squash":
        return SquashedMean()
    if kind == "standardize":
        return Standardize(_param(group, "mean"), _param(group, "precision"))
    if kind == "gru":
        raise TeacherError(f"rl-tools group {group.name!r} is a GRU: recurrent actors are not supported as teachers")
    raise TeacherError(f"rl-tools group {group.name!r} has unsupported type {kind!r}")


def _input_width(group) -> int | None:
    kind = _attr_str(group, "type")
    if kind == "dense":
        return int(group["weights"]["parameters"].shape[1])
    if kind == "mlp":
        return _input_width(group["input_layer"])
    if kind == "sequential":
        for i in range(len(group["layers"])):
            width = _input_width(group["layers"][str(i)])
            if width is not None:
                return width
    if kind == "standardize":
        return int(np.asarray(group["mean"]["parameters"][()]).size)
    return None


def load_rltools_actor(path: Path, check_example: bool = True) -> tuple[nn.Module, int, int, dict[str, Any]]:
    """(network, input width, output width, metadata) for an rl-tools actor file."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise TeacherError(f"cannot read rl-tools HDF5 file {path}: {e}") from e
    with f:
        if "actor" not in f:
            raise TeacherError(f"{path} has no 'actor' group (groups: {sorted(f.keys())})")
        group = f["actor"]
        try:
            net = build_module(group)
            num_obs = _input_width(group)
        except TeacherError:
            raise
        except (KeyError, OSError, TypeError, ValueError) as e:
            raise TeacherError(f"{path}: malformed rl-tools actor: {type(e).__name__}: {e}") from e
        if num_obs is None:
            raise TeacherError(f"{path}: cannot determine the actor's input width")
        meta: dict[str, Any] = {}
        if "meta" in group.attrs:
            try:
                meta = json.loads(_attr_str(group, "meta"))
            except json.JSONDecodeError:
                meta = {"raw": _attr_str(group, "meta")}
        if "checkpoint_name" in group.attrs:
            meta["checkpoint_name"] = _attr_str(group, "checkpoint_name")
        net.eval()
        with torch.no_grad():
            num_actions = int(net(torch.zeros(1, num_obs)).shape[-1])
            if check_example and "example" in f:
                x = torch.from_numpy(np.asarray(f["example"]["input"][()], dtype=np.float32))
                y = np.asarray(f["example"]["output"][()], dtype=np.float32)
                diff = float(np.abs(net(x).numpy() - y).max())
                if diff > 1e-4:
                    raise TeacherError(
                        f"{path}: rebuilt actor does not reproduce the file's example output (max |diff| {diff:.3g})"
                    )
                meta["example_max_abs_diff"] = diff
    return net, num_obs, num_actions, meta
