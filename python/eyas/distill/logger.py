"""TensorBoard scalars (rl-tools' tags) and console lines of a distillation run; nothing here decides anything."""
from __future__ import annotations

from pathlib import Path

import torch

STAT_TAGS = (("return_mean", "return/mean"), ("return_std", "return/std"),
             ("episode_length_mean", "episode_length/mean"), ("episode_length_std", "episode_length/std"),
             ("share_terminated", "share_terminated"), ("position_error_mean", "position_error/mean"))


class _NoWriter:
    """What a rank other than 0 logs to under torchrun: nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger:
    """TensorBoard writer in the run directory plus the console (through tqdm, so progress bars stay intact);
    ``enabled=False`` (ranks other than 0): neither."""

    def __init__(self, log_dir: Path, purge_step: int | None = None, enabled: bool = True):
        from torch.utils.tensorboard import SummaryWriter

        self.enabled = enabled
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step) if enabled else _NoWriter()

    def _scalars(self, prefix: str, stats: dict, step: int, tags=STAT_TAGS) -> None:
        for key, tag in tags:
            value = stats.get(key)
            if value is not None and value == value:  # NaN (no such episodes) is left out
                self.writer.add_scalar(f"{prefix}{tag}", value, step)

    def collection(self, epoch: int, summary: dict) -> None:
        """rl-tools logs the collection's returns as its evaluation."""
        self._scalars("evaluation/", summary, epoch)

    def losses(self, first_step: int, losses: list[torch.Tensor], epoch: int, epoch_loss: float) -> list[float]:
        """Every gradient step's loss (read from the device once per epoch) and the epoch's mean; returns the values."""
        values = torch.stack(losses).tolist() if losses else []
        for i, value in enumerate(values):
            self.writer.add_scalar("loss", value, first_step + i)
        self.writer.add_scalar("epoch/loss", epoch_loss, epoch)
        return values

    def evaluation(self, evaluation: dict[str, dict], step: int, prefix: str = "") -> None:
        for name, stats in evaluation.items():
            self._scalars(f"{prefix}{name}/", stats, step)

    def timing(self, row: dict, epoch: int) -> None:
        for key in ("collect_s", "train_s", "eval_s"):
            if key in row:
                self.writer.add_scalar(f"timing/{key}", row[key], epoch)

    def apg_step(self, stats: dict, iteration: int, keys) -> None:
        for key in keys:
            self.writer.add_scalar(f"apg/{key}", stats[key], iteration)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def print(self, text: str) -> None:
        from tqdm import tqdm

        if self.enabled:
            tqdm.write(text, file=None)


def _error(stats: dict) -> str:
    """ position error 6.83 cm", or "" where the env reports none (Isaac Lab tasks)."""
    error = stats.get("position_error_mean")
    return f" position error {100 * error:5.2f} cm" if error is not None and error == error else ""


def epoch_line(row: dict, held_out: dict | None) -> str:
    collected = row["evaluation"]
    return (f"epoch {row['epoch']:4d} {row['actor']:7s} return {collected['return_mean']:7.1f} "
            f"terminated {100 * collected['share_terminated']:5.1f}% | loss {row['loss']:.5f} "
            f"({row['num_batches']} batches) | held-out "
            + (f"{held_out['return_mean']:7.1f} terminated {100 * held_out['share_terminated']:5.1f}%"
               + _error(held_out) if held_out else "-")
            + f" | {row['collect_s']:.1f}s collect {row['train_s']:.1f}s train {row.get('eval_s', 0):.1f}s eval")


def apg_line(row: dict, held_out: dict) -> str:
    return (f"apg {row['iteration']:5d} cost {row['cost']:.4f} imitation {row['imitation']:.5f} "
            f"ended in horizon {100 * row['terminated']:4.1f}% | evaluation return "
            f"{held_out['return_mean']:7.1f} terminated {100 * held_out['share_terminated']:5.1f}%{_error(held_out)} "
            f"({held_out['episodes']} episodes) | {row['train_s']:.1f}s train {row['eval_s']:.1f}s eval")
