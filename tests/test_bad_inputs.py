"""The cells of docs/reliability.md's table that no other test holds: every sub-command given a missing, directory,
empty, truncated, wrongly shaped or NaN file, a bad number or device, an unwritable output, or interrupted answers
with one line ``eyas <command>: error: ...`` naming the problem and exit 2 (``eyas <command>: interrupted...`` and
130 for an interrupt), writes nothing, and does no work first (the work itself is replaced by a tripwire)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import h5py
import numpy as np
import pytest
import torch

import eyas
from eyas import raptor_checkpoint_path
from eyas.cli import main as eyas_main
from test_distill_inputs import write_teacher

TEACHER_RUN = Path("fixtures/teachers/crazyflie")
TINY_TRAIN = ["--dynamics", "crazyflie", "--iterations", "1", "--num_envs", "8", "--steps_per_env", "4",
              "--eval_interval", "0", "--eval_envs", "4", "--final_eval_episodes", "4", "--actor_hidden", "8",
              "--critic_hidden", "8", "--num_threads", "1", "--device", "cpu"]
TINY_DISTILL = ["--device", "cpu", "--quiet", "--num_envs", "8", "--num_episodes", "4", "--offset_episodes", "2",
                "--min_teacher_return=-1e9", "--batch_size", "2", "--sequence_length", "8", "--eval_episodes", "2",
                "--eval_registry_episodes", "0", "--final_eval_episodes", "2", "--plots", "false"]


class Case(NamedTuple):
    argv: list[str]
    needle: str  # a part of the one error line
    untouched: tuple[Path, ...] = ()  # outputs that must not exist afterwards
    tripwire: str = ""  # "module:attribute" of the command's work: reaching it fails the test


# ------------------------------------------------------------------------------------------ bad files
def _missing(tmp: Path, suffix: str) -> Path:
    return tmp / f"missing{suffix}"


def _directory(tmp: Path, suffix: str) -> Path:
    (tmp / f"dir{suffix}").mkdir()
    return tmp / f"dir{suffix}"


def _empty(tmp: Path, suffix: str) -> Path:
    (tmp / f"empty{suffix}").write_bytes(b"")
    return tmp / f"empty{suffix}"


def _truncated(tmp: Path, source: Path) -> Path:
    path = tmp / f"truncated{source.suffix}"
    path.write_bytes(source.read_bytes()[:len(source.read_bytes()) // 3])
    return path


def _fresh(tmp: Path) -> Path:
    """A new directory in ``tmp`` (each case's files apart from the others')."""
    return Path(tempfile.mkdtemp(dir=tmp))


def _student_h5(tmp: Path, change: Callable[[h5py.File], None]) -> Path:
    """RAPTOR's checkpoint with one change."""
    path = _fresh(tmp) / "student.h5"
    shutil.copy(raptor_checkpoint_path(), path)
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def _reshape(f: h5py.File) -> None:
    del f["actor/layers/0/biases/parameters"]
    f["actor/layers/0/biases/parameters"] = np.zeros((1, 15), np.float32)


def _nan(f: h5py.File) -> None:
    f["actor/layers/1/weights_input/parameters"][3, 4] = np.inf


def _student_pt(tmp: Path, num_obs: int = 22, nan: bool = False) -> Path:
    policy = eyas.StudentPolicy(num_obs, 4)
    state = policy.state_dict()
    if nan:
        state["output_layer.bias"][1] = float("nan")
    path = _fresh(tmp) / "actor.pt"
    torch.save({"state_dict": state, "num_obs": num_obs, "num_actions": 4, "hidden_dim": 16}, path)
    return path


def _teacher_run(tmp: Path, change: Callable[[dict], None] | None = None, raw: bytes | None = None) -> Path:
    """A copy of the committed crazyflie teacher whose selected checkpoint is changed (or replaced by ``raw``)."""
    run = _fresh(tmp) / "teacher"
    shutil.copytree(TEACHER_RUN, run)
    path = run / json.loads((run / "teacher.json").read_text())["checkpoint"]
    if raw is not None:
        path.write_bytes(raw)
    elif change is not None:
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)
    return run


def _teacher_file(tmp: Path, **kwargs) -> Path:
    run = _teacher_run(tmp, **kwargs)
    return run / json.loads((run / "teacher.json").read_text())["checkpoint"]


def _teacher_reshaped(ckpt: dict) -> None:
    ckpt["actor_state_dict"]["mlp.2.weight"] = torch.zeros(64, 10)


def _teacher_nan(ckpt: dict) -> None:
    ckpt["actor_state_dict"]["mlp.0.bias"][5] = float("nan")


