"""Small torch building blocks for reconstructed teacher networks (rsl_rl and rl-tools actors)."""
from __future__ import annotations

import math

import torch
from torch import nn


class Normalize(nn.Module):
    """rsl_rl `EmpiricalNormalization` at inference: `(x - mean) / (std + eps)`."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-2) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().reshape(1, -1).float().clone())
        self.register_buffer("std", std.detach().reshape(1, -1).float().clone())
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + self.eps)


class Standardize(nn.Module):
    """rl-tools `standardize` layer: `(x - mean) * precision`."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().reshape(1, -1).float().clone())
        self.register_buffer("precision", precision.detach().reshape(1, -1).float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.precision


class FastTanh(nn.Module):
    """rl-tools `FAST_TANH`: rational approximation of tanh on x clipped to [-3, 3]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(-3.0, 3.0)
        x2 = x * x
        return x * (27 + x2) / (27 + 9 * x2)


class RLToolsGELU(nn.Module):
    """rl-tools `GELU`: 0.5 x (1 + tanh(a (x + 0.044715 x^3))) with rl-tools' constant a = 0.5 sqrt(2/pi)."""

    A = 2.0 / math.sqrt(math.pi) * math.sqrt(0.5) * 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x + x * torch.tanh(self.A * (0.044715 * x * x * x + x)))


class SquashedMean(nn.Module):
    """Deterministic rl-tools `sample_and_squash`: tanh of the first half (the mean) of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x[..., : x.shape[-1] // 2])


class TakeFirst(nn.Module):
    """Keep the first `n` output columns (the mean of a heteroscedastic Gaussian head)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.n]


def rsl_rl_activation(name: str) -> nn.Module:
    """The torch module rsl_rl uses for activation `name` (same names as `rsl_rl.utils.resolve_nn_activation`)."""
    table = {
        "elu": nn.ELU, "selu": nn.SELU, "relu": nn.ReLU, "crelu": nn.CELU, "lrelu": nn.LeakyReLU,
        "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "gelu": nn.GELU,
        "swish": nn.SiLU, "mish": nn.Mish, "identity": nn.Identity,
    }
    key = name.lower()
    if key not in table:
        raise ValueError(f"unknown rsl_rl activation {name!r}; known: {sorted(table)}")
    return table[key]()


def rltools_activation(name: str) -> nn.Module:
    """The torch module for rl-tools activation string `name` (IDENTITY, RELU, GELU, TANH, FAST_TANH, SIGMOID)."""
    table = {
        "IDENTITY": nn.Identity, "RELU": nn.ReLU, "GELU": RLToolsGELU, "TANH": nn.Tanh,
        "FAST_TANH": FastTanh, "SIGMOID": nn.Sigmoid,
    }
    if name not in table:
        raise ValueError(f"unknown rl-tools activation {name!r}; known: {sorted(table)}")
    return table[name]()


def linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An `nn.Linear` holding copies of `weight [out, in]` and `bias [out]`."""
    out_dim, in_dim = weight.shape
    layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        layer.bias.copy_(bias.reshape(-1).float())
    return layer
