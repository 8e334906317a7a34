"""`DistillationRunner`: rl-tools' post-training loop (src/foundation_policy/post_training/main.cpp) in PyTorch, then
eyas' fine-tuning, as three phases over one `RunSetup` (what the run is) and one `RunState` (what it has done):

    distill    setup: load teachers; estimate each teacher's steady-state position offset and check it is solved
               (mean return >= min_teacher_return, rl-tools' SOLVED_RETURN = 300); then per epoch
               collect   ON_POLICY: clear the dataset; num_episodes episodes per teacher, the teacher flying for the
                         first epoch_teacher_forcing epochs, the student afterwards (DAgger); teachers label every step
               pick best from the first DAgger epoch on, the student that flew is the best actor if its mean
                         collection return over teachers is the highest so far (rl-tools logs it as "evaluation")
               update    one pass over the dataset in rl-tools' batches (shuffled episodes packed into batch_size rows
                         of sequence_length steps): MSE, rl-tools' Adam
               evaluate  held-out randomised dynamics and registry models (`eyas.distill.evaluation`)
               save      checkpoint (PyTorch + rl-tools HDF5) and the run state
    fine-tune  optional (``apg.iterations`` > 0, not rl-tools): APG steps on the distilled best actor, candidates
               selected on the scorecard beside RAPTOR (`eyas.distill.finetune`)
    report     the best actor saved, evaluated beside RAPTOR and the teachers, plots (`eyas.distill.report`)

Everything random comes from one CPU `torch.Generator` (saved with each epoch), so `resume` continues a run as if it
had not stopped (on the same device and thread count). Under torchrun every rank runs this loop on its share of the
work (`eyas.distill.distributed`: one generator per rank, gradients averaged, statistics gathered) and rank 0
alone touches the run directory.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from eyas.distill import checkpoint, sizing
from eyas.distill.collect import check_teachers_against_env, collect, evaluate_teachers, new_episodes
from eyas.distill.config import DistillConfig, resolve_device, resolve_task, run_mdp
from eyas.distill.dataset import DistillationError
from eyas.distill.distributed import World
from eyas.distill.evaluation import raptor_policy
from eyas.distill.finetune import FineTuning
from eyas.distill.logger import RunLogger, epoch_line
from eyas.distill.setup import RunSetup
from eyas.distill.state import RunState
from eyas.distill.trainer import Distillation
from eyas.envs.backend import capabilities
from eyas.io import atomic_write_json
from eyas.sim import MODEL_NAMES
from eyas.teachers import Block, TeacherBank, TeacherError, load_teachers

STALL_EPOCHS = 3  # DAgger epochs in a row without one batch of data before an on-policy run gives up


class DistillationRunner:
    """Runs `DistillConfig` end to end: ``__init__`` builds (or, with ``resume``, restores) everything the run
    holds; ``run()`` flies the phases and returns the final summary (also in summary.json; None on ranks other than
    0 under torchrun)."""

    def __init__(self, cfg: DistillConfig, teachers: list | None = None, resume: bool = False, progress: bool = True,
                 world: World | None = None):
        cfg.validate()
        cfg = cfg.with_absolute_paths()
        world = world or World.current()
        self.cfg, self.resume, self.progress, self.world = cfg, resume, progress and world.is_main, world
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        device = world.device(resolve_device(cfg.device))
        env_cfg = resolve_task(cfg.task, cfg.env_backend, num_envs=cfg.collection.num_envs, device=device,
                               seed=cfg.seed, packages=cfg.isaaclab_packages)
        world.from_main(lambda: self._check_log_dir(Path(cfg.log_dir)))
        self.setup = self._build_setup(cfg, device, env_cfg, teachers)
        s = self.setup
        self.generator = torch.Generator().manual_seed(world.rank_seed(cfg.seed))
        t = cfg.training
        self.trainer = Distillation(s.new_student(), learning_rate=t.learning_rate,
                                    batch_size=t.batch_size // world.size, sequence_length=t.sequence_length,
                                    shuffle=t.shuffle, device=device, world=world)
        self.part = world.part(Block(0, len(s.bank), self.num_episodes))  # this rank's collection
        self.dataset = sizing.plan_for(s, self.part).allocate(s.num_obs, s.num_actions, device)
        self.state = RunState()
        self.idle_epochs = 0  # DAgger epochs in a row without a training step
        if resume:
            self._restore(*self._load_state())
        e = cfg.evaluation
        self.evaluator = s.evaluator(e.eval_episodes, e.eval_registry_episodes, seed=cfg.seed + 1_000_003, world=world)

    # ------------------------------------------------------------------ building
    def _check_log_dir(self, log_dir: Path) -> None:
        if self.resume and not checkpoint.has_run_state(log_dir):
            raise DistillationError(f"--resume: no complete epoch in {log_dir} (missing {checkpoint.STATE})")
        if not self.resume and checkpoint.has_run_state(log_dir):
            raise DistillationError(f"{log_dir} already holds a run; pass --resume to continue it or choose "
                                    f"another --log_dir")

    def _build_setup(self, cfg: DistillConfig, device, env_cfg, teachers: list | None) -> RunSetup:
        """The teachers, checked against the env (which also gives the student's widths and the episode length)."""
        caps = capabilities(env_cfg)
        if teachers is None:
            if not cfg.teacher_checkpoint:
                raise DistillationError("no teachers: pass --teacher_checkpoint FILE_OR_DIR [...]")
            try:
                teachers = load_teachers(cfg.teacher_checkpoint, device)
            except TeacherError as e:
                raise DistillationError(str(e)) from e
        if caps.has_mdp:
            env_cfg = run_mdp(env_cfg, cfg.env, teachers)
        if not caps.l2f_observation:  # l2f's motor commands live in [-1, 1]; other tasks take the mean unclipped
            for t in teachers:
                if hasattr(t, "action_clip") and not getattr(t, "is_recurrent", False):
                    t.action_clip = None
        probe = new_episodes(env_cfg, 1, device)
        check_teachers_against_env(teachers, probe, caps)
        cfg.apg.check_horizon(int(probe.max_episode_length))
        if cfg.apg.iterations > 0 and not caps.differentiable:
            raise DistillationError(f"--apg_iterations needs a differentiable env (the embedded l2f env): APG "
                                    f"differentiates through its simulator, which the {caps.name} env does not expose")
        t = cfg.training
        init = (checkpoint.load_init_student(t.init_student, probe.num_obs, probe.num_actions, t.hidden_dim)
                if t.init_student else None)
        models = cfg.evaluation.eval_models
        setup = RunSetup(cfg, Path(cfg.log_dir), device, env_cfg, caps, TeacherBank(teachers, device),
                         probe.num_obs, probe.num_actions, int(probe.max_episode_length),
                         list(models) if models is not None else list(MODEL_NAMES), self.world, init)
        self.num_episodes = sizing.episodes_for(setup, self.world)
        sizing.check_batch_fits(setup, self.num_episodes, self.world)
        return setup

    def _setup_teachers(self) -> None:
        s, c = self.setup, self.cfg.collection
        # rl-tools' SOLVED_RETURN belongs to l2f's reward; a task's returns have their own scale
        threshold = c.min_teacher_return if c.min_teacher_return is not None else (
            300.0 if s.caps.l2f_observation else None)
        self.state.offsets, self.state.teacher_eval = evaluate_teachers(
            s.bank, s.env_cfg, num_episodes=c.offset_episodes, num_envs=c.num_envs, generator=self.generator,
            device=s.device, window=tuple(c.offset_window) if s.caps.fixed_dynamics else None, min_return=threshold,
            world=self.world)
        raptor = raptor_policy(s.caps, s.num_obs, s.num_actions, s.device)
        # the reference row of every per-epoch evaluation (the same episodes): plots and history.json
        self.state.teacher_eval["raptor_eval"] = self.evaluator(raptor) if raptor is not None else None

    # ------------------------------------------------------------------ run state
    def _save_state(self) -> None:
        """state.pt on rank 0: what every rank shares, and each rank's own part (its generator, an aggregating
        run's episodes), gathered under "ranks" when there are several."""
        state = self.state.to_dict() | {"config": self.cfg.to_dict(), "trainer": self.trainer.state_dict(),
                                        "teachers": [getattr(t, "source", "") for t in self.setup.bank.teachers]}
        own = {"generator": self.generator.get_state()}
        if not self.cfg.collection.on_policy:
            own["dataset"] = self.dataset.state_dict()
        ranks = self.world.gather(own)
        if self.world.is_main:
            state |= {"world_size": self.world.size, "ranks": ranks} if self.world.distributed else own
            checkpoint.save_run_state(self.setup.log_dir, state)

    def _load_state(self) -> tuple[dict, dict]:
        """state.pt, read by rank 0: (the shared state, on every rank; this rank's own part)."""
        own, log_dir = {}, self.setup.log_dir

        def read() -> dict:
            state = checkpoint.load_run_state(log_dir)
            if state.get("world_size", 1) != self.world.size:
                raise DistillationError(f"--resume: the run in {log_dir} ran on {state.get('world_size', 1)} "
                                        f"rank(s), this launch has {self.world.size}; resume it with as many")
            own["ranks"] = state.pop("ranks", None) or [{k: state.pop(k) for k in ("generator", "dataset")
                                                         if k in state}]
            return state
        state = self.world.from_main(read)
        return state, self.world.scatter(own.get("ranks"))

    def _restore(self, state: dict, own: dict) -> None:
        """Continue from ``state`` (state.pt) and this rank's ``own`` part after checking it is this run's."""
        s = self.setup
        checkpoint.check_resumable(state, self.cfg, s.log_dir, [getattr(t, "source", "") for t in s.bank.teachers])
        self.trainer.load_state_dict(state["trainer"])
        self.generator.set_state(own["generator"])
        self.state = RunState.from_dict(state, s.device)
        if "dataset" in own:
            self.dataset.load_state_dict(own["dataset"])

    # ------------------------------------------------------------------ the phases
    def run(self) -> dict | None:
        if self.state.teacher_eval is None:
            self._setup_teachers()  # validates every teacher before anything is written
        locks = []  # one writer per run directory: rank 0 holds the lock
        self.world.from_main(lambda: locks.append(checkpoint.RunLock(self.setup.log_dir)))
        try:
            return self._run()
        finally:
            for lock in locks:
                lock.release()

    def _run(self) -> dict | None:
        from eyas.distill.report import finish

        self.world.from_main(lambda: self._check_log_dir(self.setup.log_dir) if not self.resume else None)
        main = self.world.is_main
        logger = RunLogger(self.setup.log_dir, purge_step=self.trainer.num_updates if self.resume else None,
                           enabled=main)
        if main:
            atomic_write_json(self.setup.log_dir / "config.json", self.cfg.to_dict())
        self._distill(logger)
        last = self.trainer.student
        if self.cfg.apg.iterations > 0:
            start = self.state.distilled_actor(last.state_dict())[0]
            phase = FineTuning(self.setup, self.generator, self.state.finetune, start, self.progress_bar)
            self.state.finetune = phase.state
            last = phase.run_phase(logger, self._save_state)
        logger.close()
        self.state.gradient_steps = self.trainer.num_updates
        self.state.final_student = {k: v.detach().clone() for k, v in last.state_dict().items()}
        return finish(self.setup, self.state, self.trainer.student.state_dict()) if main else None

    def progress_bar(self, iterable, desc: str, initial: int, total: int):
        from tqdm import tqdm

        return tqdm(iterable, initial=initial, total=total, desc=desc, dynamic_ncols=True,
                    disable=True if not self.progress else None)  # None: off when not a TTY

    def _distill(self, logger: RunLogger) -> None:
        n_epochs = self.cfg.training.n_epochs
        for epoch in self.progress_bar(range(self.state.epoch + 1, n_epochs), "distill", self.state.epoch + 1,
                                       n_epochs):
            row = self._collect(epoch, logger)
            self._pick_best(epoch, row)
            self._update(epoch, row, logger)
            self._evaluate(epoch, row, logger)
            self._save(epoch, row)
            logger.timing(row, epoch)
            logger.flush()
            logger.print(epoch_line(row, row.get("eval", {}).get(self.evaluator.held_out)))

    def _collect(self, epoch: int, logger: RunLogger) -> dict:
        c, s = self.cfg.collection, self.setup
        row = {"epoch": epoch}
        teacher_forcing = epoch < c.epoch_teacher_forcing
        if c.on_policy:
            self.dataset.clear()
        else:
            excess = self.dataset.num_steps + sizing.plan_for(s, self.part).per_epoch_steps - self.dataset.capacity
            if excess > 0:  # room for this epoch's episodes at their longest
                row["dropped_steps"] = self.dataset.drop_oldest(excess)
        t0 = time.perf_counter()
        self.trainer.student.eval()
        stats = collect(s.bank, s.env_cfg, num_episodes=self.num_episodes, num_envs=c.num_envs,
                        generator=self.generator, device=s.device,
                        student=None if teacher_forcing else self.trainer.student,
                        position_offsets=(self.state.offsets if c.position_offset_correction and s.caps.fixed_dynamics
                                          else None),
                        dataset=self.dataset, world=self.world)
        row.update(collect_s=time.perf_counter() - t0, actor="teacher" if teacher_forcing else "student",
                   dataset_steps=self.dataset.num_steps, dataset_episodes=self.dataset.num_episodes,
                   evaluation=stats.summary())
        logger.collection(epoch, row["evaluation"])
        return row

    def _pick_best(self, epoch: int, row: dict) -> None:
        collected, best = row["evaluation"]["return_mean"], self.state.best
        if row["actor"] == "student" and (best["return"] is None or collected > best["return"]):
            self.state.best = {"return": collected, "epoch": epoch,
                               "student": {k: v.detach().clone() for k, v in self.trainer.student.state_dict().items()}}

    def _update(self, epoch: int, row: dict, logger: RunLogger) -> None:
        t0 = time.perf_counter()
        step_losses = []  # kept on the device: reading each one would synchronise a GPU every step
        result = self.trainer.update(self.dataset, self.generator, lambda step, loss: step_losses.append(loss))
        first_step = self.trainer.num_updates - len(step_losses) + 1
        self.state.loss_steps.extend(logger.losses(first_step, step_losses, epoch, result["loss"]))
        row.update(train_s=time.perf_counter() - t0, loss=result["loss"], num_batches=result["num_batches"],
                   gradient_steps=self.trainer.num_updates)
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
        (an aggregating run's state holds its whole dataset)."""
        self.state.history.append(row)
        self.state.epoch = epoch
        if self._last_epoch(epoch, self.cfg.checkpoint_every):
            self.setup.save_actor(self.trainer.student, self.setup.log_dir / "checkpoints" / str(epoch), "actor",
                                  {"epoch": epoch, "gradient_steps": self.trainer.num_updates})
            self._save_state()
