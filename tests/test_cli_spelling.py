"""One CLI: every sub-command's help shows one spelling of its flags (snake_case), the kebab spelling works too (each
sub-command is run with it here), and the same things have the same names and defaults everywhere."""
import argparse
import json
import re

import pytest
import torch

from eyas import raptor_checkpoint_path
from eyas.cli import main as eyas
from eyas.cli_args import option_strings
from test_distill_inputs import write_teacher


def parsers() -> dict[str, argparse.ArgumentParser]:
    from eyas import export, parity
    from eyas.distill import cli as distill
    from eyas.envs import fly
    from eyas.teachers import cli as teacher

    teachers = next(a for a in teacher.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {"parity": parity.build_parser(), "export": export.build_parser(), "fly": fly.build_parser(),
            "distill": distill.build_parser(), **{f"teacher {k}": p for k, p in teachers.choices.items()}}


def kebab(argv: list[str]) -> list[str]:
    """``argv`` with every multi-word ``--flag_name`` written ``--flag-name``."""
    return [re.sub(r"(?<=\w)_(?=\w)", "-", a) if a.startswith("--") else a for a in argv]


@pytest.mark.parametrize("command", ["parity", "export", "fly", "distill", "teacher train", "teacher eval",
                                     "teacher export"])
def test_help_shows_one_spelling(command):
    parser = parsers()[command]
    flags = option_strings(parser) - {"--help"}
    assert flags and all("-" not in flag[2:] for flag in flags), sorted(flags)
    text = parser.format_help()
    assert not re.search(r"--\w+-\w", text), re.findall(r"--\w+-[\w-]+", text)


def test_the_same_things_have_the_same_names():
    table = parsers()
    for command in ("fly", "distill", "teacher train", "teacher eval"):
        actions = {s: a for a in table[command]._actions for s in a.option_strings}
        assert actions["--device"].default == "auto" and "--num_threads" in actions and "--seed" in actions, command
    for command in ("fly", "teacher eval"):
        assert "--json" in option_strings(table[command])
    assert not any("--threads" in option_strings(p) for p in table.values())


def test_parity_and_fly_with_the_other_spelling(tmp_path, capsys):
    checkpoint = str(raptor_checkpoint_path())
    assert eyas(["parity", checkpoint, *kebab(["--adam_steps", "0", "--dtype", "float64"])]) == 0
    assert "parity: OK" in capsys.readouterr().out
    summary = tmp_path / "fly.json"
    assert eyas(["fly", checkpoint, *kebab(["--episodes", "2", "--num_plots", "1", "--num_threads", "1",
                                            "--device", "cpu", "--model", "crazyflie", "--json", str(summary)])]) == 0
    assert json.loads(summary.read_text())["episodes"] == 2


def test_export_with_the_other_spelling(tmp_path):
    # export's flags are single words: the kebab form of its arguments is the form itself
    out = tmp_path / "out"
    assert eyas(["export", str(raptor_checkpoint_path()), *kebab(["--out", str(out), "--formats", "h5"])]) == 0
    assert [p.name for p in out.iterdir()] == ["policy.h5"]


def test_distill_with_the_other_spelling(tmp_path):
    teacher, run = write_teacher(tmp_path / "teacher.h5"), tmp_path / "run"
    flags = ["--teacher_checkpoint", str(teacher), "--log_dir", str(run), "--device", "cpu", "--quiet", "--n_epochs",
             "1", "--num_envs", "6", "--num_episodes", "3", "--offset_episodes", "2", "--min_teacher_return=-1e9",
             "--batch_size", "2", "--sequence_length", "8", "--eval_episodes", "2", "--eval_registry_episodes", "0",
             "--final_eval_episodes", "2", "--plots", "false", "--num_threads", "1"]
    assert eyas(["distill", *kebab(flags)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["num_envs"], saved["num_episodes"], saved["final_eval_episodes"]) == (6, 3, 2)


def test_teacher_with_the_other_spelling(tmp_path):
    out = tmp_path / "t"
    train = ["--mode", "privileged", "--out", str(out), "--iterations", "1", "--max_minutes", "0", "--num_envs", "8",
             "--steps_per_env", "4", "--eval_interval", "0", "--eval_envs", "4", "--final_eval_episodes", "4",
             "--actor_hidden", "8", "--critic_hidden", "8", "--num_threads", "1", "--device", "cpu", "--min_std", "0.1"]
    assert eyas(["teacher", "train", *kebab(train)]) == 0
    side = json.loads((out / "privileged" / "teacher.json").read_text())
    assert side["options"]["num_envs"] == 8 and side["actor"]["hidden_dims"] == [8]
    assert side["actor"]["distribution_cfg"]["std_range"][0] == 0.1
    results = tmp_path / "eval.json"
    evaluate = ["--episodes", "4", "--num_envs", "2", "--obs_slice", "0:74", "--json", str(results), "--device", "cpu"]
    assert eyas(["teacher", "eval", str(out / "privileged"), *kebab(evaluate)]) == 0
    assert json.loads(results.read_text())[0]["episodes"] == 4
    assert eyas(["teacher", "export", str(out / "privileged"), str(tmp_path / "x"), *kebab(["--keep_optimizer"])]) == 0
    assert "optimizer_state_dict" in torch.load(next((tmp_path / "x").glob("model_*.pt")), weights_only=True)
