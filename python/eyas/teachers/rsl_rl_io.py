"""Rebuild the deterministic actor of an rsl_rl PPO checkpoint (`model_*.pt`) as a plain torch network.

Supported layouts:
  * rsl_rl >= 4 (`actor_state_dict` of an `MLPModel`: `mlp.<i>.weight`, `obs_normalizer._mean/_std`,
    `distribution.std_param|log_std_param`),
  * rsl_rl <= 3 (`model_state_dict` of an `ActorCritic`: `actor.<i>.weight`, `std|log_std`, and the actor
    normaliser either inside it as `actor_obs_normalizer.*` or beside it as `obs_norm_state_dict`).

Neither layout stores the activation function; it is read from the eyas sidecar `teacher.json`, else from an
Isaac Lab `params/agent.yaml` next to the checkpoint, else rsl_rl's default ("elu").
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eyas.io import first_line, read_torch_file

from .base import TeacherError
from .nets import Normalize, TakeFirst, linear, rsl_rl_activation

SIDECAR = "teacher.json"
STD_KEYS = ("distribution.std_param", "distribution.log_std_param", "std", "log_std")  # rsl_rl >= 4, <= 3


def read_sidecar(location: Path) -> dict | None:
    """The eyas `teacher.json` in directory `location` or beside file `location`, or None."""
    path = (location if location.is_dir() else location.parent) / SIDECAR
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TeacherError(f"cannot read teacher sidecar {path}: {e}") from e


def _activation_from_agent_yaml(checkpoint: Path) -> str | None:
    """First `activation:` value of an Isaac Lab `params/agent.yaml` next to (or one above) the checkpoint."""
    for d in (checkpoint.parent, checkpoint.parent.parent):
        path = d / "params" / "agent.yaml"
        if path.is_file():
            m = re.search(r"^\s*activation:\s*['\"]?(\w+)", path.read_text(), flags=re.MULTILINE)
            if m:
                return m.group(1)
    return None


def _linear_layers(sd: dict[str, torch.Tensor], prefix: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of every linear layer ``<prefix><i>``: rsl_rl's MLP puts them at 0, 2, 4, ... (activations
    between); a missing layer, weight or bias would silently build another network, so it is refused."""
    found: dict[int, set[str]] = {}
    for key in sd:
        if m := re.fullmatch(re.escape(prefix) + r"(\d+)\.(weight|bias)", key):
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    for i, names in sorted(found.items()):
        if len(names) < 2:
            raise TeacherError(f"actor layer {prefix}{i} has a {min(names)} but no {min({'weight', 'bias'} - names)}")
    idx = sorted(found)
    if idx != list(range(0, 2 * len(idx), 2)):
        raise TeacherError(f"actor layers {prefix}{idx} are not rsl_rl's MLP (linear layers at 0, 2, 4, ...)")
    return [(sd[f"{prefix}{i}.weight"], sd[f"{prefix}{i}.bias"]) for i in idx]