def _teacher_truncated() -> bytes:
    path = TEACHER_RUN / json.loads((TEACHER_RUN / "teacher.json").read_text())["checkpoint"]
    return path.read_bytes()[:2000]


def _under_a_file(tmp: Path, name: str) -> Path:
    """An output path below a regular file: not creatable, even by root."""
    (tmp / "a_file").write_text("")
    return tmp / "a_file" / name


def _sequences(tmp: Path, **arrays) -> Path:
    path = tmp / "sequences.npz"
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------------------------------ the table
def parity(tmp: Path) -> dict[str, Callable[[], Case]]:
    raptor = str(raptor_checkpoint_path())
    good_input = np.zeros((500, 64, 22), np.float32)
    nan_input = good_input.copy()
    nan_input[7, 3, 2] = np.nan

    def case(argv, needle):
        return Case(["parity", *map(str, argv)], needle, tripwire="eyas.parity:compare")

    def sequences(**arrays):
        return [raptor, "--sequences", _sequences(tmp, **arrays)]
    return {
        "missing": lambda: case([_missing(tmp, ".h5")], "missing.h5"),
        "directory": lambda: case([_directory(tmp, ".h5")], "not a readable HDF5 file"),
        "empty": lambda: case([_empty(tmp, ".h5")], "not a readable HDF5 file"),
        "truncated": lambda: case([_truncated(tmp, raptor_checkpoint_path())], "truncated.h5"),
        "wrong shape": lambda: case([_student_h5(tmp, _reshape)], "has shape (1, 15), expected (1, 16)"),
        "wrong shape (--sequences)": lambda: case(sequences(input=np.zeros((500, 64, 21), np.float32)),
                                                  "'input' has shape (500, 64, 21)"),
        "missing key (--sequences)": lambda: case(sequences(inputs=good_input), "expected 'input'"),
        "NaN/inf": lambda: case([_student_h5(tmp, _nan)], "contains NaN or inf"),
        "NaN/inf (--sequences)": lambda: case(sequences(input=nan_input), "'input' is not finite"),
        "bad number": lambda: case([raptor, "--adam_steps", "-3"],
                                   "argument --adam_steps: must be an integer from 0 to 100, got -3"),
        "bad number (too many Adam steps)": lambda: case([raptor, "--adam_steps", "101"], "from 0 to 100"),
        "bad number (NaN)": lambda: case([raptor, "--perturb_cpp", "nan"], "argument --perturb_cpp"),
    }


def fly(tmp: Path) -> dict[str, Callable[[], Case]]:
    raptor = str(raptor_checkpoint_path())
    out = tmp / "flight.json"
    work = "eyas.envs.fly:evaluate"

    def case(argv, needle, *untouched):
        return Case(["fly", *argv, "--episodes", "2", "--device", "cpu"], needle, (out, *untouched), work)
    wide = tmp / "wide.h5"
    eyas.save_rltools_h5(eyas.StudentPolicy(26, 4), wide)
    return {
        "missing": lambda: case([str(_missing(tmp, ".h5"))], "missing.h5"),
        "directory": lambda: case([str(_directory(tmp, ".h5"))], "not a readable HDF5 file"),
        "empty": lambda: case([str(_empty(tmp, ".h5"))], "not a readable HDF5 file"),
        "truncated": lambda: case([str(_truncated(tmp, raptor_checkpoint_path()))], "truncated.h5"),
        "wrong shape": lambda: case([str(_student_h5(tmp, _reshape))], "expected (1, 16)"),
        "wrong shape (observation width)": lambda: case([str(wide)], "the policy reads 26 observations"),
        "NaN/inf": lambda: case([str(_student_h5(tmp, _nan))], "contains NaN or inf"),
        "bad number": lambda: case([raptor, "--episodes", "0"], "argument --episodes: must be an integer >= 1, got 0"),
        "bad number (negative)": lambda: case([raptor, "--episodes", "-5"], "got -5"),
        "bad number (--num_plots)": lambda: case([raptor, "--num_plots", "-1"], "argument --num_plots"),
        "bad number (--num_threads)": lambda: case([raptor, "--num_threads", "0"], "argument --num_threads"),
        "bad device": lambda: case([raptor, "--device", "cuda"], "CUDA is not available"),
        "bad device (name)": lambda: case([raptor, "--device", "gpu0"], "not a device name"),
        "unwritable output (--json a directory)": lambda: case([raptor, "--json", str(tmp)], "is a directory"),
        "unwritable output": lambda: case([raptor, "--json", str(_under_a_file(tmp, "f.json"))], "is not a directory"),
        "unwritable output (--plot)": lambda: case([raptor, "--plot", str(_under_a_file(tmp, "plots"))], "--plot"),
    }


