"""Access to the compiled rl-tools chain (``eyas._rltools``) with StudentPolicy weights.

rl-tools fixes shapes at compile time, so each (dtype, obs, sequence, batch) is its own class;
``available_shapes()`` lists them and ``chain_for(policy, ...)`` builds one holding the policy's weights.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from eyas.model import StudentPolicy

try:
    from eyas import _rltools
except ImportError as e:  # pragma: no cover - only without a built extension
    _rltools = None
    _IMPORT_ERROR = e

_NAME = re.compile(r"Chain_(float32|float64)_obs(\d+)_seq(\d+)_batch(\d+)$")


def _module():
    if _rltools is None:
        raise ImportError(f"the rl-tools bridge eyas._rltools is not built ({_IMPORT_ERROR}); "
                          f"reinstall eyas with `pip install .`")
    return _rltools


def available_shapes() -> list[tuple[str, int, int, int]]:
    """(dtype, num_obs, sequence_length, batch_size) of every compiled chain."""
    out = []
    for name in dir(_module()):
        m = _NAME.match(name)
        if m:
            out.append((m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return sorted(out)


def chain_class(num_obs: int, dtype: str | torch.dtype, sequence_length: int, batch_size: int):
    dtype = dtype_name(dtype)
    name = f"Chain_{dtype}_obs{num_obs}_seq{sequence_length}_batch{batch_size}"
    cls = getattr(_module(), name, None)
    if cls is None:
        shapes = ", ".join(f"{d} obs{o} {s}x{b}" for d, o, s, b in available_shapes())
        raise ValueError(f"no rl-tools chain compiled for {dtype} obs{num_obs} sequence {sequence_length} x "
                         f"batch {batch_size}; compiled: {shapes} (add one in cpp_bridge/module.cpp)")
    return cls


def chain_for(policy: StudentPolicy, sequence_length: int, batch_size: int,
              dtype: str | torch.dtype | None = None, seed: int = 0):
    """An rl-tools chain of the given shape holding ``policy``'s parameters (cast to ``dtype``)."""
    if policy.hidden_dim != 16 or policy.num_actions != 4:
        raise ValueError("the bridge is compiled for hidden_dim 16 and 4 actions")
    dtype = dtype_name(dtype or policy.initial_hidden_state.dtype)
    chain = chain_class(policy.num_obs, dtype, sequence_length, batch_size)(seed)
    chain.set_parameters(policy_parameters_numpy(policy, dtype))
    return chain


def stepper_for(policy: StudentPolicy, dtype: str | torch.dtype | None = None):
    """rl-tools' step-wise evaluation (``Step_<dtype>_obs<N>``, no auto reset, any batch) with ``policy``'s
    parameters: ``step(obs (B, N), hidden (B, 16) in/out, out (B, 4))``. Used by `eyas.InferencePolicy`."""
    if policy.hidden_dim != 16 or policy.num_actions != 4:
        raise ValueError("the bridge is compiled for hidden_dim 16 and 4 actions")
    dtype = dtype_name(dtype or policy.initial_hidden_state.dtype)
    cls = getattr(_module(), f"Step_{dtype}_obs{policy.num_obs}", None)
    if cls is None:
        raise ValueError(f"no rl-tools step-wise chain compiled for {dtype} obs{policy.num_obs} "
                         f"(compiled: 22 and 26 observations; add one in cpp_bridge/module.cpp)")
    stepper = cls()
    stepper.set_parameters(policy_parameters_numpy(policy, dtype))
    return stepper


def policy_parameters_numpy(policy: StudentPolicy, dtype: str | torch.dtype) -> dict[str, np.ndarray]:
    np_dtype = np.float32 if dtype_name(dtype) == "float32" else np.float64
    return {k: v.detach().cpu().numpy().astype(np_dtype) for k, v in policy.rltools_parameters().items()}


def dtype_name(dtype: str | torch.dtype | np.dtype) -> str:
    """The bridge's name ("float32" or "float64") of a torch / numpy dtype or its name (ValueError otherwise)."""
    if dtype in (torch.float32, np.float32, "float32"):
        return "float32"
    if dtype in (torch.float64, np.float64, "float64"):
        return "float64"
    raise ValueError(f"the bridge supports float32 and float64, got {dtype}")
