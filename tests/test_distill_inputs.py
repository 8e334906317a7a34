"""`eyas distill` on bad input: one clear error line, exit status 2, and no run directory written."""
import h5py
import numpy as np
import pytest
import torch

from eyas import StudentPolicy
from eyas.cli import main as eyas


def main(argv: list) -> int:
    """`eyas distill ARGV`'s exit status."""
    return eyas(["distill", *argv])


def write_teacher(path, num_obs: int = 74, bias: float = 0.4, seed: int = 0):
    """An rl-tools-layout actor (one dense layer) as `eyas.teachers.load_teacher` reads it."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        actor = f.create_group("actor")
        actor.attrs["type"] = "sequential"
        layer = actor.create_group("layers").create_group("0")
        layer.attrs["type"] = "dense"
        layer.attrs["activation_function"] = "IDENTITY"
        layer.create_group("weights").create_dataset("parameters", data=0.1 * rng.standard_normal((4, num_obs)).astype(np.float32))
        layer.create_group("biases").create_dataset("parameters", data=np.full((1, 4), bias, np.float32))
    return path


def run(tmp_path, *args):
    log_dir = tmp_path / "run"
    argv = ["--log_dir", str(log_dir), "--device", "cpu", "--quiet", "--num_envs", "64", "--offset_episodes", "2",
            "--min_teacher_return=-1e9", *map(str, args)]
    return main(argv), log_dir


def check_error(capsys, rc, log_dir, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1 and lines[0].startswith("eyas distill: error:"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not log_dir.exists(), "nothing may be written on bad input"


def test_missing_teacher(tmp_path, capsys):
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", tmp_path / "nope.pt")
    check_error(capsys, rc, log_dir, "nope.pt", "does not exist")


def test_no_teacher_given(tmp_path, capsys):
    rc, log_dir = run(tmp_path)
    check_error(capsys, rc, log_dir, "--teacher_checkpoint")


def test_unreadable_teacher(tmp_path, capsys):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"this is not a checkpoint")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", bad)
    check_error(capsys, rc, log_dir, "cannot", "teacher.pt")
    bad_h5 = tmp_path / "teacher.h5"
    bad_h5.write_bytes(b"\x89HDF\r\n garbage")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", bad_h5)
    check_error(capsys, rc, log_dir, "teacher.h5")


def test_teacher_observation_mismatch(tmp_path, capsys):
    good = write_teacher(tmp_path / "good.h5")
    wrong = write_teacher(tmp_path / "wrong.h5", num_obs=30)
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", good, wrong)
    check_error(capsys, rc, log_dir, "teacher 1", "wrong", "30", "74")


@pytest.mark.parametrize("value", [0, -5])
def test_sequence_length_not_positive(tmp_path, capsys, value):
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", write_teacher(tmp_path / "t.h5"), "--sequence_length", value)
    check_error(capsys, rc, log_dir, "--sequence_length must be >= 1")


def test_batch_larger_than_data(tmp_path, capsys):
    """An aggregating dataset capped at 3000 steps can never hold one 64 x 500 batch."""
    teachers = [write_teacher(tmp_path / f"t{i}.h5", seed=i) for i in range(2)]
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", *teachers, "--num_episodes", 3, "--on_policy", "false",
                      "--max_dataset_steps", 3000)
    check_error(capsys, rc, log_dir, "--batch_size 64", "at most 3000 steps")


def test_all_parallel_envs_fly_and_an_epoch_holds_a_batch():
    """The seed's `--num_envs 64 --batch_size 64 --sequence_length 500` with one teacher (rl-tools' 10 episodes
    would be 5000 steps, under one batch): 65 episodes per epoch; rl-tools' own settings are left as they are."""
    from eyas.distill.dataset import episodes_per_teacher

    assert episodes_per_teacher(10, 64, 1, 500, 64 * 500, on_policy=True) == 65
    assert episodes_per_teacher(10, 1024, 1, 500, 64 * 500, on_policy=True) == 1024
    assert episodes_per_teacher(10, 1024, 1000, 500, 64 * 500, on_policy=True) == 10  # RAPTOR: unchanged
    assert episodes_per_teacher(256, 256, 1, 500, 256 * 100, on_policy=False) == 256  # the main job: unchanged
    assert episodes_per_teacher(3, 64, 2, 500, 64 * 500, on_policy=False) == 32


def test_the_seed_quick_command_runs_with_one_teacher(tmp_path, capsys):
    """`--num_envs 64 --n_epochs 2 --batch_size 64 --sequence_length 500` (the seed's quick test) with one teacher:
    the rule is said once, the run ends and writes a student."""
    teacher = write_teacher(tmp_path / "t.h5")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", teacher, "--n_epochs", 2, "--batch_size", 64,
                      "--sequence_length", 500, "--eval_episodes", 2, "--eval_registry_episodes", 0,
                      "--final_eval_episodes", 2, "--plots", "false")
    out = capsys.readouterr().out
    assert rc == 0
    assert [line for line in out.splitlines() if "episodes per teacher and epoch" in line] == [
        "eyas distill: 65 episodes per teacher and epoch (1 teacher, --num_episodes 10): raised so that all 64 "
        "parallel envs fly and an epoch holds more than one batch of 64 x 500 steps (docs/distillation.md, Flags)"]
    assert (log_dir / "best_actor.h5").is_file()


