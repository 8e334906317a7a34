#!/usr/bin/env bash
# The CUDA check, in one run of at most 8 minutes: on a machine with CUDA and eyas installed (a CUDA build of
# PyTorch, `pip install -e ".[test]"`), it runs
#   1. the device tests on CUDA          pytest tests/test_device.py --device cuda (eager; the compiled env last)
#   2. the three benchmarks on CUDA      bench_policy.py, bench_env.py, bench_train.py, each with --json
#   3. a short distillation + APG        eyas distill --device cuda ... --apg_iterations 3
#      and the scorecard on CUDA          eyas evaluate (RAPTOR and the main-job student, 256 episodes per group)
#   4. the compiled path on CUDA         the compiled device test, bench_env.py --paths compiled
# each under its own time limit, and leaves every log and JSON in one folder (the first argument, else $OUT,
# else runs/gpu_check-<date>): status.tsv (step, exit code, seconds), env.txt, nvidia-smi.txt, <step>.log,
# pytest.xml, bench_policy.json, bench_env.json, bench_train.json, distill/ (summary.json, checkpoints, logs),
# pytest_compiled.xml, bench_env_compiled.json.
# With GPU_CHECK_ARCHIVE=PATH.tar.gz the folder is also packed into that one file at the end (a device runner that
# returns only a few files gets everything). Without CUDA it says so and exits 0. Exit code: 0 when every step
# passed, 1 otherwise.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          PYTHON=... to use another interpreter (default .venv/bin/python)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BUDGET_S=1500 bash scripts/gpu_check.sh DIR    the same run on the CPU, to check
#                                                the script itself on a machine without CUDA
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ "${DEVICE%%:*}" = cuda ] && [ "$("$PYTHON" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)" != "True" ]; then
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is not True for $PYTHON): nothing to check"
  exit 0
fi
if ! "$PYTHON" -c 'import eyas, eyas._rltools' 2>/dev/null; then
  echo "gpu_check: eyas (with its rl-tools bridge) is not importable by $PYTHON;" \
       "install it first: $PYTHON -m pip install -e '.[test]'" >&2
  exit 1
fi

OUT_DIR=${1:-${OUT:-runs/gpu_check-$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}  # the whole run stays under 8 minutes (+15 s for a last kill)
START=$(date +%s)
FAILED=0
printf 'step\texit_code\tseconds\n' > "$OUT_DIR/status.tsv"

# run_step NAME LIMIT_S COMMAND...: runs COMMAND with its output in NAME.log, killed after LIMIT_S seconds (or
# when the overall budget is spent, whichever is first); records its exit code (124: timed out) and duration.
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped (the ${BUDGET_S} s budget is spent)"
    printf '%s\tskipped\t0\n' "$name" >> "$OUT_DIR/status.tsv"
    FAILED=1
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s): $*"
  local t0 rc=0 dt
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1 || rc=$?
  dt=$(($(date +%s) - t0))
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$OUT_DIR/status.tsv"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    echo "   FAILED (exit $rc after ${dt} s; 124 = time limit); last lines of $OUT_DIR/$name.log:"
    tail -n 15 "$OUT_DIR/$name.log" | sed 's/^/   | /'
  else
    echo "   ok (${dt} s)"
  fi
}

{
  echo "date: $(date -Is)"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  "$PYTHON" -c 'import platform, torch; print("python", platform.python_version(), "torch", torch.__version__,
"cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
} > "$OUT_DIR/env.txt" 2>&1
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1

export PYTHONUNBUFFERED=1
# eager first (each figure in seconds), then the compiled path with what is left: on an H200 with torch 2.11 the
# compiled-env test, its first CUDA compile included, passed in 62 s with inductor's defaults (over 195 s with
# the CPU's options), and it must not cost the eager figures
EYAS_COMPILE=0 run_step pytest 90 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_device.py --device "$DEVICE" \
  -m "not compiled" --junitxml "$OUT_DIR/pytest.xml"
run_step bench_policy 60 "$PYTHON" benchmarks/bench_policy.py --device "$DEVICE" --rounds 3 \
  --json "$OUT_DIR/bench_policy.json"
run_step bench_env 40 "$PYTHON" benchmarks/bench_env.py --devices "$DEVICE" --sizes 1024 16384 65536 --seconds 1 \
  --paths eager --json "$OUT_DIR/bench_env.json"
TRAIN_ARGS=(--device "$DEVICE" --teachers fixtures/teachers --student fixtures/students/main_job/student.h5
  --num_episodes 64 --num_envs 1024 --eval_episodes 64 --eval_registry_episodes 2 --apg_envs 1024 --apg_horizon 100
  --repeat 1)
run_step bench_train 80 "$PYTHON" benchmarks/bench_train.py "${TRAIN_ARGS[@]}" --paths eager \
  --json "$OUT_DIR/bench_train.json"
EYAS_COMPILE=0 run_step distill 150 "$PYTHON" -m eyas.distill --teacher_checkpoint fixtures/teachers/privileged \
  --device "$DEVICE" --num_envs 128 --num_episodes 128 --n_epochs 2 --epoch_teacher_forcing 1 --offset_episodes 64 \
  --batch_size 32 --sequence_length 100 --learning_rate 1e-3 --eval_every 1 --eval_episodes 64 \
  --eval_registry_episodes 2 --final_eval_episodes 128 --apg_iterations 3 --apg_envs 256 --apg_horizon 100 \
  --apg_eval_every 3 --apg_eval_episodes 64 --apg_select_cases hover track_5s delay_10ms --plots false --quiet \
  --seed 0 --log_dir "$OUT_DIR/distill"
run_step evaluate 120 "$PYTHON" -m eyas.scorecard.cli fixtures/students/main_job/student.h5 --device "$DEVICE" \
  --episodes 256 --json "$OUT_DIR/scorecard.json"
run_step pytest_compiled 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_device.py --device "$DEVICE" \
  -m compiled --junitxml "$OUT_DIR/pytest_compiled.xml"
run_step bench_env_compiled 180 "$PYTHON" benchmarks/bench_env.py --devices "$DEVICE" --sizes 65536 --seconds 1 \
  --paths compiled --json "$OUT_DIR/bench_env_compiled.json"
echo
column -t -s $'\t' "$OUT_DIR/status.tsv" 2>/dev/null || cat "$OUT_DIR/status.tsv"
echo "total $(($(date +%s) - START)) s; logs and JSON in $OUT_DIR"
if [ -n "${GPU_CHECK_ARCHIVE:-}" ]; then
  tar -czf "$GPU_CHECK_ARCHIVE" -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")" && echo "packed into $GPU_CHECK_ARCHIVE"
fi
exit "$FAILED"
