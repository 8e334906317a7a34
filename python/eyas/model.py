"""The RAPTOR student policy: Dense(obs->16)+ReLU -> GRU(16) with a learned initial state -> Dense(16->4)."""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from eyas.gru import RecurrentGRU, gru_cell, gru_sequence

GradientMode = Literal["rltools", "exact"]

# Parameter names in rl-tools checkpoints ("<layer>.<parameter>") -> attribute paths in StudentPolicy.
RLTOOLS_PARAMETER_NAMES = {
    "0.weights": "input_layer.weight",
    "0.biases": "input_layer.bias",
    "1.weights_input": "gru.weight_ih_l0",
    "1.biases_input": "gru.bias_ih_l0",
    "1.weights_hidden": "gru.weight_hh_l0",
    "1.biases_hidden": "gru.bias_hh_l0",
    "1.initial_hidden_state": "initial_hidden_state",
    "2.weights": "output_layer.weight",
    "2.biases": "output_layer.bias",
}


class StudentPolicy(nn.Module):
    """GRU student with rl-tools semantics.

    - ``forward(obs, reset=None)``: 2-D ``(batch, obs)`` is one step that updates the module's hidden
      state; 3-D ``(seq, batch, obs)`` is a sequence continuing from the module's hidden state.
      ``reset`` (``(seq, batch)`` or ``(batch,)`` bool) marks steps that start a new episode: the
      incoming state is replaced by ``initial_hidden_state``, as rl-tools' GRU ResetMode does.
    - After ``reset()`` (or at construction) the state *is* the initial hidden state; a sequence
      started from there behaves like rl-tools' ``forward`` (state h0 at step 0).
    - ``gradient_mode="rltools"`` (default) reproduces rl-tools' GRU gradients, ``"exact"`` gives exact
      autograd gradients; they differ only in terms involving the initial state (docs/gradients.md).
    - ``auto_reset_steps=N`` reproduces rl-tools' ``evaluate_step``, which returns a sample's state to
      the initial state after every N steps (N = SEQUENCE_LENGTH, 500 for RAPTOR). Default ``None``:
      no automatic reset, as rl-tools' inference executor (``NoAutoResetMode``) and foundation_policy.
    """

    is_recurrent = True

    def __init__(
        self,
        num_obs: int,
        num_actions: int,
        hidden_dim: int = 16,
        *,
        gradient_mode: GradientMode = "rltools",
        auto_reset_steps: int | None = None,
        validate_inputs: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if gradient_mode not in ("rltools", "exact"):
            raise ValueError(f"gradient_mode must be 'rltools' or 'exact', got {gradient_mode!r}")
        if auto_reset_steps is not None and auto_reset_steps <= 0:
            raise ValueError(f"auto_reset_steps must be a positive int or None, got {auto_reset_steps}")
        factory = {"device": device, "dtype": dtype}
        self.num_obs = int(num_obs)
        self.num_actions = int(num_actions)
        self.hidden_dim = int(hidden_dim)
        self.gradient_mode: GradientMode = gradient_mode
        self.auto_reset_steps = auto_reset_steps
        self.validate_inputs = validate_inputs
        self.input_layer = nn.Linear(num_obs, hidden_dim, **factory)
        self.gru = nn.GRU(hidden_dim, hidden_dim, num_layers=1, batch_first=False, **factory)
        self.initial_hidden_state = nn.Parameter(torch.zeros(hidden_dim, **factory))
        self.output_layer = nn.Linear(hidden_dim, num_actions, **factory)
        self.reset_parameters(generator)
        self._hidden: torch.Tensor | None = None  # None: at the initial hidden state
        self._batch_size: int | None = None
        self._steps: torch.Tensor | None = None  # per-sample step counter for auto_reset_steps

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """rl-tools' initialisation: Dense layers Kaiming-uniform (legacy, = U(±1/√fan_in) for weights
        and biases); GRU input weights/biases U(±1/√input_dim), hidden ones U(±1/√hidden_dim); h0 = 0."""

        def uniform_(t: torch.Tensor, bound: float) -> None:
            t.copy_(torch.rand(t.shape, generator=generator, dtype=t.dtype, device="cpu") * 2 * bound - bound)

        for layer in (self.input_layer, self.output_layer):
            bound = 1.0 / math.sqrt(layer.in_features)
            uniform_(layer.weight, bound)
            uniform_(layer.bias, bound)
        bound_in = 1.0 / math.sqrt(self.gru.input_size)
        bound_h = 1.0 / math.sqrt(self.hidden_dim)
        uniform_(self.gru.weight_ih_l0, bound_in)
        uniform_(self.gru.bias_ih_l0, bound_in)
        uniform_(self.gru.weight_hh_l0, bound_h)
        uniform_(self.gru.bias_hh_l0, bound_h)
        self.initial_hidden_state.zero_()

    # ------------------------------------------------------------------ hidden state
    @property
    def hidden_states(self) -> torch.Tensor | None:
        """Current hidden state, shape (1, batch, hidden_dim); None before the batch size is known."""
        if self._hidden is not None:
            return self._hidden.unsqueeze(0)
        if self._batch_size is None:
            return None
        return self.initial_hidden_state.expand(1, self._batch_size, self.hidden_dim)

    def reset(self, batch_size: int | None = None, device: torch.device | str | None = None,
              dones: torch.Tensor | None = None) -> None:
        """Return to the initial hidden state: all samples (``batch_size``), or those where ``dones``."""
        if dones is not None:
            if self._hidden is None:
                return  # everything is already at the initial state
            mask = dones.to(device=self._hidden.device, dtype=torch.bool).reshape(-1, 1)
            self._hidden = torch.where(mask, self.initial_hidden_state.expand_as(self._hidden), self._hidden)
            if self._steps is not None:
                self._steps = self._steps.masked_fill(mask.squeeze(1), 0)
            return
        if device is not None and torch.device(device) != self.initial_hidden_state.device:
            self.to(device)
        self._hidden = None
        self._batch_size = batch_size
        self._steps = None

    def detach_hidden_states(self) -> None:
        """Cut the autograd graph through the stored hidden state (truncated BPTT)."""
        if self._hidden is not None:
            self._hidden = self._hidden.detach()

    # ------------------------------------------------------------------ evaluation
    def forward(self, obs: torch.Tensor, reset: torch.Tensor | None = None) -> torch.Tensor:
        squeeze = obs.dim() == 2
        if squeeze:
            obs = obs.unsqueeze(0)
            reset = None if reset is None else reset.reshape(1, -1)
        self._check(obs, reset)
        batch = obs.shape[1]
        if self._hidden is not None and self._hidden.shape[0] != batch:
            raise ValueError(
                f"hidden state holds {self._hidden.shape[0]} samples but the input has {batch}: "
                f"call policy.reset(batch_size={batch}) first"
            )
        if self.auto_reset_steps is not None:
            reset = self._auto_reset_mask(obs.shape[0], batch, obs.device, reset)
        actions, hidden = self._run(obs, self._hidden, reset)
        self._hidden = hidden
        self._batch_size = batch
        return actions.squeeze(0) if squeeze else actions

    def act(self, obs: torch.Tensor, hidden_states: torch.Tensor | None = None,
            reset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pure evaluation: ``(action, new_hidden)`` from an explicit state (None = initial state);
        the module's own state is left untouched. ``hidden_states`` is (1, batch, hidden_dim)."""
        squeeze = obs.dim() == 2
        if squeeze:
            obs = obs.unsqueeze(0)
            reset = None if reset is None else reset.reshape(1, -1)
        self._check(obs, reset)
        h = None
        if hidden_states is not None:
            expected = (1, obs.shape[1], self.hidden_dim)
            if tuple(hidden_states.shape) != expected:
                raise ValueError(f"hidden_states must have shape {expected}, got {tuple(hidden_states.shape)}")
            h = hidden_states.squeeze(0)
        actions, hidden = self._run(obs, h, reset)
        return (actions.squeeze(0) if squeeze else actions), hidden.unsqueeze(0)

    def _run(self, obs: torch.Tensor, h: torch.Tensor | None, reset: torch.Tensor | None):
        x = torch.relu(self.input_layer(obs))
        gi = torch.nn.functional.linear(x, self.gru.weight_ih_l0, self.gru.bias_ih_l0)
        if not (torch.is_grad_enabled() and gi.requires_grad):
            return self._run_no_grad(gi, h, reset)
        start_is_initial = h is None
        h_start = self.initial_hidden_state.expand(obs.shape[1], self.hidden_dim) if h is None else h
        out = RecurrentGRU.apply(
            gi, self.gru.weight_hh_l0, self.gru.bias_hh_l0, self.initial_hidden_state, h_start,
            reset, start_is_initial, self.gradient_mode == "rltools",
        )
        return self.output_layer(out), out[-1]

    def _run_no_grad(self, gi: torch.Tensor, h: torch.Tensor | None, reset: torch.Tensor | None):
        """Same recurrence as RecurrentGRU.forward without saving anything for backward (inference)."""
        h0 = self.initial_hidden_state
        h = h0.expand(gi.shape[1], self.hidden_dim) if h is None else h
        out, _, _, _ = gru_sequence(gi, self.gru.weight_hh_l0, self.gru.bias_hh_l0, h0, h, reset)
        return self.output_layer(out), out[-1]

    def _auto_reset_mask(self, seq_len: int, batch: int, device, reset: torch.Tensor | None) -> torch.Tensor:
        """rl-tools' evaluate_step: a sample's state returns to h0 once it has taken N steps."""
        if self._steps is None or self._steps.shape[0] != batch:
            self._steps = torch.zeros(batch, dtype=torch.long, device=device)
        n = self.auto_reset_steps
        offsets = torch.arange(seq_len, device=device).unsqueeze(1)
        steps = self._steps.unsqueeze(0) + offsets  # steps taken before each step of this call
        if reset is not None:  # an explicit reset restarts the counter
            restart = torch.cummax(torch.where(reset, offsets.expand_as(reset), -1), dim=0).values
            steps = torch.where(restart >= 0, offsets - restart, steps)
        auto = (steps > 0) & (steps % n == 0)
        self._steps = steps[-1] + 1
        return auto if reset is None else (auto | reset)

    def _check(self, obs: torch.Tensor, reset: torch.Tensor | None) -> None:
        if obs.dim() != 3:
            raise ValueError(f"observations must be (batch, {self.num_obs}) or (seq, batch, {self.num_obs}), "
                             f"got shape {tuple(obs.shape)}")
        if obs.shape[-1] != self.num_obs:
            raise ValueError(f"StudentPolicy expects {self.num_obs} observation features (last dim), "
                             f"got {obs.shape[-1]} (shape {tuple(obs.shape)})")
        if obs.dtype != self.initial_hidden_state.dtype:
            raise TypeError(f"observations are {obs.dtype} but the policy is {self.initial_hidden_state.dtype}")
        if reset is not None:
            if reset.dtype != torch.bool or tuple(reset.shape) != tuple(obs.shape[:2]):
                raise ValueError(f"reset must be a bool tensor of shape {tuple(obs.shape[:2])}, "
                                 f"got {reset.dtype} {tuple(reset.shape)}")
        if self.validate_inputs and not torch.isfinite(obs).all():
            raise ValueError("observations contain NaN or inf")

    # ------------------------------------------------------------------ rl-tools parameter names
    def rltools_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters keyed by rl-tools checkpoint names ("0.weights", "1.weights_input", ...)."""
        return {k: self.get_parameter(v) for k, v in RLTOOLS_PARAMETER_NAMES.items()}

    @torch.no_grad()
    def load_rltools_parameters(self, params: dict) -> None:
        """Copy parameters given under rl-tools names (numpy arrays or tensors; dense biases may be 1 x N)."""
        missing = set(RLTOOLS_PARAMETER_NAMES) - set(params)
        if missing:
            raise KeyError(f"missing rl-tools parameters: {sorted(missing)}")
        for name, path in RLTOOLS_PARAMETER_NAMES.items():
            p = self.get_parameter(path)
            value = torch.as_tensor(params[name])
            if value.numel() != p.numel() or (value.dim() == p.dim() and tuple(value.shape) != tuple(p.shape)):
                raise ValueError(f"parameter {name}: expected shape {tuple(p.shape)}, got {tuple(value.shape)}")
            p.copy_(value.reshape(p.shape).to(p.dtype))

    def extra_repr(self) -> str:
        return f"gradient_mode={self.gradient_mode!r}, auto_reset_steps={self.auto_reset_steps}"


class StudentWeights(NamedTuple):
    """A `StudentPolicy`'s parameters as plain tensors (the module's own: gradients reach it), for `policy_step`."""

    w_in: torch.Tensor   # (H, obs)
    b_in: torch.Tensor   # (H,)
    w_ih: torch.Tensor   # (3H, H), gates (r, z, n)
    b_ih: torch.Tensor
    w_hh: torch.Tensor   # (3H, H)
    b_hh: torch.Tensor
    w_out: torch.Tensor  # (A, H)
    b_out: torch.Tensor

    @classmethod
    def of(cls, student: StudentPolicy) -> "StudentWeights":
        g = student.gru
        return cls(student.input_layer.weight, student.input_layer.bias, g.weight_ih_l0, g.bias_ih_l0,
                   g.weight_hh_l0, g.bias_hh_l0, student.output_layer.weight, student.output_layer.bias)


def policy_step(w: StudentWeights, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(action, h')`` of one `StudentPolicy` step from hidden state ``h`` (B, H), pure and differentiable (exact
    autograd), without the module's input checks (which would break a compiled graph): x = relu(W_in o + b_in),
    the GRU cell (`eyas.gru.gru_cell`), action = W_out h' + b_out. The same ops as the module's step-wise
    evaluation, so a flight of it equals a rollout of the module bit for bit."""
    x = torch.relu(nn.functional.linear(obs, w.w_in, w.b_in))
    h_next = gru_cell(nn.functional.linear(x, w.w_ih, w.b_ih), w.w_hh, w.b_hh, h)[0]
    return nn.functional.linear(h_next, w.w_out, w.b_out), h_next
