"""`eyas distill --config RECIPE.toml`: a recipe is the flags it names, the command line overrides it, and anything
else in it is one error line; recipes/ holds the main job's and the <= 30-minute command's settings exactly."""
import json

import pytest

from eyas.cli import main as eyas
from eyas.distill.cli import build_parser, config_from_args, with_recipe
from test_distill_inputs import write_teacher

# what scripts/main_job.sh passed before the recipe (its last flag-list version, and the final scorecard), without
# --log_dir
MAIN_JOB_FLAGS = """--teacher_checkpoint fixtures/teachers/privileged
  --num_envs 256 --num_episodes 256 --n_epochs 150 --epoch_teacher_forcing 5
  --batch_size 256 --sequence_length 100 --learning_rate 1e-3
  --on_policy false --max_dataset_steps 400000
  --eval_every 10 --eval_episodes 64 --eval_registry_episodes 10 --final_eval_episodes 500 --final_scorecard_episodes 128
  --apg_iterations 250 --apg_envs 512 --apg_horizon 500 --apg_window 100 --apg_window_steps 200
  --apg_steady_weight 5 --apg_registry_share 0.25 --apg_average_decay 0.9
  --apg_env mixed smooth --apg_env_steps 200
  --checkpoint_every 10 --num_threads 1 --seed 0""".split()
# the <= 30-minute command (fixtures/students/thirty_minutes_mixed): the main job with 425 APG steps, without --log_dir
THIRTY_MINUTES_FLAGS = [*MAIN_JOB_FLAGS, "--apg_iterations", "425", "--apg_window_steps", "350", "--apg_env_steps", "350"]


def config(argv):
    return config_from_args(build_parser().parse_args(with_recipe(argv))).to_dict()


@pytest.mark.parametrize("recipe, flags", [("recipes/main_job.toml", MAIN_JOB_FLAGS),
                                           ("recipes/thirty_minutes.toml", THIRTY_MINUTES_FLAGS)])
def test_a_recipe_is_the_command_it_replaces(recipe, flags):
    given = config(["--config", recipe, "--log_dir", "runs/x"])
    assert given == config([*flags, "--log_dir", "runs/x"])
    assert given != config(["--log_dir", "runs/x"])  # and not the defaults


def test_the_main_job_runs_its_recipe():
    from pathlib import Path

    script = Path("scripts/main_job.sh").read_text()
    assert '.venv/bin/eyas distill --config recipes/main_job.toml --log_dir "$RUN_DIR"\n' in script


def test_flags_on_the_command_line_override_the_recipe():
    given = config(["--config", "recipes/main_job.toml", "--num-envs", "7", "--on_policy", "--apg_iterations=3"])
    assert (given["num_envs"], given["on_policy"], given["apg_iterations"], given["num_episodes"]) == (7, True, 3, 256)


def test_a_recipe_run_saves_its_resolved_settings(tmp_path, capsys):
    teacher = write_teacher(tmp_path / "teacher.h5")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f'teacher_checkpoint = ["{teacher}"]\nn_epochs = 1\nnum_envs = 8\nnum_episodes = 4\n'
                      "offset_episodes = 2\nmin_teacher_return = -1e9\nbatch_size = 2\nsequence_length = 8\n"
                      "eval_episodes = 2\neval_registry_episodes = 0\nfinal_eval_episodes = 2\nplots = false\n"
                      'device = "cpu"\n')
    run = tmp_path / "run"
    assert eyas(["distill", "--config", str(recipe), "--num_envs", "6", "--log_dir", str(run), "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["num_envs"], saved["num_episodes"], saved["n_epochs"], saved["plots"]) == (6, 4, 1, False)


@pytest.mark.parametrize("text, needle", [
    ("num_envs = 4\nnum_env = 4\nbogus = 1\n", "unknown settings bogus, num_env"),
    ("resume = true\n", "unknown settings resume"),
    ("[apg]\niterations = 3\n", "unknown settings apg"),
    ("num_envs = [1, 2]\n", "num_envs takes one value"),
    ("teacher_checkpoint = \"x\"\nnum_envs = \"many\"\n", "argument --num_envs: invalid int value: 'many'"),
    ("on_policy = 3\n", "argument --on_policy: expected true/false"),
    ("num_envs = \n", "not a TOML recipe"),
    (None, "is a directory"),
    ("missing", "no such file"),
])
def test_a_bad_recipe_is_one_line_and_nothing_is_written(tmp_path, capsys, text, needle):
    recipe = tmp_path / "recipe.toml"
    if text is None:
        recipe.mkdir()
    elif text != "missing":
        recipe.write_text(text)
    assert eyas(["distill", "--config", str(recipe), "--log_dir", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"eyas distill: error: --config {recipe}: ") and needle in lines[0], lines
    assert not (tmp_path / "run").exists()
