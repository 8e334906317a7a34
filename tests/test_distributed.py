"""`eyas distill` on several processes (torch.distributed, gloo, CPU): 2 ranks step like 1 process with the ranks'
rows in one batch; a 2-rank torchrun run writes a complete run directory once (rank 0) and resumes to the
parameters of an uninterrupted run; a killed rank makes the other exit with one line instead of hanging; rsl_rl's
multi-process PPO trains a teacher on 2 ranks."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from eyas import sim
from eyas.distill.dataset import Batch, EpisodeDataset
from eyas.distill.distributed import World, split
from eyas.distill.trainer import Distillation
from eyas.model import StudentPolicy
from test_distill_inputs import write_teacher

torch.set_num_threads(1)

B, S, EPOCHS, SEED = 8, 8, 3, 11  # global batch, sequence length, passes over the data


# ---------------------------------------------------------------------------------------------- the rules
def test_split_and_parts_cover_the_work_once():
    from eyas.teachers import Block

    for total, parts in [(10, 3), (3, 4), (1000, 8), (7, 7)]:
        shares = [split(total, parts, i) for i in range(parts)]
        assert shares[0][0] == 0 and shares[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert max(b - a for a, b in shares) - min(b - a for a, b in shares) <= 1
    # teachers split when there are enough, else episodes: every (teacher, episode) pair flown exactly once
    for block in [Block(0, 5, 4), Block(3, 1, 9), Block(0, 2, 6)]:
        counts = torch.zeros(block.first + block.count, dtype=torch.long)
        for part in World(3, 0).parts(block):
            counts[part.first:part.first + part.count] += part.per_teacher
        assert counts[block.first:].tolist() == [block.per_teacher] * block.count
    assert World(2, 0).rank_seed(5) == 5 and World(2, 1).rank_seed(5) not in (5, World(3, 2).rank_seed(5))


# ---------------------------------------------------------------------------------------------- equality
def _linear_bank():
    from test_distill_runner import linear_teacher

    from eyas.teachers import TeacherBank

    return TeacherBank([linear_teacher(1, sim.model_params("crazyflie")), linear_teacher(2, None),
                        linear_teacher(3, sim.model_params("x500"))])


def _rank_trains(rank: int, size: int, rendezvous: str, out: str) -> None:
    """One rank: collect its share of the data, train EPOCHS passes with batch B / size, save what it has."""
    from eyas.distill.collect import collect
    from eyas.envs import PointControlEnvCfg

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=size,
                                         timeout=timedelta(seconds=120))
    try:
        world = World.current()
        data = EpisodeDataset(3 * 6 * 500, 22, 4)
        generator = torch.Generator().manual_seed(world.rank_seed(SEED))
        collect(_linear_bank(), PointControlEnvCfg(), num_episodes=6, num_envs=12, generator=generator, device="cpu",
                dataset=data, world=world)
        # rank 1 starts from another student: the trainer must broadcast rank 0's
        student = StudentPolicy(22, 4, generator=torch.Generator().manual_seed(rank))
        trainer = Distillation(student, batch_size=B // size, sequence_length=S, world=world)
        shuffles = torch.Generator().manual_seed(world.rank_seed(SEED + 1))
        first = shuffles.get_state()
        results = [trainer.update(data, shuffles) for _ in range(EPOCHS)]
        torch.save({"dataset": data.state_dict(), "shuffles": first, "results": results,
                    "trainer": trainer.state_dict()}, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _dataset(state: dict) -> EpisodeDataset:
    data = EpisodeDataset(state["observations"].shape[0], 22, 4, max_episodes=state["episode_start"].shape[0])
    data.load_state_dict(state)
    return data


def _one_process_on_the_ranks_rows(saved: list[dict]) -> tuple[Distillation, list[dict]]:
    """One process, batch B: each step's batch is the ranks' rows of that step side by side (same episodes,
    same shuffles), rl-tools' trainer unchanged."""
    shards = [_dataset(s["dataset"]) for s in saved]
    shuffles = [torch.Generator().set_state(s["shuffles"]) for s in saved]
    trainer = Distillation(StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)), batch_size=B,
                           sequence_length=S)
    results = []
    for _ in range(EPOCHS):
        count = min(d.num_batches(B // len(shards), S) for d in shards)
        walks = [d.get_batches(B // len(shards), S, True, g) for d, g in zip(shards, shuffles)]
        losses = []
        for _ in range(count):
            parts = [next(w) for w in walks]
            batch = Batch(torch.cat([p.observations for p in parts], 1), torch.cat([p.targets for p in parts], 1),
                          torch.cat([p.reset for p in parts], 1))
            losses.append(float(trainer.train_step(batch)))
        results.append({"loss": sum(losses) / count, "num_batches": count})
    return trainer, results


def test_two_ranks_step_like_one_process_with_their_rows(tmp_path):
    size = 2
    torch.multiprocessing.start_processes(_rank_trains, args=(size, f"file://{tmp_path / 'rendezvous'}",
                                                              str(tmp_path)), nprocs=size, start_method="spawn")
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(size)]
    # the ranks flew different episodes (teachers split 2 + 1) and hold only their own
    assert saved[0]["dataset"]["episode_teacher"].unique().tolist() == [0, 1]
    assert saved[1]["dataset"]["episode_teacher"].unique().tolist() == [2]
    a, b = (s["trainer"] for s in saved)
    assert a["num_updates"] == b["num_updates"] >= 2 * EPOCHS
    for k in a["student"]:  # the ranks are in step: bit for bit
        assert torch.equal(a["student"][k], b["student"][k]), k
    reference, results = _one_process_on_the_ranks_rows(saved)
    assert [r["num_batches"] for r in saved[0]["results"]] == [r["num_batches"] for r in results]
    # float32 tolerance: the two runs sum the same per-sample gradient terms in another order (each rank reduces
    # S x B/2 samples, then the all-reduce adds two partial means; one process reduces S x B at once), a relative
    # difference of ~sqrt(S B) * 6e-8 ~ 1e-6 per gradient; Adam's step is lr * m / (sqrt(v) + eps), bounded by lr
    # and insensitive to a relative change of g, so after n steps |dtheta| <~ n * lr * 1e-6 plus float32 rounding
    # of theta (|theta| < 1: 6e-8). 1e-6 leaves a wide margin over both, and training moves the parameters by
    # ~n * lr = 1e-3, which a missing all-reduce or broadcast would not reproduce.
    start = StudentPolicy(22, 4, generator=torch.Generator().manual_seed(0)).state_dict()
    moved = max(float((a["student"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4
    for k, v in reference.student.state_dict().items():
        torch.testing.assert_close(a["student"][k], v, rtol=0, atol=1e-6, msg=k)
    # Adam's first moment is (1 - beta1)-weighted gradients: it is the same only if the gradients were *averaged*
    mine, ref = a["optimizer"]["state"], reference.optimizer.state_dict()["state"]
    for i in ref:
        scale = float(ref[i]["exp_avg"].abs().max())
        torch.testing.assert_close(mine[i]["exp_avg"], ref[i]["exp_avg"], rtol=1e-4, atol=1e-4 * scale + 1e-12)
    for got, want in zip(saved[0]["results"], results):  # the reported loss is the mean over both ranks' rows
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------- torchrun runs
SMALL = ["--device", "cpu", "--quiet", "--num_threads", "1", "--num_envs", "16", "--num_episodes", "8",
         "--offset_episodes", "4", "--min_teacher_return=-1e9", "--batch_size", "4", "--sequence_length", "16",
         "--epoch_teacher_forcing", "1", "--eval_episodes", "4", "--eval_registry_episodes", "0",
         "--final_eval_episodes", "4", "--plots", "false", "--seed", "5"]


def _torchrun(log_dir: Path, teacher: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "eyas.distill", "--teacher_checkpoint", str(teacher), "--log_dir", str(log_dir), *SMALL, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "EYAS_DIST_TIMEOUT_S": "120"})


def test_torchrun_two_ranks_writes_one_complete_run_and_resumes(tmp_path):
    teacher = write_teacher(tmp_path / "teacher.h5")
    run = tmp_path / "run"
    apg = ["--apg_iterations", "2", "--apg_eval_every", "1", "--apg_envs", "8", "--apg_horizon", "20",
           "--apg_eval_episodes", "4", "--apg_select_cases", "hover/randomized"]
    done = _torchrun(run, teacher, "--n_epochs", "2", *apg)
    assert done.returncode == 0, done.stderr[-3000:]
    for e in range(2):
        assert (run / "checkpoints" / str(e) / "actor.h5").is_file() and (run / "checkpoints" / str(e) / "actor.pt").is_file()
    for f in ("best_actor.h5", "best_actor.pt", "final_actor.pt", "distilled_actor.h5", "summary.json",
              "history.json", "config.json", "state.pt", "flights.json", "checkpoints/apg_2/actor.pt"):
        assert (run / f).is_file(), f
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0's TensorBoard file only
    assert not list(run.rglob(".*.tmp"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2 and summary["apg"]["iterations"] == 2
    assert summary["foundation_policy_check"] == {"checked": True, "ok": True}
    assert done.stdout.count("best student") == 1  # one summary, printed by rank 0
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["generator"], state["ranks"][1]["generator"])
    # --resume under torchrun continues the same run: two more APG steps from every rank's saved state
    more = _torchrun(run, teacher, "--resume", "--apg_iterations", "4", *apg[2:])
    assert more.returncode == 0, more.stderr[-3000:]
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["epochs"] == 2 and resumed["apg"]["iterations"] == 4 and (run / "checkpoints/apg_4/actor.pt").is_file()
    # ... exactly as a run that did the four steps at once (every rank got its own generator back)
    whole = _torchrun(tmp_path / "whole", teacher, "--n_epochs", "2", "--apg_iterations", "4", *apg[2:])
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = (torch.load(d / "final_actor.pt", weights_only=True)["state_dict"] for d in (run, tmp_path / "whole"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another world size cannot continue it: one line from rank 0, exit 2
    alone = subprocess.run([sys.executable, "-m", "eyas.distill", "--teacher_checkpoint", str(teacher), "--log_dir",
                            str(run), *SMALL, "--resume", "--apg_iterations", "6"], capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 2 and alone.stderr.strip().splitlines() == [
        f"eyas distill: error: --resume: the run in {run} ran on 2 rank(s), this launch has 1; resume it with "
        f"as many"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_makes_the_other_exit_with_one_line(tmp_path):
    """Two ranks started without torchrun's agent (which would kill the survivor itself): rank 1 is SIGKILLed
    mid-run, and rank 0 must notice at its next collective and stop by itself."""
    teacher = write_teacher(tmp_path / "teacher.h5")
    run, port = tmp_path / "run", _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "EYAS_DIST_TIMEOUT_S": "120"}
        procs.append(subprocess.Popen([sys.executable, "-m", "eyas.distill", "--teacher_checkpoint", str(teacher),
                                       "--log_dir", str(run), *SMALL, "--n_epochs", "50"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    start = time.monotonic()
    while not (run / "checkpoints" / "0" / "actor.pt").is_file():
        assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs]
        assert time.monotonic() - start < 300
        time.sleep(0.05)
    os.kill(procs[1].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    rc = procs[0].wait(timeout=100)  # well inside the 120 s collective timeout: the closed connection is seen
    err = procs[0].stderr.read().strip().splitlines()
    assert rc == 1 and time.monotonic() - killed_at < 100
    assert len(err) == 1 and err[0].startswith("eyas distill: error: rank 0: lost contact with the other ranks"), err
    procs[1].wait()


def test_torchrun_two_ranks_train_one_teacher_through_rsl_rl(tmp_path):
    """`eyas teacher train` under torchrun: rsl_rl's multi-process PPO (gloo on the CPU), both ranks collecting,
    rank 0 alone writing the teacher."""
    its, envs, steps = 2, 16, 8
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "eyas.teachers.cli", "train", "--mode", "privileged", "--out", str(tmp_path), "--iterations", str(its),
           "--max_minutes", "0", "--num_envs", str(envs), "--steps_per_env", str(steps), "--eval_interval", "1",
           "--eval_envs", "4", "--final_eval_episodes", "4", "--actor_hidden", "8", "--critic_hidden", "8",
           "--num_threads", "1", "--seed", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    side = json.loads((tmp_path / "privileged" / "teacher.json").read_text())
    assert side["training"]["status"] == "done" and "evaluation" in side
    assert side["training"]["env_steps"] == 2 * its * envs * steps  # rsl_rl counts every rank's steps
    assert (tmp_path / "privileged" / side["checkpoint"]).is_file()
    assert len(list((tmp_path / "privileged").glob("events.out.tfevents.*"))) == 1
    assert done.stdout.count("[privileged]") == 1  # rank 0 reports
