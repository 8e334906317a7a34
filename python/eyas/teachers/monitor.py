"""What `eyas teacher train` does after every logged PPO iteration (`TrainingMonitor`): deterministic evaluations
(`curve.csv`), the best checkpoint, early stops, progress, and the resume state (`eyas.teachers.resume`)."""
from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eyas.io import atomic_write

from . import resume

from .options import TrainOptions

if TYPE_CHECKING:
    from rsl_rl.runners import OnPolicyRunner


class Stop(Exception):
    """Raised from the per-iteration hook to end `OnPolicyRunner.learn` early."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None


def _write_curve(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


class TrainingMonitor:
    """Deterministic evaluations during training and what they decide: `curve` (rows of `curve.csv`, rewritten
    after each), the best checkpoint (saved as `model_<it>.pt` when `opts.select == "best"`), early stops, and
    the progress bar (or, not quiet, one printed line per evaluation), and after each iteration the resume state."""

    def __init__(self, name: str, runner: OnPolicyRunner, eval_env: Any, out: Path, opts: TrainOptions) -> None:
        self.name, self.runner, self.eval_env, self.out, self.opts = name, runner, eval_env, out, opts
        self.curve: list[dict] = []
        self.best_return = -math.inf
        self.best_iteration: int | None = None
        self.eval_time = 0.0  # seconds spent in evaluate() (not part of rsl_rl's tot_time)
        self.t_start = time.time()
        self.first_iteration = runner.current_learning_iteration  # of this run (after --init_checkpoint's)
        self.bar = _progress(opts.max_iterations, name) if opts.quiet else None

    def state_dict(self) -> dict:
        return {"curve": self.curve, "best_return": self.best_return, "best_iteration": self.best_iteration,
                "eval_time": self.eval_time, "wall_time": self.wall_time(), "first_iteration": self.first_iteration}

    def load_state_dict(self, saved: dict) -> None:
        self.curve, self.best_return, self.best_iteration = saved["curve"], saved["best_return"], saved["best_iteration"]
        self.eval_time, self.first_iteration = saved["eval_time"], saved["first_iteration"]
        self.t_start = time.time() - saved["wall_time"]
        if self.bar is not None:
            self.bar.update(self.runner.current_learning_iteration - self.first_iteration)

    def wall_time(self) -> float:
        return time.time() - self.t_start

    def evaluate(self, it: int) -> dict:
        """Evaluate the current policy (`opts.eval_envs` episodes, episode seed `opts.seed + it`) as iteration `it`;
        appends the row to `curve` and returns it."""
        from .evaluate import evaluate_actor

        runner, logger = self.runner, self.runner.logger
        t0 = time.time()
        policy = runner.alg.get_policy()
        runner.alg.eval_mode()
        try:
            summary = evaluate_actor(lambda obs: policy(obs), self.eval_env, self.opts.eval_envs,
                                     seed=self.opts.seed + it)
        finally:
            runner.alg.train_mode()
        self.eval_time += time.time() - t0
        row = {"iteration": it, "env_steps": logger.tot_timesteps, "train_time_s": round(logger.tot_time, 2),
               "wall_time_s": round(self.wall_time(), 2)} | summary
        self.curve.append(row)
        if self.opts.select == "best" and row["return_mean"] > self.best_return:
            self.best_return, self.best_iteration = row["return_mean"], it
            runner.save(str(self.out / f"model_{it}.pt"))
        if logger.writer is not None:
            for key in ("return_mean", "share_terminated", "final_position_error_mean", "position_error_mean"):
                if not math.isnan(row[key]):
                    logger.writer.add_scalar(f"Eval/{key}", row[key], it)
        _write_curve(self.out / "curve.csv", self.curve)
        return row

    def after_iteration(self, it: int) -> None:
        """`IterationLogger` hook: evaluate every `opts.eval_interval` iterations, report progress, and raise
        `Stop` once an evaluation meets the solved thresholds (`opts.stop_when_solved`) or rsl_rl's training
        time reaches `opts.max_minutes`; otherwise save the resume state (a stopped run's last iteration has none:
        its resume flies it again, and stops again)."""
        opts = self.opts
        row = self.evaluate(it) if opts.eval_interval and (it + 1) % opts.eval_interval == 0 else None
        self._report(it, row)
        if row is not None and opts.stop_when_solved and row["share_terminated"] <= opts.solved_terminated \
                and row["final_position_error_mean"] <= opts.solved_position_error:
            raise Stop("solved")
        if opts.max_minutes is not None and self.runner.logger.tot_time >= 60 * opts.max_minutes:
            raise Stop("time budget")
        resume.save(self.out, resume.capture(self.runner, self.runner.env, self))

    def _report(self, it: int, row: dict | None) -> None:
        if self.bar is None:
            if row is not None:
                print(f"[{self.name}] eval @ it {it}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)
            return
        logger, post = self.runner.logger, {}
        if logger.rewbuffer:
            post["return"] = f"{sum(logger.rewbuffer) / len(logger.rewbuffer):.0f}"
            post["len"] = f"{sum(logger.lenbuffer) / len(logger.lenbuffer):.0f}"
        if self.curve:
            post["eval_term"] = f"{self.curve[-1]['share_terminated']:.3f}"
            post["eval_err"] = f"{self.curve[-1]['final_position_error_mean']:.3f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def selected_iteration(self) -> int:
        """The iteration whose checkpoint is the teacher: the best evaluated one, or (select "last", or no
        evaluation yet) the runner's current one."""
        if self.opts.select == "best" and self.best_iteration is not None:
            return self.best_iteration
        return self.runner.current_learning_iteration

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