def export(tmp: Path) -> dict[str, Callable[[], Case]]:
    out = tmp / "out"
    work = "eyas.export:write_all"

    def case(path, needle, *extra):
        return Case(["export", str(path), "--out", str(out), *extra], needle, (out,), work)
    return {
        "missing": lambda: case(_missing(tmp, ".pt"), "no such file"),
        "directory": lambda: case(_directory(tmp, ".pt"), "is a directory"),
        "empty": lambda: case(_empty(tmp, ".pt"), "not a torch checkpoint"),
        "truncated": lambda: case(_truncated(tmp, raptor_checkpoint_path()), "truncated.h5"),
        "truncated (.pt)": lambda: case(_truncated(tmp, _student_pt(tmp)), "not a torch checkpoint"),
        "wrong shape": lambda: case(_student_h5(tmp, _reshape), "expected (1, 16)"),
        "NaN/inf": lambda: case(_student_pt(tmp, nan=True), "contain NaN or inf"),
        "NaN/inf (.h5)": lambda: case(_student_h5(tmp, _nan), "contains NaN or inf"),
        "bad number": lambda: case(_student_pt(tmp), "argument --seed", "--seed", "-1"),
    }


def distill(tmp: Path) -> dict[str, Callable[[], Case]]:
    run = tmp / "run"
    work = "eyas.distill.runner:DistillationRunner._setup_teachers"

    def case(argv, needle, teacher=None):
        teacher = teacher or write_teacher(tmp / "teacher.h5")
        return Case(["distill", "--log_dir", str(run), *TINY_DISTILL, "--teacher_checkpoint", str(teacher),
                     *map(str, argv)], needle, (run,), work)
    return {
        "directory": lambda: case([], "no teachers", _directory(tmp, "")),
        "empty": lambda: case([], "empty.pt", _empty(tmp, ".pt")),
        "wrong shape": lambda: case([], "do not follow", _teacher_file(tmp, change=_teacher_reshaped)),
        "bad number": lambda: case(["--num_threads", "0"], "--num_threads must be >= 1"),
        "bad number (--num_envs)": lambda: case(["--num_envs", "0"], "--num_envs must be"),
        "bad number (--learning_rate)": lambda: case(["--learning_rate", "nan"],
                                                     "--learning_rate must be a positive number"),
        "bad number (--eval_episodes)": lambda: case(["--eval_episodes", "0"], "--eval_episodes must be >= 1"),
        "bad device": lambda: case(["--device", "cuda"], "CUDA is not available"),
        "unwritable output": lambda: case(["--log_dir", _under_a_file(tmp, "run")], "a_file"),
    }


def teacher_train(tmp: Path) -> dict[str, Callable[[], Case]]:
    out = tmp / "out"
    work = "eyas.teachers.train:train_teacher"

    def case(argv, needle, tripwire=work):
        return Case(["teacher", "train", "--out", str(out), *TINY_TRAIN, *argv], needle, (out,), tripwire)
    empty_dir = _directory(tmp, "")
    # the checkpoint is read in train_teacher before any work or write: its tripwire is the runner
    read = "eyas.envs:PointControlEnv"
    dynamics = tmp / "dynamics.json"
    dynamics.write_text('{"dynamics": {"mass": ')
    return {
        "missing": lambda: case(["--init_checkpoint", str(_missing(tmp, ".pt"))], "does not exist"),
        "directory": lambda: case(["--init_checkpoint", str(empty_dir)], "is not a teacher directory"),
        "empty": lambda: case(["--init_checkpoint", str(_empty(tmp, ".pt"))], "not a torch checkpoint", read),
        "truncated": lambda: case(["--init_checkpoint", str(_teacher_file(tmp, raw=_teacher_truncated()))],
                          "not a torch checkpoint", read),
        "truncated (--dynamics JSON)": lambda: case(["--dynamics", str(dynamics)], "cannot read l2f parameters"),
        "NaN/inf": lambda: case(["--init_checkpoint", str(_teacher_file(tmp, change=_teacher_nan))], "NaN or inf",
                                read),
        "bad number": lambda: case(["--iterations", "-2"], "argument --iterations: must be an integer >= 1, got -2"),
        "bad number (--num_envs)": lambda: case(["--num_envs", "0"], "argument --num_envs"),
        "bad number (--lr)": lambda: case(["--lr", "inf"], "argument --lr"),
        "bad number (--actor_hidden)": lambda: case(["--actor_hidden", "64", "0"], "argument --actor_hidden"),
        "bad device": lambda: case(["--device", "cuda"], "CUDA is not available"),
        "unwritable output": lambda: case(["--out", str(_under_a_file(tmp, "out"))], "is not a directory"),
    }


