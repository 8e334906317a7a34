"""`DistillationRunner`: rl-tools' post-training loop (src/foundation_policy/post_training/main.cpp) in PyTorch.

    setup   load teachers; estimate each teacher's steady-state position offset and check it is solved
            (mean return >= min_teacher_return, rl-tools' SOLVED_RETURN = 300)
    epoch   collect   ON_POLICY: clear the dataset; num_episodes episodes per teacher, the teacher flying for the
                      first epoch_teacher_forcing epochs, the student afterwards (DAgger); teachers label every step
            pick best from the first DAgger epoch on, the student that flew is the best actor if its mean
                      collection return over teachers is the highest so far (rl-tools logs it as "evaluation")
            update    one pass over the dataset in rl-tools' batches (shuffled episodes packed into batch_size rows
                      of sequence_length steps): MSE, rl-tools' Adam
            evaluate  held-out randomised dynamics and registry models (`eyas.distill.evaluation`)
            save      checkpoint (PyTorch + rl-tools HDF5) and the run state
    apg     optional (``apg.iterations`` > 0, not rl-tools): fine-tune the best actor by backpropagating flights
            through the differentiable simulator (`eyas.distill.apg`), evaluating every ``apg.eval_every`` steps
            (the weights' moving average with ``apg.average_decay``); the best by `accepts` becomes the best actor
    end     save the best actor; evaluate it; plots (`eyas.distill.report`)

Everything random comes from one CPU `torch.Generator` (saved with each epoch), so `resume` continues a run as if it
had not stopped (on the same device and thread count). Under torchrun every rank runs this loop on its share of the
work (`eyas.distill.distributed`: one generator per rank, gradients averaged, statistics gathered) and rank 0
alone touches the run directory.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from eyas.distill import checkpoint
from eyas.distill.apg import STATS as APG_STATS
from eyas.distill.apg import AnalyticPolicyGradient
from eyas.distill.collect import check_teachers_against_env, collect, evaluate_teachers
from eyas.distill.config import DistillConfig, is_embedded, resolve_device, resolve_task
from eyas.distill.dataset import DatasetPlan, DistillationError, episodes_per_teacher
from eyas.distill.distributed import World
from eyas.distill.evaluation import NEW_BEST, Evaluator, TaskEvaluator, accepts, raptor_policy
from eyas.distill.logger import RunLogger, apg_line, epoch_line
from eyas.distill.trainer import Distillation
from eyas.io import atomic_write_json
from eyas.model import StudentPolicy
from eyas.sim import MODEL_NAMES
from eyas.teachers import Block, TeacherBank, TeacherError, load_teachers

STALL_EPOCHS = 3  # DAgger epochs in a row without one batch of data before an on-policy run gives up


def detached(student: torch.nn.Module) -> dict:
    return detached_dict(student.state_dict())


class DistillationRunner:
    """Runs `DistillConfig` end to end: ``__init__`` builds (or, with ``resume``, restores) everything the run
    holds; ``run()`` evaluates the teachers (a new run), flies the epochs and the APG phase, and returns the final
    summary (also in summary.json; None on ranks other than 0 under torchrun)."""

    def __init__(self, cfg: DistillConfig, teachers: list | None = None, resume: bool = False, progress: bool = True,
                 world: World | None = None):
        cfg.validate()
        cfg = cfg.with_absolute_paths()
        self.world = world or World.current()
        self.cfg, self.resume, self.log_dir = cfg, resume, Path(cfg.log_dir)
        self.progress = progress and self.world.is_main
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        self.device = self.world.device(resolve_device(cfg.device))
        self.env_cfg = resolve_task(cfg.task, cfg.env_backend, num_envs=cfg.collection.num_envs, device=self.device,
                                    seed=cfg.seed, packages=cfg.isaaclab_packages)
        self.embedded = is_embedded(self.env_cfg)
        self.world.from_main(self._check_log_dir)
        self.bank = TeacherBank(self._teachers(teachers), self.device)
        self.init_weights = (checkpoint.load_init_student(cfg.training.init_student, self.num_obs, self.num_actions,
                                                          cfg.training.hidden_dim)
                             if cfg.training.init_student else None)
        self.generator = torch.Generator().manual_seed(self.world.rank_seed(cfg.seed))
        t = cfg.training
        self.trainer = Distillation(self.new_student(), learning_rate=t.learning_rate,
                                    batch_size=t.batch_size // self.world.size, sequence_length=t.sequence_length,
                                    shuffle=t.shuffle, device=self.device, world=self.world)
        self.part = self.world.part(Block(0, len(self.bank), self.num_episodes))  # this rank's collection
        self.dataset = self._plan(self.part).allocate(self.num_obs, self.num_actions, self.device)
        self.best = {"return": None, "epoch": None, "student": None}  # rl-tools' best actor (collection return)
        self.history, self.loss_steps = [], []
        self.apg_state = None  # the APG phase: {"trainer", "best", "history"}
        self.apg_student = None
        self.idle_epochs = 0  # DAgger epochs in a row without a training step
        self.offsets = self.teacher_eval = None  # rl-tools' teacher evaluation: the first thing `run` flies
        self.start_epoch = self._restore(*self._load_state()) if resume else 0
        e = cfg.evaluation
        self.eval_models = list(e.eval_models) if e.eval_models is not None else list(MODEL_NAMES)
        self.evaluator = self.make_evaluator(e.eval_episodes, e.eval_registry_episodes, seed=cfg.seed + 1_000_003,
                                             world=self.world)

    # ------------------------------------------------------------------ building
    def _check_log_dir(self) -> None:
        if self.resume and not checkpoint.has_run_state(self.log_dir):
            raise DistillationError(f"--resume: no complete epoch in {self.log_dir} (missing {checkpoint.STATE})")
        if not self.resume and checkpoint.has_run_state(self.log_dir):
            raise DistillationError(f"{self.log_dir} already holds a run; pass --resume to continue it or choose "
                                    f"another --log_dir")

    def _teachers(self, teachers: list | None) -> list:
        """The teachers, checked against the env (which also gives the student's widths and the episode length)."""
        c = self.cfg
        if teachers is None:
            if not c.teacher_checkpoint:
                raise DistillationError("no teachers: pass --teacher_checkpoint FILE_OR_DIR [...]")
            try:
                teachers = load_teachers(c.teacher_checkpoint, self.device)
            except TeacherError as e:
                raise DistillationError(str(e)) from e
        if not self.embedded:  # l2f's motor commands live in [-1, 1]; other tasks take the mean unclipped, as rsl_rl
            for t in teachers:
                if hasattr(t, "action_clip") and not getattr(t, "is_recurrent", False):
                    t.action_clip = None
        from eyas.envs import PointControlEnv

        probe = (PointControlEnv(dataclasses.replace(self.env_cfg, num_envs=1, device=str(self.device)))
                 if self.embedded else self.env_cfg.episodes(1))
        check_teachers_against_env(teachers, probe)
        self.num_obs, self.num_actions = probe.num_obs, probe.num_actions
        self.max_episode_length = int(probe.max_episode_length)
        c.apg.check_horizon(self.max_episode_length)
        if c.apg.iterations > 0 and not self.embedded:
            raise DistillationError("--apg_iterations needs the embedded l2f env: APG differentiates through its "
                                    "simulator, which an Isaac Lab task does not expose")
        self._choose_episodes(len(teachers))
        self._check_batch_fits(len(teachers))
        return teachers

    def _choose_episodes(self, num_teachers: int) -> None:
        """Episodes per teacher and epoch (`episodes_per_teacher`'s rule), said once when it is not --num_episodes."""
        c, t = self.cfg.collection, self.cfg.training
        self.num_episodes = episodes_per_teacher(c.num_episodes, c.num_envs, num_teachers, self.max_episode_length,
                                                 t.batch_size * t.sequence_length, c.on_policy)
        if self.num_episodes != c.num_episodes and t.n_epochs > 0 and self.world.is_main:
            print(f"eyas distill: {self.num_episodes} episodes per teacher and epoch ({num_teachers} teacher"
                  f"{'s' if num_teachers != 1 else ''}, --num_episodes {c.num_episodes}): raised so that all "
                  f"{c.num_envs} parallel envs fly"
                  + (f" and an epoch holds more than one batch of {t.batch_size} x {t.sequence_length} steps"
                     if c.on_policy else "") + " (docs/distillation.md, Flags)", flush=True)

    def _plan(self, part: Block) -> DatasetPlan:
        """The dataset of ``part`` (this rank's teachers x episodes; one process: all of them)."""
        c = self.cfg.collection
        return DatasetPlan.for_run(part.count, part.per_teacher, self.max_episode_length, on_policy=c.on_policy,
                                   n_epochs=max(1, self.cfg.training.n_epochs), max_dataset_steps=c.max_dataset_steps)

    def _check_batch_fits(self, num_teachers: int) -> None:
        c, t, n = self.cfg.collection, self.cfg.training, self.world.size
        if t.n_epochs == 0:  # APG only: no dataset is ever filled
            return
        if t.batch_size % n:
            raise DistillationError(f"--batch_size {t.batch_size} is not a multiple of the {n} ranks (each rank "
                                    f"trains on batch_size / ranks of the rows of every batch)")
        part = min(self.world.parts(Block(0, num_teachers, self.num_episodes)), key=lambda b: b.rows)
        plan = self._plan(part)
        per_epoch = plan.per_epoch_steps
        available = plan.capacity if c.on_policy else min(plan.capacity, per_epoch * t.n_epochs)
        need = t.batch_size // n * t.sequence_length
        if available <= need:
            raise DistillationError(
                f"--batch_size {t.batch_size}{f' / {n} ranks' if n > 1 else ''} x --sequence_length "
                f"{t.sequence_length} = {need} steps per batch, but the dataset{' of a rank' if n > 1 else ''} can "
                f"hold at most {available} steps ({part.count} teachers x {part.per_teacher} episodes "
                f"x {self.max_episode_length} steps{'' if c.on_policy else ' x epochs'}); rl-tools needs more than one "
                f"batch of data. Lower --batch_size / --sequence_length or raise --num_episodes.")
        if c.max_dataset_steps is not None and not c.on_policy and c.max_dataset_steps < per_epoch:
            raise DistillationError(f"--max_dataset_steps {c.max_dataset_steps} is smaller than one epoch's data "
                                    f"({per_epoch} steps)")

    def new_student(self) -> StudentPolicy:
        """A student as rl-tools initialises it (seeded), or from ``init_student``."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        student = StudentPolicy(self.num_obs, self.num_actions, self.cfg.training.hidden_dim,
                                gradient_mode=self.cfg.training.gradient_mode, generator=g)
        if self.init_weights is not None:
            student.load_state_dict(self.init_weights)
        return student.to(self.device)

    def make_evaluator(self, episodes: int, per_model: int, seed: int, world: World = World()):
        """The held-out evaluation (``world``: split over the ranks; by default this process flies all of it)."""
        if not self.embedded:
            return TaskEvaluator(self.env_cfg, episodes=episodes, world=world)
        return Evaluator(self.env_cfg, randomized=episodes, per_model=per_model, models=self.eval_models, seed=seed,
                         device=self.device, world=world)

    def _setup_teachers(self) -> None:
        c = self.cfg.collection
        threshold = c.min_teacher_return if c.min_teacher_return is not None else (300.0 if self.embedded else None)
        self.offsets, self.teacher_eval = evaluate_teachers(
            self.bank, self.env_cfg, num_episodes=c.offset_episodes, num_envs=c.num_envs, generator=self.generator,
            device=self.device, window=tuple(c.offset_window) if self.embedded else None, min_return=threshold,
            world=self.world)
        raptor = raptor_policy(self.embedded, self.num_obs, self.num_actions, self.device)
        # the reference row of every per-epoch evaluation (the same episodes): plots and history.json
        self.teacher_eval["raptor_eval"] = self.evaluator(raptor) if raptor is not None else None

    # ------------------------------------------------------------------ run state
    def _save_state(self, epoch: int) -> None:
        """state.pt on rank 0: what every rank shares, and each rank's own part (its generator, an aggregating
        run's episodes), gathered under "ranks" when there are several."""
        state = {"epoch": epoch, "config": self.cfg.to_dict(), "trainer": self.trainer.state_dict(),
                 "best": self.best, "history": self.history,
                 "loss_steps": self.loss_steps, "offsets": self.offsets, "teacher_eval": self.teacher_eval,
                 "teachers": [getattr(t, "source", "") for t in self.bank.teachers]}
        own = {"generator": self.generator.get_state()}
        if not self.cfg.collection.on_policy:
            own["dataset"] = self.dataset.state_dict()
        if self.apg_state is not None:
            state["apg"] = self.apg_state
        ranks = self.world.gather(own)
        if self.world.is_main:
            state |= {"world_size": self.world.size, "ranks": ranks} if self.world.distributed else own
            checkpoint.save_run_state(self.log_dir, state)

    def _load_state(self) -> tuple[dict, dict]:
        """state.pt, read by rank 0: (the shared state, on every rank; this rank's own part)."""
        own = {}

        def read() -> dict:
            state = checkpoint.load_run_state(self.log_dir)
            if state.get("world_size", 1) != self.world.size:
                raise DistillationError(f"--resume: the run in {self.log_dir} ran on {state.get('world_size', 1)} "
                                        f"rank(s), this launch has {self.world.size}; resume it with as many")
            own["ranks"] = state.pop("ranks", None) or [{k: state.pop(k) for k in ("generator", "dataset")
                                                         if k in state}]
            return state
        state = self.world.from_main(read)
        return state, self.world.scatter(own.get("ranks"))

    def _restore(self, state: dict, own: dict) -> int:
        """Continue from ``state`` (state.pt) and this rank's ``own`` part after checking it is this run's;
        returns the next epoch."""
        checkpoint.check_resumable(state, self.cfg, self.log_dir, [getattr(t, "source", "") for t in self.bank.teachers])
        self.trainer.load_state_dict(state["trainer"])
        self.generator.set_state(own["generator"])
        self.best = state["best"]
        if self.best.get("student") is not None:
            self.best["student"] = {k: v.to(self.device) for k, v in self.best["student"].items()}
        self.history, self.loss_steps = state["history"], state["loss_steps"]
        self.offsets, self.teacher_eval = state["offsets"], state["teacher_eval"]
        if "dataset" in own:
            self.dataset.load_state_dict(own["dataset"])
        self.apg_state = state.get("apg")
        return int(state["epoch"]) + 1

    def save_actor(self, student: StudentPolicy, directory: Path, stem: str, meta: dict) -> None:
        if not self.world.is_main:  # rank 0 alone writes
            return
        checkpoint.save_actor(student, directory, stem, meta, checkpoint.actor_environment(self.embedded,
                                                                                           self.cfg.task))

    # ------------------------------------------------------------------ the epochs
    def run(self) -> dict | None:
        if self.teacher_eval is None:
            self._setup_teachers()  # validates every teacher before anything is written
        locks = []  # one writer per run directory: rank 0 holds the lock
        self.world.from_main(lambda: locks.append(checkpoint.RunLock(self.log_dir)))
        try:
            return self._run()
        finally:
            for lock in locks:
                lock.release()

    def _check_fresh(self) -> None:
        if not self.resume and checkpoint.has_run_state(self.log_dir):  # another run got here first
            raise DistillationError(f"{self.log_dir} already holds a run; pass --resume to continue it")

    def _run(self) -> dict | None:
        from eyas.distill.report import finish

        self.world.from_main(self._check_fresh)
        main = self.world.is_main
        logger = RunLogger(self.log_dir, purge_step=self.trainer.num_updates if self.resume else None, enabled=main)
        if main:
            atomic_write_json(self.log_dir / "config.json", self.cfg.to_dict())
        for epoch in self._progress(range(self.start_epoch, self.cfg.training.n_epochs), "distill",
                                    self.start_epoch, self.cfg.training.n_epochs):
            row = self._collect(epoch, logger)
            self._pick_best(epoch, row)
            self._update(epoch, row, logger)
            self._evaluate(epoch, row, logger)
            self._save(epoch, row)
            logger.timing(row, epoch)
            logger.flush()
            logger.print(epoch_line(row, row.get("eval", {}).get(self.evaluator.held_out)))
        if self.cfg.apg.iterations > 0:
            self._run_apg(logger)
        logger.close()
        return finish(self) if main else None  # the final evaluation and files: rank 0, once

    def _progress(self, iterable, desc: str, initial: int, total: int):
        from tqdm import tqdm

        return tqdm(iterable, initial=initial, total=total, desc=desc, dynamic_ncols=True,
                    disable=True if not self.progress else None)  # None: off when not a TTY

    def _collect(self, epoch: int, logger: RunLogger) -> dict:
        c = self.cfg.collection
        row = {"epoch": epoch}
        teacher_forcing = epoch < c.epoch_teacher_forcing
        if c.on_policy:
            self.dataset.clear()
        else:
            excess = self.dataset.num_steps + self._plan(self.part).per_epoch_steps - self.dataset.capacity
            if excess > 0:  # room for this epoch's episodes at their longest
                row["dropped_steps"] = self.dataset.drop_oldest(excess)
        t0 = time.perf_counter()
        self.trainer.student.eval()
        stats = collect(self.bank, self.env_cfg, num_episodes=self.num_episodes, num_envs=c.num_envs,
                        generator=self.generator, device=self.device,
                        student=None if teacher_forcing else self.trainer.student,
                        position_offsets=self.offsets if c.position_offset_correction and self.embedded else None,
                        dataset=self.dataset, world=self.world)
        row["collect_s"] = time.perf_counter() - t0
        row["actor"] = "teacher" if teacher_forcing else "student"
        row["dataset_steps"], row["dataset_episodes"] = self.dataset.num_steps, self.dataset.num_episodes
        row["evaluation"] = stats.summary()
        logger.collection(epoch, row["evaluation"])
        return row

    def _pick_best(self, epoch: int, row: dict) -> None:
        collected = row["evaluation"]["return_mean"]
        if row["actor"] == "student" and (self.best["return"] is None or collected > self.best["return"]):
            self.best = {"return": collected, "epoch": epoch, "student": detached(self.trainer.student)}

    def _update(self, epoch: int, row: dict, logger: RunLogger) -> None:
        t0 = time.perf_counter()
        step_losses = []  # kept on the device: reading each one would synchronise a GPU every step
        result = self.trainer.update(self.dataset, self.generator, lambda step, loss: step_losses.append(loss))
        first_step = self.trainer.num_updates - len(step_losses) + 1
        self.loss_steps.extend(logger.losses(first_step, step_losses, epoch, result["loss"]))
        row["train_s"] = time.perf_counter() - t0
        row["loss"], row["num_batches"] = result["loss"], result["num_batches"]
        row["gradient_steps"] = self.trainer.num_updates
        self.idle_epochs = self.idle_epochs + 1 if result["num_batches"] == 0 else 0
        if result["num_batches"]:
            return
        t, c = self.cfg.training, self.cfg.collection
        logger.print(f"epoch {epoch}: the dataset ({self.dataset.num_steps} steps) holds less than one batch; "
                     f"no training step")
        if c.on_policy and row["actor"] == "student" and self.idle_epochs >= STALL_EPOCHS:
            raise DistillationError(
                f"training stalled: {self.idle_epochs} DAgger epochs in a row collected fewer steps than one batch "
                f"({self.dataset.num_steps} < {t.batch_size} x {t.sequence_length}; the student's episodes "
                f"end early). rl-tools' settings assume ~1000 teachers; with few teachers raise "
                f"--num_episodes or --epoch_teacher_forcing, shorten --sequence_length, or use --on_policy false. "
                f"Checkpoints up to epoch {epoch - 1} are complete.")

    def _last_epoch(self, epoch: int, every: int) -> bool:
        return (epoch + 1) % every == 0 or epoch == self.cfg.training.n_epochs - 1

    def _evaluate(self, epoch: int, row: dict, logger: RunLogger) -> None:
        if not self._last_epoch(epoch, self.cfg.evaluation.eval_every):
            return
        t0 = time.perf_counter()
        self.trainer.student.eval()
        row["eval"] = self.evaluator(self.trainer.student)
        row["eval_s"] = time.perf_counter() - t0
        logger.evaluation(row["eval"], epoch)

    def _save(self, epoch: int, row: dict) -> None:
        """Every ``checkpoint_every`` epochs and at the last: the actor and the run state ``--resume`` continues from
        (an aggregating run's state holds its whole dataset: ~0.1 s to write at the main job's 400,000 steps)."""
        self.history.append(row)
        if self._last_epoch(epoch, self.cfg.checkpoint_every):
            self.save_actor(self.trainer.student, self.log_dir / "checkpoints" / str(epoch), "actor",
                            {"epoch": epoch, "gradient_steps": self.trainer.num_updates})
            self._save_state(epoch)

    # ------------------------------------------------------------------ APG
    def distilled_actor(self) -> tuple[dict, int, str]:
        """Weights, epoch and selection rule of rl-tools' best actor (the student of the best DAgger collection)."""
        if self.best["student"] is not None:
            return self.best["student"], self.best["epoch"], "best collection return"
        # only teacher-forcing epochs ran (or none: APG on --init_student): no student was flown, keep the last one
        if not self.history:
            return self.trainer.student.state_dict(), -1, "the starting student (--init_student, no epoch ran)"
        return self.trainer.student.state_dict(), len(self.history) - 1, "last (no DAgger epoch ran)"

    def _run_apg(self, logger: RunLogger) -> None:
        """APG fine-tuning of the distilled best actor, evaluated every ``apg.eval_every`` iterations on fixed
        randomised dynamics and registry models (RAPTOR once on the same episodes, the rule's reference); the best
        by `accepts` is kept."""
        a = self.cfg.apg
        evaluator = Evaluator(self.env_cfg, randomized=a.eval_episodes,
                              per_model=self.cfg.evaluation.eval_registry_episodes, models=self.eval_models,
                              seed=self.cfg.seed + 1_000_003, device=self.device, world=self.world)
        raptor = raptor_policy(self.embedded, self.num_obs, self.num_actions, self.device)
        reference = evaluator(raptor) if raptor is not None else None  # the rule's yardstick, the same episodes
        student = self.new_student()
        apg = AnalyticPolicyGradient(student, self.bank, self.env_cfg, a, generator=self.generator, device=self.device,
                                     world=self.world)
        if self.apg_state is None:
            student.load_state_dict(detached_dict(self.distilled_actor()[0]))
            student.eval()
            first = apg_row(0, evaluator(student, per_episode=True), [], 0.0)
            self.apg_state = {"history": [first], "best": {"iteration": 0, "student": detached(student),
                                                           "return": first["eval"][evaluator.held_out]["return_mean"]}}
        else:
            apg.load_state_dict(self.apg_state["trainer"])
        t0, window = time.perf_counter(), []
        for _ in self._progress(range(apg.iteration, a.iterations), "apg", apg.iteration, a.iterations):
            window.append(apg.update())
            logger.apg_step(window[-1], apg.iteration, APG_STATS)
            if apg.iteration % a.eval_every and apg.iteration < a.iterations:
                continue
            train_s, t1 = time.perf_counter() - t0, time.perf_counter()
            evaluated = apg.evaluated.eval()  # the student, or its weights' moving average (--apg_average_decay)
            row = apg_row(apg.iteration, evaluator(evaluated, per_episode=True), window, train_s,
                          time.perf_counter() - t1)
            window, t0 = [], time.perf_counter()
            logger.evaluation(row["eval"], apg.iteration, prefix="apg/")
            held_out = row["eval"][evaluator.held_out]
            # every evaluation accepted so far, the best last (the first row: the distilled actor)
            accepted_evals = [r["eval"] for r in self.apg_state["history"]
                              if r["iteration"] == 0 or r.get("selection") == NEW_BEST]
            accepted, why = accepts(row["eval"], accepted_evals, evaluator.held_out, reference)
            row["selection"] = why
            if accepted:
                self.apg_state["best"] = {"iteration": apg.iteration, "return": held_out["return_mean"],
                                          "student": detached(evaluated)}
            self.save_actor(evaluated, self.log_dir / "checkpoints" / f"apg_{apg.iteration}", "actor",
                            {"apg_iteration": apg.iteration})
            self.apg_state["history"].append(row)
            self.apg_state["trainer"] = apg.state_dict()
            self._save_state(len(self.history) - 1)
            logger.flush()
            logger.print(apg_line(row, held_out) + f" | {why}")
        self.apg_student = apg.evaluated


def detached_dict(weights: dict) -> dict:
    return {k: v.detach().clone() for k, v in weights.items()}


def apg_row(iteration: int, evaluation: dict, window: list, train_s: float, eval_s: float = 0.0) -> dict:
    """One row of the APG history: evaluation, and the mean training statistics since the previous row."""
    mean = {k: (sum(w[k] for w in window) / len(window) if window else None) for k in APG_STATS}
    return {"iteration": iteration, "eval": evaluation, **mean, "train_s": train_s, "eval_s": eval_s,
            "skipped": sum(bool(w.get("skipped")) for w in window)}
