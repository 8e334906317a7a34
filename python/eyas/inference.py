"""Fast step-wise inference from Python: `InferencePolicy`, backed by rl-tools' own compiled evaluate_step.

For deployment-style loops (one observation batch in, one action batch out, a persistent GRU state) where
`StudentPolicy.forward` pays PyTorch's per-op overhead: the step runs in rl-tools' C++ chain
(``eyas._rltools.Step_<dtype>_obs<N>``, `cpp_bridge/step.h`), the hidden state is a numpy array held here, and
the per-step Python work is one call with preallocated buffers (no torch on the hot path). rl-tools' generic
CPU backend costs ~1 µs per row, so above ``TORCH_FROM_BATCH`` rows (where PyTorch's fixed ~60 µs per step is the
smaller cost) ``backend="auto"`` steps a CPU copy of the StudentPolicy instead, on the same numpy state.

    policy = eyas.InferencePolicy("checkpoint.h5")   # or a StudentPolicy; batch_size=1 by default
    policy.reset()
    action = policy.step(obs)                         # obs (batch, num_obs) -> actions (batch, 4), numpy
    policy.reset(done)                                # per-row reset: done (batch,) bool

Outputs equal `StudentPolicy` stepped the same way (with the same resets) to float round-off (tests/test_inference.py).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from eyas.model import StudentPolicy

TORCH_FROM_BATCH = 65  # backend="auto": rl-tools' chain up to 64 rows, PyTorch from 65 (measured crossover ~64)


class InferencePolicy:
    """Step-wise StudentPolicy on rl-tools' compiled chain, for batches of 1 ... N rows.

    - ``policy``: a `StudentPolicy` (its parameters are copied: later changes to it are not seen) or the path
      of an rl-tools .h5 checkpoint (`eyas.load_rltools_h5`).
    - ``dtype``: "float32" or "float64" (default: the policy's; float32 for a path).
    - ``auto_reset_steps=N``: return a row to the initial state after every N steps, as rl-tools'
      ``evaluate_step`` (and ``StudentPolicy(auto_reset_steps=N)``); default None, no automatic reset.
    - ``validate_inputs``: check observations for NaN/inf every step (off by default: it costs a few µs).
    - ``backend``: "rltools" (the compiled chain), "torch" (a CPU copy of the StudentPolicy) or "auto" (rl-tools
      below ``TORCH_FROM_BATCH`` rows, torch from there); ``self.backend`` is the one in use for this batch size.

    ``step(obs)`` takes a (batch, num_obs) array (anything numpy converts; converted to ``dtype`` if needed) and
    returns a new (batch, 4) array, or writes into ``out`` when given. A wrong shape raises a one-line ValueError.
    """

    def __init__(self, policy: StudentPolicy | str | os.PathLike, batch_size: int = 1, *,
                 dtype: str | torch.dtype | None = None, auto_reset_steps: int | None = None,
                 validate_inputs: bool = False, backend: str = "auto"):
        from eyas import bridge  # the compiled extension, imported only when an InferencePolicy is made

        if isinstance(policy, (str, os.PathLike)):
            from eyas.rltools_h5 import load_rltools_h5

            policy = load_rltools_h5(policy, dtype=torch.float64 if dtype in ("float64", torch.float64)
                                     else torch.float32)
        if not isinstance(policy, StudentPolicy):
            raise TypeError(f"InferencePolicy needs a StudentPolicy or an rl-tools .h5 path, "
                            f"got {type(policy).__name__}")
        if auto_reset_steps is not None and (int(auto_reset_steps) != auto_reset_steps or auto_reset_steps <= 0):
            raise ValueError(f"auto_reset_steps must be a positive int or None, got {auto_reset_steps}")
        if backend not in ("auto", "rltools", "torch"):
            raise ValueError(f"backend must be 'auto', 'rltools' or 'torch', got {backend!r}")
        name = bridge.dtype_name(dtype or policy.initial_hidden_state.dtype)
        self._stepper = bridge.stepper_for(policy, name) if backend != "torch" else None
        self._torch = None
        if backend != "rltools":
            self._torch = StudentPolicy(policy.num_obs, policy.num_actions, policy.hidden_dim, validate_inputs=False,
                                        dtype=getattr(torch, name))
            self._torch.load_state_dict(policy.state_dict())  # a copy on the CPU (state_dict: no autograd graph)
        self._backend_choice = backend
        self.dtype = np.dtype(name)
        self.num_obs, self.num_actions, self.hidden_dim = policy.num_obs, policy.num_actions, policy.hidden_dim
        self.auto_reset_steps = None if auto_reset_steps is None else int(auto_reset_steps)
        self.validate_inputs = bool(validate_inputs)
        self._h0 = policy.initial_hidden_state.detach().cpu().numpy().astype(self.dtype)
        self.reset(batch_size=batch_size)

    @property
    def batch_size(self) -> int:
        return self._hidden.shape[0]

    @property
    def hidden_state(self) -> np.ndarray:
        """A copy of the current state, (batch, hidden_dim)."""
        return self._hidden.copy()

    def reset(self, mask=None, *, batch_size: int | None = None) -> None:
        """Every row back to the initial hidden state (``batch_size`` changes the batch), or only the rows where
        ``mask`` ((batch,) bool) is True."""
        if mask is not None:
            if batch_size is not None:
                raise ValueError("reset takes a mask or a batch_size, not both")
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != (self.batch_size,):
                raise ValueError(f"reset mask must be a bool array of shape ({self.batch_size},), "
                                 f"got {mask.dtype} {mask.shape}")
            self._hidden[mask] = self._h0
            if self._steps is not None:
                self._steps[mask] = 0
            return
        if batch_size is not None:
            if int(batch_size) != batch_size or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size}")
            self._hidden = np.empty((int(batch_size), self.hidden_dim), self.dtype)
            self._out_shape = (int(batch_size), self.num_actions)
            torch_rows = self._backend_choice == "torch" or (self._backend_choice == "auto"
                                                             and batch_size >= TORCH_FROM_BATCH)
            self.backend = "torch" if torch_rows else "rltools"
            self._step = self._torch_step if torch_rows else self._stepper.step
        self._hidden[:] = self._h0
        self._steps = None if self.auto_reset_steps is None else np.zeros(self.batch_size, np.int64)

    def step(self, obs, out: np.ndarray | None = None) -> np.ndarray:
        """Actions (batch, num_actions) for ``obs`` (batch, num_obs); the hidden state moves one step."""
        if out is None:
            out = np.empty(self._out_shape, self.dtype)
        if self.validate_inputs and not np.isfinite(obs).all():
            raise ValueError("observations contain NaN or inf")
        if self._steps is not None:
            self._auto_reset()
        try:
            self._step(obs, self._hidden, out)
        except ValueError as e:
            if self._steps is not None:
                self._steps -= 1  # the step did not happen (rows reset by _auto_reset stay correctly at h0)
            raise ValueError(f"InferencePolicy.step: {e} (batch_size {self.batch_size}: "
                             f"reset(batch_size=...) to change it)") from None
        return out

    __call__ = step

    def _torch_step(self, obs, hidden: np.ndarray, out: np.ndarray) -> None:
        """The same contract as the compiled step (``hidden`` read and overwritten, ``out`` written), in PyTorch."""
        obs = np.ascontiguousarray(obs, dtype=self.dtype)
        if obs.shape != (hidden.shape[0], self.num_obs):
            raise ValueError(f"observations: expected shape ({hidden.shape[0]}, {self.num_obs}) (batch, features), "
                             f"got {obs.shape}")
        if out.shape != self._out_shape or out.dtype != self.dtype:
            raise ValueError(f"out: expected a {self.dtype} array of shape {self._out_shape}")
        with torch.inference_mode():
            actions, h = self._torch.act(torch.from_numpy(obs), torch.from_numpy(hidden).unsqueeze(0))
            out[...] = actions.numpy()
            hidden[...] = h[0].numpy()

    def _auto_reset(self) -> None:
        due = self._steps >= self.auto_reset_steps
        if due.any():
            self._hidden[due] = self._h0
            self._steps[due] = 0
        self._steps += 1

    def __repr__(self) -> str:
        return (f"InferencePolicy(num_obs={self.num_obs}, batch_size={self.batch_size}, dtype={self.dtype}, "
                f"backend={self.backend!r}, auto_reset_steps={self.auto_reset_steps})")
