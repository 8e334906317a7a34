"""Every sub-command: bad input gives one line `eyas <command>: error: ...` on stderr and exit 2, no traceback;
flags are accepted with `_` and `-` alike."""
import pytest

from eyas import raptor_checkpoint_path
from eyas.cli import main as eyas_main


def main(argv):
    """`eyas ARGV`'s exit status (argparse's own errors exit through SystemExit)."""
    try:
        return eyas_main(argv)
    except SystemExit as e:
        return e.code


def _bad_files(tmp_path):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(raptor_checkpoint_path().read_bytes()[:4096])
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file\n")
    return {"missing": tmp_path / "missing.h5", "truncated": truncated, "not HDF5": text}


def _one_error_line(capsys, rc, command):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"eyas {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("kind", ["missing", "truncated", "not HDF5"])
@pytest.mark.parametrize("command", [["parity"], ["fly", "--episodes", "1"], ["teacher", "eval"]])
def test_bad_checkpoint_gets_one_line(tmp_path, capsys, command, kind):
    path = _bad_files(tmp_path)[kind]
    name = " ".join(command[:2]) if command[0] == "teacher" else command[0]
    line = _one_error_line(capsys, main([*command, str(path)]), name)
    assert path.name in line


def test_bad_teacher_for_distill_gets_one_line(tmp_path, capsys):
    path = _bad_files(tmp_path)["truncated"]
    rc = main(["distill", "--teacher_checkpoint", str(path), "--log_dir", str(tmp_path / "run")])
    assert path.name in _one_error_line(capsys, rc, "distill")
    assert not (tmp_path / "run").exists()


def test_unknown_flag_gets_one_line(capsys):
    assert "--bogus" in _one_error_line(capsys, main(["fly", "--bogus", "1"]), "fly")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="missing.h5"):
        eyas_main(["fly", str(tmp_path / "missing.h5"), "--debug"])


def test_both_flag_spellings():
    from eyas.distill.cli import build_parser as distill_parser
    from eyas.distill.cli import config_from_args
    from eyas.teachers.cli import build_parser as teacher_parser

    assert config_from_args(distill_parser().parse_args(["--num-envs", "7", "--apg-eval-every", "3"])).collection.num_envs == 7
    assert distill_parser().parse_args(["--apg-eval-every=3"]).apg_eval_every == 3
    spelled = [teacher_parser().parse_args(["train", flag, "5", "--dynamics", "crazyflie", "--out", "x"])
               for flag in ("--num-envs", "--num_envs")]
    assert spelled[0].num_envs == spelled[1].num_envs == 5
    # help shows one spelling: the declared one
    assert "--num_envs" in distill_parser().format_help() and "--num-envs" not in distill_parser().format_help()
