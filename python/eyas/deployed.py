"""The student as a self-contained inference module for TorchScript (policy.pt) and ONNX (policy.onnx).

The GRU is written with plain operations (MatMul, Sigmoid, Tanh, Mul, Add), so an ONNX graph holds no GRU
node and cannot hit the ``linear_before_reset`` pitfall: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
the PyTorch / rl-tools form. ``step(obs, h)`` is pure; ``forward(obs)`` steps a stored state, which
``reset()`` returns to the learned initial hidden state (not zeros)."""
from __future__ import annotations

import torch
from torch import nn

from eyas.model import StudentPolicy


class DeployedPolicy(nn.Module):
    """Inference-only copy of a StudentPolicy (float32). ``hidden`` is (1, batch, hidden_dim)."""

    def __init__(self, student: StudentPolicy, io_contract: str = "{}",
                 example_input: torch.Tensor | None = None, example_output: torch.Tensor | None = None):
        super().__init__()
        p = {k: v.detach().to("cpu", torch.float32).clone() for k, v in student.rltools_parameters().items()}
        self.hidden_dim = int(student.hidden_dim)
        self.num_obs = int(student.num_obs)
        self.num_actions = int(student.num_actions)
        self.io_contract = io_contract  # JSON: observation layout, action range, motor order, period, h0
        for name, key in (("w0", "0.weights"), ("b0", "0.biases"), ("w_ih", "1.weights_input"),
                          ("b_ih", "1.biases_input"), ("w_hh", "1.weights_hidden"), ("b_hh", "1.biases_hidden"),
                          ("w2", "2.weights"), ("b2", "2.biases")):
            self.register_buffer(name, p[key].reshape(p[key].shape[0], -1) if name.startswith("w")
                                 else p[key].reshape(-1))
        h0 = p["1.initial_hidden_state"].reshape(1, 1, -1)
        self.register_buffer("initial_hidden_state", h0.clone())
        self.register_buffer("hidden", h0.clone())
        empty = torch.zeros(0)
        self.register_buffer("example_input", empty if example_input is None else example_input.float().clone())
        self.register_buffer("example_output", empty if example_output is None else example_output.float().clone())

    def step(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One control step: obs (B, num_obs), h (1, B, hidden) -> actions (B, num_actions), h' (1, B, hidden)."""
        hd = self.hidden_dim
        x = torch.relu(torch.matmul(obs, self.w0.t()) + self.b0)
        gi = torch.matmul(x, self.w_ih.t()) + self.b_ih
        hp = h[0]
        gh = torch.matmul(hp, self.w_hh.t()) + self.b_hh
        r = torch.sigmoid(gi[:, :hd] + gh[:, :hd])
        z = torch.sigmoid(gi[:, hd:2 * hd] + gh[:, hd:2 * hd])
        n = torch.tanh(gi[:, 2 * hd:] + r * gh[:, 2 * hd:])
        hn = (1.0 - z) * n + z * hp
        return torch.matmul(hn, self.w2.t()) + self.b2, hn.unsqueeze(0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Step the stored state (a new batch size starts from the initial state)."""
        if self.hidden.shape[1] != obs.shape[0]:
            self.reset(obs.shape[0])
        actions, h = self.step(obs, self.hidden)
        self.hidden = h
        return actions

    @torch.jit.export
    def reset(self, batch_size: int = 1) -> None:
        """Back to the learned initial hidden state for ``batch_size`` rows."""
        self.hidden = self.initial_hidden_state.expand(1, batch_size, self.hidden_dim).clone()

    @torch.jit.export
    def initial_state(self, batch_size: int = 1) -> torch.Tensor:
        """The state to feed ``step`` (and ONNX ``h_in``) at an episode start: (1, batch_size, hidden)."""
        return self.initial_hidden_state.expand(1, batch_size, self.hidden_dim).clone()


class OnnxStep(nn.Module):
    """``(obs, h_in) -> (actions, h_out)``: the graph exported to ONNX."""

    def __init__(self, deployed: DeployedPolicy):
        super().__init__()
        self.deployed = deployed

    def forward(self, obs: torch.Tensor, h_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deployed.step(obs, h_in)
