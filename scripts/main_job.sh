#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the main job:
#   1. parity of the released RAPTOR checkpoint against rl-tools' own C++ (a table of errors);
#   2. a small but real distillation on the CPU, recipes/main_job.toml: the committed privileged PPO teacher
#      (fixtures/teachers/privileged) into the RAPTOR student with rl-tools' post-training algorithm, then APG
#      fine-tuning through the differentiable simulator (eyas' addition, not rl-tools), evaluated on held-out
#      randomised dynamics and every registry model (held-out episodes), exported to rl-tools HDF5 (checked with
#      foundation_policy), with TensorBoard logs and plots.
# Usage: bash scripts/main_job.sh [RUN_DIR]   (default: runs/main_job-<date>)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
RUN_DIR=${1:-runs/main_job-$(date +%Y%m%d-%H%M%S)}

CHECKPOINT=$(.venv/bin/python -c "import eyas; print(eyas.raptor_checkpoint_path())")
echo "== 1/2 parity: released RAPTOR checkpoint, PyTorch vs rl-tools C++"
.venv/bin/eyas parity "$CHECKPOINT"

# The distillation's settings are recipes/main_job.toml (rl-tools' algorithm at CPU scale, then APG fine-tuning of
# rl-tools' best actor; docs/distillation.md; distilled_actor.h5 is rl-tools' result, best_actor.h5 the fine-tuned
# one).
# The APG flights' first compile (~2.5 min on one core with an empty inductor cache) is done on the second core
# while the distillation runs on the first: a one-step APG run with the recipe's APG settings (its batch included:
# APG's graphs are compiled for it) fills the cache (~/.cache/eyas/inductor) that the real run then reads. Its files
# go to a temporary folder; should it fail, the real run compiles them itself.
WARMUP_DIR=$(mktemp -d) WARMUP=
trap 'kill "$WARMUP" 2>/dev/null || true; rm -rf "$WARMUP_DIR"' EXIT
.venv/bin/eyas distill --config recipes/main_job.toml --n_epochs 0 --init_student "$CHECKPOINT" \
  --num_envs 40 --num_episodes 40 --offset_episodes 40 --eval_episodes 40 --eval_registry_episodes 1 \
  --final_eval_episodes 40 --apg_iterations 1 --apg_eval_episodes 40 \
  --plots false --quiet --log_dir "$WARMUP_DIR/run" > "$WARMUP_DIR/log" 2>&1 &
WARMUP=$!

echo "== 2/2 distillation: recipes/main_job.toml, log dir $RUN_DIR"
.venv/bin/eyas distill --config recipes/main_job.toml --log_dir "$RUN_DIR"
echo "open $RUN_DIR/training.png and $RUN_DIR/flights.png; tensorboard --logdir $RUN_DIR"