def _normaliser(sd: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if f"{prefix}_mean" in sd and f"{prefix}_std" in sd:
        return sd[f"{prefix}_mean"], sd[f"{prefix}_std"]
    return None


def parse_rsl_rl_actor(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Linear layers, optional normaliser (mean, std) and action std of the actor in an rsl_rl checkpoint dict."""
    if not isinstance(ckpt, dict):
        raise TeacherError(f"not an rsl_rl checkpoint: expected a dict, got {type(ckpt).__name__}")
    if "actor_state_dict" in ckpt:
        sd, layout = ckpt["actor_state_dict"], "actor_state_dict"
        layers = _linear_layers(sd, "mlp.")
        norm = _normaliser(sd, "obs_normalizer.")
        std = sd.get("distribution.std_param")
        if std is None and "distribution.log_std_param" in sd:
            std = sd["distribution.log_std_param"].exp()
        recurrent = any(k.startswith("rnn.") for k in sd)
    elif "model_state_dict" in ckpt:
        sd, layout = ckpt["model_state_dict"], "model_state_dict"
        layers = _linear_layers(sd, "actor.")
        norm = _normaliser(sd, "actor_obs_normalizer.")
        if norm is None and isinstance(ckpt.get("obs_norm_state_dict"), dict):
            norm = _normaliser(ckpt["obs_norm_state_dict"], "")
        std = sd.get("std")
        if std is None and "log_std" in sd:
            std = sd["log_std"].exp()
        recurrent = any(k.startswith("memory_a.") for k in sd)
    else:
        raise TeacherError(
            "not an rsl_rl PPO checkpoint: no 'actor_state_dict' or 'model_state_dict' key "
            f"(keys: {sorted(ckpt)[:10]})"
        )
    if recurrent:
        raise TeacherError("recurrent rsl_rl actors are not supported as teachers (MLP actors only)")
    if not layers:
        raise TeacherError(f"no MLP actor layers found in the checkpoint's {layout!r}")
    _check_finite({**sd, **(ckpt.get("obs_norm_state_dict") or {})}, layout)
    _check_shapes(layers, norm, sd, layout)
    for key in STD_KEYS:
        value = sd.get(key)
        if value is not None and not (value.is_floating_point() and value.numel() == layers[-1][0].shape[0]):
            raise TeacherError(f"{layout}: the action std {key} ({tuple(value.shape)}, {value.dtype}) does not "
                               f"match the {layers[-1][0].shape[0]} actions")
    return {"layout": layout, "layers": layers, "normaliser": norm, "std": std}


def _check_finite(tensors: dict, layout: str) -> None:
    """Refuse NaN or inf in any floating tensor of the actor (weights, normaliser, action std)."""
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all()):
            raise TeacherError(f"the teacher's parameters contain NaN or inf ({layout} {key})")


def _check_shapes(layers: list, norm: tuple | None, sd: dict, layout: str) -> None:
    """Layers that chain (each input as wide as the previous output), floating point, and a normaliser of the
    first layer's width or none (half a normaliser is refused: the actor would read unnormalised inputs)."""
    width = None
    for i, (w, b) in enumerate(layers):
        if not (isinstance(w, torch.Tensor) and isinstance(b, torch.Tensor) and w.is_floating_point()
                and b.is_floating_point()):
            raise TeacherError(f"{layout}: actor layer {i} is not a floating-point weight and bias")
        if w.dim() != 2 or b.numel() != w.shape[0] or (width is not None and w.shape[1] != width):
            raise TeacherError(f"{layout}: actor layer {i} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, "
                               f"which do not follow {width if width is not None else 'the input'}")
        width = w.shape[0]
    halves = [k for k in sd if k.endswith(("normalizer._mean", "normalizer._std"))]
    if norm is None and halves:
        raise TeacherError(f"{layout}: half an observation normaliser ({', '.join(sorted(halves))})")
    if norm is not None and any(not isinstance(t, torch.Tensor) or not t.is_floating_point()
                                or t.numel() != layers[0][0].shape[1] for t in norm):
        raise TeacherError(f"{layout}: the observation normaliser does not match the first layer's "
                           f"{layers[0][0].shape[1]} inputs")


def build_rsl_rl_actor(
    parsed: dict[str, Any], activation: str = "elu", num_actions: int = 4, distribution: str | None = None
) -> nn.Sequential:
    """Deterministic actor network: [normaliser] -> Linear/activation stack -> [mean head]."""
    modules: list[nn.Module] = []
    if parsed["normaliser"] is not None:
        modules.append(Normalize(*parsed["normaliser"]))
    layers = parsed["layers"]
    for i, (w, b) in enumerate(layers):
        modules.append(linear(w, b))
        if i < len(layers) - 1:
            modules.append(rsl_rl_activation(activation))
    out_dim = layers[-1][0].shape[0]
    if out_dim == 2 * num_actions and (distribution or "").endswith("HeteroscedasticGaussianDistribution"):
        modules.append(TakeFirst(num_actions))  # rows [mean; std] after Unflatten(-1, [2, A]) -> mean first
    elif out_dim != num_actions:
        raise TeacherError(
            f"rsl_rl actor outputs {out_dim} values; expected {num_actions} actions (Gaussian mean) "
            f"(distribution: {distribution or 'unknown'}; only Gaussian heads are supported)"
        )
    return nn.Sequential(*modules)


def read_checkpoint(path: Path) -> dict:
    """An rsl_rl checkpoint's contents, read with ``weights_only=True`` (`eyas.io.read_torch_file`): tensors,
    numbers, strings and containers of them only (what rsl_rl and Isaac Lab save); a file that would run code is
    refused with one line naming it, before anything in it executes."""
    ckpt = read_torch_file(path, TeacherError, "rsl_rl checkpoint")
    if not isinstance(ckpt, dict):
        raise TeacherError(f"{path} holds a {type(ckpt).__name__}, not an rsl_rl checkpoint (a dict)")
    return ckpt


def read_training_checkpoint(path: Path) -> dict:
    """An rsl_rl (>= 4) training checkpoint to continue from (`eyas teacher train --init_checkpoint`), read as
    `read_checkpoint` reads (no code in it runs): its actor and critic state dicts of finite tensors, and its
    iteration; rsl_rl's runner then loads the state dicts (`eyas.teachers.train`)."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("actor_state_dict", "critic_state_dict", "iter") if k not in ckpt]
    if missing:
        raise TeacherError(f"{path}: not an rsl_rl training checkpoint (no {', '.join(missing)})")
    for part in ("actor_state_dict", "critic_state_dict"):
        if not isinstance(ckpt[part], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt[part].values()):
            raise TeacherError(f"{path}: {part} is not a dict of tensors")
        _check_finite(ckpt[part], f"{path.name} {part}")
    if not isinstance(ckpt["iter"], int) or ckpt["iter"] < 0:
        raise TeacherError(f"{path}: iteration {ckpt['iter']!r} is not a count")
    return ckpt


def load_rsl_rl_checkpoint(path: Path, activation: str | None = None) -> tuple[nn.Sequential, dict, dict | None]:
    """(actor network, parse info, eyas sidecar or None) for an rsl_rl checkpoint file."""
    ckpt = read_checkpoint(path)
    try:
        return _build_from_checkpoint(path, ckpt, activation)
    except TeacherError:
        raise
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise TeacherError(f"{path}: not an rsl_rl actor this loader understands ({type(e).__name__}: "
                           f"{first_line(e)})") from e


def _build_from_checkpoint(path: Path, ckpt: dict, activation: str | None):
    parsed = parse_rsl_rl_actor(ckpt)
    sidecar = read_sidecar(path)
    actor_cfg = (sidecar or {}).get("actor", {})
    act = activation or actor_cfg.get("activation") or _activation_from_agent_yaml(path) or "elu"
    dist = (actor_cfg.get("distribution_cfg") or {}).get("class_name")
    # without eyas' sidecar (e.g. an Isaac Lab run) the Gaussian mean head's width is the action count
    num_actions = int((sidecar or {}).get("num_actions", parsed["layers"][-1][0].shape[0]))
    net = build_rsl_rl_actor(parsed, activation=act, num_actions=num_actions, distribution=dist)
    parsed["activation"], parsed["num_actions"] = act, num_actions
    parsed["iter"] = ckpt.get("iter")
    return net, parsed, sidecar
