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

from .base import TeacherError
from .nets import Normalize, TakeFirst, linear, rsl_rl_activation

SIDECAR = "teacher.json"


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
    idx = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", k)))
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
    return {"layout": layout, "layers": layers, "normaliser": norm, "std": std}


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
    """An rsl_rl checkpoint's contents, read with ``weights_only=True``: tensors, numbers, strings and containers of
    them only (what rsl_rl and Isaac Lab save). A file whose unpickling would build anything else (and so could run
    code) is refused with one line naming it, before anything in it executes."""
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the global a file would build (and so could run code through); junk bytes name none
        culprit = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), None)
        if culprit is None:
            raise TeacherError(f"cannot read rsl_rl checkpoint {path}: {_first_line(e)}") from e
        raise TeacherError(f"refusing {path}: not a plain checkpoint of tensors and numbers ({culprit[:120]}); "
                           f"teacher files are read without running code") from e
    except Exception as e:  # torch raises many types for corrupt files
        raise TeacherError(f"cannot read rsl_rl checkpoint {path}: {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(ckpt, dict):
        raise TeacherError(f"{path} holds a {type(ckpt).__name__}, not an rsl_rl checkpoint (a dict)")
    return ckpt


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def load_rsl_rl_checkpoint(path: Path, activation: str | None = None) -> tuple[nn.Sequential, dict, dict | None]:
    """(actor network, parse info, eyas sidecar or None) for an rsl_rl checkpoint file."""
    ckpt = read_checkpoint(path)
    try:
        return _build_from_checkpoint(path, ckpt, activation)
    except TeacherError:
        raise
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise TeacherError(f"{path}: not an rsl_rl actor this loader understands ({type(e).__name__}: "
                           f"{_first_line(e)})") from e


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
