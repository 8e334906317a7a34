#!/usr/bin/env bash
# Set up (scripts/bootstrap.sh) and run the main job:
#   1. parity of the released RAPTOR checkpoint against rl-tools' own C++ (a table of errors);
#   2. a small but real distillation on the CPU: the committed privileged PPO teacher
#      (fixtures/teachers/privileged) into the RAPTOR student with rl-tools' post-training algorithm, then
#      250 steps of APG fine-tuning through the differentiable simulator (eyas' addition, not rl-tools;
#      500-step flights with a steady-state term, a quarter of them on the registry models; the first 200 steps
#      update every 100 flight steps, truncated backpropagation, the rest through the whole flight),
#      evaluated on held-out randomised dynamics and every registry model (held-out episodes), exported to
#      rl-tools HDF5 (checked with foundation_policy), with TensorBoard logs and plots.
# Usage: bash scripts/main_job.sh [RUN_DIR]   (default: runs/main_job-<date>)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
RUN_DIR=${1:-runs/main_job-$(date +%Y%m%d-%H%M%S)}

CHECKPOINT=$(.venv/bin/python -c "import eyas; print(eyas.raptor_checkpoint_path())")
echo "== 1/2 parity: released RAPTOR checkpoint, PyTorch vs rl-tools C++"
.venv/bin/eyas parity "$CHECKPOINT"

# rl-tools' algorithm at CPU scale (docs/distillation.md, "Small runs on a CPU"): one teacher instead of 1000,
# so more episodes per epoch, an aggregating dataset, shorter sequences in wider batches, a larger step size;
# then APG fine-tuning of rl-tools' best actor (docs/distillation.md, "APG fine-tuning"; distilled_actor.h5 is
# rl-tools' result, best_actor.h5 the fine-tuned one).
# The APG flights' first compile (~2.5 min on one core with an empty inductor cache) is done on the second core
# while the distillation runs on the first: a one-step APG run of 40 episodes with the same APG settings fills the
# cache (~/.cache/eyas/inductor) that the real run then reads; batch sizes are symbolic in the compiled graphs, so
# they are the same graphs. Its files go to a temporary folder; should it fail, the real run compiles them itself.
APG=(--apg_horizon 500 --apg_window 100 --apg_window_steps 200 --apg_steady_weight 5 --apg_registry_share 0.25)
WARMUP_DIR=$(mktemp -d) WARMUP=
trap 'kill "$WARMUP" 2>/dev/null || true; rm -rf "$WARMUP_DIR"' EXIT
.venv/bin/eyas distill --teacher_checkpoint fixtures/teachers/privileged --n_epochs 0 --init_student "$CHECKPOINT" \
  --num_envs 40 --num_episodes 40 --offset_episodes 40 --eval_episodes 40 --eval_registry_episodes 1 \
  --final_eval_episodes 40 --apg_iterations 1 --apg_envs 40 --apg_eval_episodes 40 "${APG[@]}" \
  --plots false --quiet --num_threads 1 --seed 0 --log_dir "$WARMUP_DIR/run" > "$WARMUP_DIR/log" 2>&1 &
WARMUP=$!

echo "== 2/2 distillation: fixtures/teachers/privileged -> RAPTOR student, log dir $RUN_DIR"
.venv/bin/eyas distill \
  --teacher_checkpoint fixtures/teachers/privileged \
  --num_envs 256 --num_episodes 256 --n_epochs 150 --epoch_teacher_forcing 5 \
  --batch_size 256 --sequence_length 100 --learning_rate 1e-3 \
  --on_policy false --max_dataset_steps 400000 \
  --eval_every 10 --eval_episodes 64 --eval_registry_episodes 10 --final_eval_episodes 500 \
  --apg_iterations 250 --apg_envs 512 "${APG[@]}" \
  --checkpoint_every 10 --num_threads 1 --seed 0 --log_dir "$RUN_DIR"
echo "open $RUN_DIR/training.png and $RUN_DIR/flights.png; tensorboard --logdir $RUN_DIR"