def teacher_eval(tmp: Path) -> dict[str, Callable[[], Case]]:
    out = tmp / "eval.json"
    work = "eyas.envs:evaluate"

    def case(paths, needle, *extra):
        return Case(["teacher", "eval", *map(str, paths), "--episodes", "2", "--num_envs", "2", "--device", "cpu",
                     "--json", str(out), *extra], needle, (out,), work)
    wide = tmp / "wide.h5"
    write_teacher(wide, num_obs=30)
    return {
        "directory": lambda: case([_directory(tmp, "")], "no teachers"),
        "empty": lambda: case([_empty(tmp, ".pt")], "not a torch checkpoint"),
        "truncated": lambda: case([_teacher_file(tmp, raw=_teacher_truncated())], "not a torch checkpoint"),
        "wrong shape": lambda: case([wide], "expects 30 observations"),
        "NaN/inf": lambda: case([_teacher_run(tmp, change=_teacher_nan)], "NaN or inf"),
        "bad number": lambda: case([TEACHER_RUN], "argument --episodes", "--episodes", "0"),
        "bad number (--num_envs)": lambda: case([TEACHER_RUN], "argument --num_envs", "--num_envs", "-1"),
        "bad number (--obs_slice)": lambda: case([TEACHER_RUN], "argument --obs_slice", "--obs_slice", "5:2"),
        "bad device": lambda: case([TEACHER_RUN], "CUDA is not available", "--device", "cuda"),
        "unwritable output": lambda: case([TEACHER_RUN], "is a directory", "--json", str(tmp)),
    }


def teacher_export(tmp: Path) -> dict[str, Callable[[], Case]]:
    dest = tmp / "dest"
    work = "eyas.io:atomic_path"

    def case(run, needle, destination=dest):
        return Case(["teacher", "export", str(run), str(destination)], needle, (dest,), work)
    return {
        "missing": lambda: case(tmp / "nowhere", "does not exist"),
        "directory": lambda: case(_directory(tmp, ""), "is not a teacher directory"),
        "empty": lambda: case(_teacher_run(tmp, raw=b""), "not a torch checkpoint"),
        "truncated": lambda: case(_teacher_run(tmp, raw=_teacher_truncated()), "not a torch checkpoint"),
        "wrong shape": lambda: case(_teacher_run(tmp, change=_teacher_reshaped), "do not follow"),
        "NaN/inf": lambda: case(_teacher_run(tmp, change=_teacher_nan), "NaN or inf"),
        "unwritable output": lambda: case(TEACHER_RUN, "is not a directory", _under_a_file(tmp, "dest")),
    }


TABLE = {"parity": parity, "fly": fly, "export": export, "distill": distill, "teacher train": teacher_train,
         "teacher eval": teacher_eval, "teacher export": teacher_export}
# the cell names, fixed here so that pytest lists every cell (the builders make their files under tmp_path)
CELLS = {
    "parity": ["missing", "directory", "empty", "truncated", "wrong shape", "wrong shape (--sequences)",
               "missing key (--sequences)", "NaN/inf", "NaN/inf (--sequences)", "bad number",
               "bad number (too many Adam steps)", "bad number (NaN)"],
    "fly": ["missing", "directory", "empty", "truncated", "wrong shape", "wrong shape (observation width)", "NaN/inf",
            "bad number", "bad number (negative)", "bad number (--num_plots)", "bad number (--num_threads)",
            "bad device", "bad device (name)", "unwritable output (--json a directory)", "unwritable output",
            "unwritable output (--plot)"],
    "export": ["missing", "directory", "empty", "truncated", "truncated (.pt)", "wrong shape", "NaN/inf",
               "NaN/inf (.h5)", "bad number"],
    "distill": ["directory", "empty", "wrong shape", "bad number", "bad number (--num_envs)",
                "bad number (--learning_rate)", "bad number (--eval_episodes)", "bad device", "unwritable output"],
    "teacher train": ["missing", "directory", "empty", "truncated", "truncated (--dynamics JSON)", "NaN/inf",
                      "bad number", "bad number (--num_envs)", "bad number (--lr)", "bad number (--actor_hidden)",
                      "bad device", "unwritable output"],
    "teacher eval": ["directory", "empty", "truncated", "wrong shape", "NaN/inf", "bad number",
                     "bad number (--num_envs)", "bad number (--obs_slice)", "bad device", "unwritable output"],
    "teacher export": ["missing", "directory", "empty", "truncated", "wrong shape", "NaN/inf", "unwritable output"],
}