def test_nan_teacher_parameters(tmp_path, capsys):
    good = write_teacher(tmp_path / "good.h5")
    nan = write_teacher(tmp_path / "nan.h5", bias=float("nan"))
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", good, nan, "--batch_size", 2, "--sequence_length", 10)
    check_error(capsys, rc, log_dir, "nan.h5", "NaN or inf")


class _BlowsUp(torch.nn.Module):
    """Finite (no) parameters, non-finite actions: a teacher that diverges numerically."""

    def forward(self, x):
        return torch.full((x.shape[0], 4), float("nan"))


def test_nan_teacher_actions(tmp_path):
    from eyas.distill.dataset import DistillationError
    from eyas.distill.runner import DistillationRunner
    from eyas.teachers import Teacher, load_teacher

    from test_distill_runner import _cfg

    teachers = [load_teacher(write_teacher(tmp_path / "good.h5")), Teacher(_BlowsUp(), num_obs=74, name="diverges")]
    with pytest.raises(DistillationError, match=r"teacher 1 \(diverges\) produced non-finite actions"):
        DistillationRunner(_cfg(tmp_path, "run"), teachers=teachers, progress=False).run()
    assert not (tmp_path / "run").exists()


def test_resume_without_run_and_overwrite_refused(tmp_path, capsys):
    t = write_teacher(tmp_path / "t.h5")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", t, "--resume")
    check_error(capsys, rc, log_dir, "--resume")
    log_dir.mkdir()
    (log_dir / "state.pt").write_bytes(b"")
    rc, _ = run(tmp_path, "--teacher_checkpoint", t, "--batch_size", 2, "--sequence_length", 10)
    err = capsys.readouterr().err
    assert rc == 2 and "already holds a run" in err


def test_bad_boolean_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--on_policy", "maybe"])
    assert e.value.code == 2
    assert "expected true/false" in capsys.readouterr().err


def test_init_student_missing_unreadable_or_wrong_shape(tmp_path, capsys):
    teacher = write_teacher(tmp_path / "t.h5")
    small = ("--batch_size", 2, "--sequence_length", 10)
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", teacher, *small, "--init_student", tmp_path / "none.pt")
    check_error(capsys, rc, log_dir, "--init_student", "none.pt", "does not exist")
    junk = tmp_path / "student.pt"
    junk.write_bytes(b"not a checkpoint")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", teacher, *small, "--init_student", junk)
    check_error(capsys, rc, log_dir, "--init_student", "cannot read a student", "student.pt", "not a torch checkpoint")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", teacher, *small, "--init_student", teacher)  # a teacher, not a GRU
    check_error(capsys, rc, log_dir, "--init_student", "t.h5")
    wide = StudentPolicy(26, 4)
    torch.save({"state_dict": wide.state_dict(), "num_obs": 26, "num_actions": 4, "hidden_dim": 16, "meta": {}},
               tmp_path / "wide.pt")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", teacher, *small, "--init_student", tmp_path / "wide.pt")
    check_error(capsys, rc, log_dir, "--init_student", "26 observations", "needs 22")
    weights = StudentPolicy(22, 4).state_dict()
    weights["output_layer.bias"][0] = float("nan")
    torch.save({"state_dict": weights, "num_obs": 22, "num_actions": 4, "hidden_dim": 16, "meta": {}},
               tmp_path / "nan.pt")
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", teacher, *small, "--init_student", tmp_path / "nan.pt")
    check_error(capsys, rc, log_dir, "--init_student", "NaN")


class _CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: what a malicious checkpoint could do (any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_teacher_file_that_would_run_code_is_refused(tmp_path, capsys):
    """Teacher checkpoints are read with weights_only=True: the crafted file is refused, its payload never runs."""
    import torch

    from eyas.teachers import TeacherError, load_teacher

    marker = tmp_path / "payload_ran"
    crafted = tmp_path / "model_7.pt"
    torch.save({"actor_state_dict": _CreatesAFile(marker), "iter": 7}, crafted)
    with pytest.raises(TeacherError, match="refusing .*model_7.pt: not a plain checkpoint"):
        load_teacher(crafted)
    rc, log_dir = run(tmp_path, "--teacher_checkpoint", crafted)
    check_error(capsys, rc, log_dir, "model_7.pt", "not a plain checkpoint")
    assert not marker.exists(), "the checkpoint's code ran"
