"""What a distillation run has done (`RunState`): the part of state.pt every rank shares, read by the phases and
the report."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from eyas.distill.finetune import FineTuneState


@dataclass
class RunState:
    epoch: int = -1  # the last complete epoch
    best: dict = field(default_factory=lambda: {"return": None, "epoch": None, "student": None})  # rl-tools' best
    history: list = field(default_factory=list)  # one row per epoch
    loss_steps: list = field(default_factory=list)
    offsets: Any = None  # the teachers' steady-state position offsets
    teacher_eval: dict | None = None  # rl-tools' teacher evaluation (and RAPTOR's on the per-epoch episodes)
    gradient_steps: int = 0
    finetune: FineTuneState | None = None
    final_student: dict | None = None  # the last student's weights (the APG phase's last evaluated policy)

    def distilled_actor(self, last: dict) -> tuple[dict, int, str]:
        """Weights, epoch and selection rule of rl-tools' best actor (the student of the best DAgger collection);
        ``last``: the distillation's last student, chosen when no DAgger epoch ran."""
        if self.best["student"] is not None:
            return self.best["student"], self.best["epoch"], "best collection return"
        if not self.history:
            return last, -1, "the starting student (--init_student, no epoch ran)"
        return last, len(self.history) - 1, "last (no DAgger epoch ran)"

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "best": self.best, "history": self.history, "loss_steps": self.loss_steps,
                "offsets": self.offsets, "teacher_eval": self.teacher_eval, "gradient_steps": self.gradient_steps,
                "apg": None if self.finetune is None else self.finetune.to_dict()}

    @classmethod
    def from_dict(cls, saved: dict, device: torch.device) -> "RunState":
        best = dict(saved["best"])
        if best.get("student") is not None:
            best["student"] = {k: v.to(device) for k, v in best["student"].items()}
        apg = saved.get("apg")
        return cls(int(saved["epoch"]), best, saved["history"], saved["loss_steps"], saved["offsets"],
                   saved["teacher_eval"], int(saved.get("gradient_steps", 0)),
                   FineTuneState.from_dict(apg) if apg and "reference" in apg else None)