def run(argv: list[str]) -> int:
    """`eyas ARGV`'s exit status (argparse's own errors exit through SystemExit)."""
    try:
        return eyas_main(argv)
    except SystemExit as e:
        return e.code


def _no_cuda(monkeypatch) -> None:
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _reached(target: str):
    def reached(*args, **kwargs):
        raise AssertionError(f"{target} was reached: the bad input was not refused first")
    return reached


def _tripwire(monkeypatch, target: str, replacement=None) -> None:
    """``target`` ("module:attribute.path") replaced by ``replacement`` (default: a failure) for the test."""
    module, _, path = target.partition(":")
    owner = __import__(module, fromlist=["_"])
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    monkeypatch.setattr(owner, name, replacement or _reached(target))


def test_every_cell_is_listed(tmp_path):
    assert {command: list(build(tmp_path)) for command, build in TABLE.items()} == CELLS


@pytest.mark.parametrize("command, cell", [(c, cell) for c, cells in CELLS.items() for cell in cells])
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, command, cell):
    case = TABLE[command](tmp_path)[cell]()
    _no_cuda(monkeypatch)
    if case.tripwire:
        _tripwire(monkeypatch, case.tripwire)
    rc = run(case.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, (rc, err)
    assert lines[0].startswith(f"eyas {command}: error: ") and case.needle in lines[0], lines[0]
    assert "Traceback" not in err and not any(p.exists() for p in case.untouched), case.untouched


# the work each command does, interrupted there (Ctrl-C reaches Python as KeyboardInterrupt), and the one line it
# answers; `eyas teacher train` gets a real SIGINT in tests/test_crash_resume.py
RESUMABLE = "interrupted; the last complete epoch can be continued with --resume"
INTERRUPTED = {
    "parity": (["parity", "CHECKPOINT", "--dtype", "float64"], "eyas.parity:compare", "interrupted"),
    "fly": (["fly", "CHECKPOINT", "--episodes", "2", "--device", "cpu", "--json", "OUT"], "eyas.envs.fly:evaluate",
            "interrupted"),
    "export": (["export", "CHECKPOINT", "--out", "OUT"], "eyas.export:_write_onnx", "interrupted"),
    "distill": (["distill", "--teacher_checkpoint", str(TEACHER_RUN), "--log_dir", "OUT", *TINY_DISTILL],
                "eyas.distill.runner:DistillationRunner._run", RESUMABLE),
    "teacher eval": (["teacher", "eval", str(TEACHER_RUN), "--episodes", "2", "--device", "cpu", "--json", "OUT"],
                     "eyas.envs:evaluate", "interrupted"),
    "teacher export": (["teacher", "export", str(TEACHER_RUN), "OUT"], "eyas.teachers.loading:load_teacher",
                       "interrupted"),
}


@pytest.mark.parametrize("command", INTERRUPTED)
def test_interrupted_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch, command):
    """One line, exit 130, and no output but a run directory that --resume continues (distill's)."""
    argv, target, said = INTERRUPTED[command]
    out = tmp_path / "out"
    argv = [str(raptor_checkpoint_path()) if a == "CHECKPOINT" else str(out) if a == "OUT" else a for a in argv]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    _tripwire(monkeypatch, target, interrupt)
    assert run(argv) == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"eyas {command}: {said}"], lines
    assert not out.exists() or (command == "distill" and not list(out.glob("*.pt"))), list(out.iterdir())


def test_the_reliability_table_names_these_tests():
    """docs/reliability.md's table: every cell filled, every B cell a case above, every I cell an interrupt test."""
    lines = Path("docs/reliability.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| | missing |"))
    end = lines.index("", start)
    header, rows = lines[start], lines[start + 2:end]
    classes = [c.strip() for c in header.strip("|").split("|")][1:]
    assert len(rows) == len(CELLS) and len(classes) == 11
    for row in rows:
        command = row.split("`")[1]
        for cls, cell in zip(classes, [c.strip() for c in row.strip("|").split("|")][1:]):
            codes = [c.strip() for c in cell.split(",")]
            assert cell, (command, cls)
            if "B" in codes:
                assert any(c == cls or c.startswith(f"{cls} (") for c in CELLS[command]), (command, cls)
            if "I" in codes:
                assert command in INTERRUPTED, command
