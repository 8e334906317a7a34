"""Adam exactly as rl-tools applies it (rl_tools/nn/optimizers/adam, TensorFlow defaults)."""
from __future__ import annotations

import torch


class RLToolsAdam(torch.optim.Optimizer):
    """rl-tools' Adam: m, v as usual; with c1 = 1/(1-β1^t), c2 = 1/(1-β2^t),

        p -= lr · c1 · m / (sqrt(max(c2 · v, eps_sqrt)) + eps)

    ``torch.optim.Adam`` has no ``max(·, eps_sqrt)`` clamp, so the two differ whenever a bias-corrected
    second moment falls below eps_sqrt (1e-7): for small gradients, rl-tools takes much smaller steps.
    Defaults are rl-tools' DEFAULT_PARAMETERS_TENSORFLOW (α would be 1e-3 there; post-training uses 1e-4).
    The bias corrections are computed in the parameter dtype as rl-tools does (``T`` = parameter type).
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7, eps_sqrt: float = 1e-7):
        if lr < 0 or eps < 0 or eps_sqrt < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adam hyper-parameters lr={lr}, betas={betas}, eps={eps}, eps_sqrt={eps_sqrt}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, eps_sqrt=eps_sqrt))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # rl-tools keeps one age per optimizer; we keep it per group (same thing for one group)
            group["step"] = group.get("step", 0) + 1
            age = group["step"]
            for p in params:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                # rl-tools' polyak update: target = β·target + (1-β)·source
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                dtype_one = torch.ones((), dtype=p.dtype, device=p.device)
                c1 = 1 / (1 - torch.pow(dtype_one * beta1, age))
                c2 = 1 / (1 - torch.pow(dtype_one * beta2, age))
                denom = torch.clamp_min(v * c2, group["eps_sqrt"]).sqrt_().add_(group["eps"])
                p.sub_(group["lr"] * c1 * m / denom)
        return loss
