"""The distillation update (rsl_rl `Distillation`-style): the student imitates teacher actions on stored episodes.

One training step is rl-tools' post-training step (src/foundation_policy/post_training/main.cpp):

    forward(actor, batch_input, ResetMode(batch_reset))    # every row starts at the initial hidden state
    d_output = mse::gradient(output, target)              # 2 (a - b) / N over all S * B * A elements
    loss     = mse::evaluate(output, target)              # mean over all elements
    zero_gradient; backward; step(Adam)                   # TensorFlow defaults, alpha 1e-4, eps_sqrt clamp

`parity_tests/test_trainer_step.py` checks it against the compiled rl-tools chain.

Under torchrun (``world``, `eyas.distill.distributed`) each rank holds its own episodes and takes ``batch_size``
rows from them per step (the runner passes batch_size / N); the gradients are averaged over ranks before Adam, and
every rank takes as many steps as the rank with the fewest batches, so all ranks step together.
"""
from __future__ import annotations

from itertools import islice

import torch

from eyas.distill.dataset import Batch, EpisodeDataset
from eyas.distill.distributed import World
from eyas.model import StudentPolicy
from eyas.optim import RLToolsAdam


class Distillation:
    """Behaviour cloning / DAgger update of a `StudentPolicy` on an `EpisodeDataset`."""

    def __init__(self, student: StudentPolicy, *, learning_rate: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7, eps_sqrt: float = 1e-7, batch_size: int = 64, sequence_length: int = 500,
                 shuffle: bool = True, device: torch.device | str = "cpu", world: World = World()):
        self.device, self.world = torch.device(device), world
        self.student = student.to(self.device)
        world.broadcast_parameters(self.student)  # every rank starts from rank 0's student
        self.learning_rate = float(learning_rate)
        self.optimizer = RLToolsAdam(self.student.parameters(), lr=learning_rate, betas=betas, eps=eps, eps_sqrt=eps_sqrt)
        self.batch_size = int(batch_size)
        self.sequence_length = int(sequence_length)
        self.shuffle = bool(shuffle)
        self.num_updates = 0  # gradient steps taken so far

    def predict(self, batch: Batch) -> torch.Tensor:
        """The student's actions on ``batch``, shaped like its targets; every row starts from the initial state."""
        obs = batch.observations.to(self.device)
        if obs.dim() == 2:  # sequence_length 1: each sample is one step from the initial state
            actions, _ = self.student.act(obs.unsqueeze(0))
            return actions.squeeze(0)
        reset = None if batch.reset is None else batch.reset.to(self.device)
        actions, _ = self.student.act(obs, None, reset)
        return actions

    def loss(self, batch: Batch) -> torch.Tensor:
        """rl-tools' MSE of the student's actions on ``batch``."""
        return torch.nn.functional.mse_loss(self.predict(batch), batch.targets.to(self.device))

    def train_step(self, batch: Batch) -> torch.Tensor:
        """Forward, MSE, backward, Adam; returns the (detached) loss before the step."""
        self.student.train()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.world.average_gradients(self.student.parameters())
        self.optimizer.step()
        self.num_updates += 1
        return loss.detach()

    def update(self, dataset: EpisodeDataset, generator: torch.Generator | None = None, callback=None) -> dict:
        """One pass over ``dataset`` in rl-tools' batches; ``callback(step_index, loss)`` for each step, after the
        pass. Returns ``{"loss": mean loss, "num_batches": n}`` (loss NaN when the dataset holds less than a batch;
        under torchrun the losses are the means over ranks, and n the fewest batches of any rank)."""
        count = self.world.min(dataset.num_batches(self.batch_size, self.sequence_length))
        if count == 0:
            return {"loss": float("nan"), "num_batches": 0}
        batches = dataset.get_batches(self.batch_size, self.sequence_length, self.shuffle, generator)
        losses = [self.train_step(batch) for batch in islice(batches, count)]
        if self.world.distributed:  # one exchange per pass: every step's loss over all ranks' rows
            losses = list(self.world.mean(torch.stack(losses)).unbind())
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, loss in enumerate(losses):
            total += loss.double()
            if callback is not None:
                callback(self.num_updates - count + i + 1, loss)
        return {"loss": float(total) / count, "num_batches": count}

    def state_dict(self) -> dict:
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
