#!/usr/bin/env bash
# Every GPU check of issue 14 in one prepared script, for a session that has a CUDA GPU
# (docs/results.md "Batched trials" lists what is still pending). Each check runs under its
# own `timeout`, writes <out>/<check>.log (and .json where the benchmark has one), and a failed
# or timed-out check does not stop the others; the summary at the end lists each status.
#
#   scripts/gpu_checks.sh                     # all checks, results in $OUT (see below)
#   scripts/gpu_checks.sh batched sweep       # only these (names below)
#   PY=/path/python CLIP_CKPT=... CLAP_CKPT=... scripts/gpu_checks.sh teachers
#
# checks (in this order; the timeouts add up to 17 min, + 2.5 with checkpoints; within a
# 15-minute device budget run `batched epoch sweep` first, then `cuda teachers`):
#   cuda      nvidia-smi, torch sees the GPU, the CUDA trainer test (tests/test_train.py)
#   batched   benchmarks/bench_batched.py: 8 trials separate vs one batched group, 10,000
#             videos, 1 epoch, batch 32, fp32 (issue goal: the group <= 2x one trial's time)
#             and the same in bf16
#   epoch     benchmarks/bench_train_epoch.py: one 10,000-video epoch at batch 32, resident
#             tensors (a) vs the official per-file DataLoader (b) (goal: 30 epochs <= 30 s,
#             >= 7x the official-style loader)
#   sweep     `vaplan sweep train --gpus-per-trial auto --group-size 2` on sim-tiny: trials
#             must get a GPU share and train.device=cuda
#   teachers  benchmarks/bench_teachers.py --device cuda (fp16 CLIP; random weights unless
#             CLIP_CKPT / CLAP_CKPT name checkpoint files, then also with those)
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-${TMPDIR:-/tmp}/vaplan_gpu_results}  # the device tool sets $OUT
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 PYTHONPATH=${PYTHONPATH:-.}
CHECKS=("$@")
[ ${#CHECKS[@]} -eq 0 ] && CHECKS=(cuda batched epoch sweep teachers)
for check in "${CHECKS[@]}"; do
    case $check in
        cuda|batched|epoch|sweep|teachers) ;;
        *) echo "unknown check '$check'; expected cuda batched epoch sweep teachers" >&2
           exit 2 ;;
    esac
done
mkdir -p "$OUT"
declare -A STATUS

run() {  # run <check> <seconds> <command...>: log to $OUT/<check>.log, record the status
    local name=$1 limit=$2
    shift 2
    echo "=== $name (timeout ${limit}s): $*" | tee -a "$OUT/$name.log"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    local took=$((SECONDS - started))
    if [ "$rc" -eq 0 ]; then STATUS[$name]="${STATUS[$name]:-}ok(${took}s) "
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then STATUS[$name]="${STATUS[$name]:-}TIMEOUT "
    else STATUS[$name]="${STATUS[$name]:-}FAILED(rc=$rc) "; fi
}

check_cuda() {
    run cuda 20 nvidia-smi
    run cuda 60 "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; \
print(torch.__version__, torch.cuda.get_device_name())"
    run cuda 90 "$PY" -m pytest tests/test_train.py -q -k cuda -p no:cacheprovider
}

check_batched() {
    for precision in fp32 bf16; do
        run batched 135 "$PY" benchmarks/bench_batched.py --device cuda --members 8 \
            --num-videos 10000 --epochs 1 --batch-size 32 --threads 4 --precision "$precision" \
            --json
    done
    grep -h '^{' "$OUT/batched.log" > "$OUT/batched.json" || true
}

check_epoch() {
    run epoch 240 "$PY" benchmarks/bench_train_epoch.py --device cuda --num-videos 10000 \
        --batch-size 32 --threads 8 --workers 8 --workdir "${TMPDIR:-/tmp}"
}

check_sweep() {
    local root
    root=$(mktemp -d)
    run sweep 150 "$PY" -m ray_jobs.tune_train --preset sim-tiny --num-samples 4 \
        --group-size 2 --gpus-per-trial auto --address local --no-asha \
        --tracking-uri "sqlite:///$root/mlflow.db" --storage-path "$root/ray" --name gpu
    if grep -q -- "--gpus-per-trial auto: 0 GPU" "$OUT/sweep.log"; then
        echo "sweep: trials got no GPU although the machine has one" | tee -a "$OUT/sweep.log"
        STATUS[sweep]="${STATUS[sweep]:-}NO-GPU "
    fi
    run sweep 30 "$PY" -c "
from mlflow import MlflowClient
c = MlflowClient('sqlite:///$root/mlflow.db')
runs = c.search_runs([c.get_experiment_by_name('vaplan-sweeps').experiment_id])
devices = {r.data.params.get('train.device') for r in runs if 'vaplan.trial_id' in r.data.tags}
print('trial devices:', devices)
assert devices == {'cuda'}, devices"
}

check_teachers() {
    run teachers 150 "$PY" benchmarks/bench_teachers.py --device cuda --precision fp16 \
        --random-weights --out "$OUT/teachers_random.json"
    if [ -n "${CLIP_CKPT:-}" ] && [ -f "${CLIP_CKPT}" ] && [ -n "${CLAP_CKPT:-}" ] \
        && [ -f "${CLAP_CKPT}" ]; then
        run teachers 150 "$PY" benchmarks/bench_teachers.py --device cuda --precision fp16 \
            --clip-ckpt "$CLIP_CKPT" --clap-ckpt "$CLAP_CKPT" --out "$OUT/teachers.json"
    else
        echo "teachers: CLIP_CKPT / CLAP_CKPT not set to files: real-weight run skipped" \
            | tee -a "$OUT/teachers.log"
    fi
}

for check in "${CHECKS[@]}"; do "check_$check"; done
echo "=== summary ($(date -u +%FT%TZ), results in $OUT/)"
for check in "${CHECKS[@]}"; do echo "$check: ${STATUS[$check]:-not run}"; done \
    | tee "$OUT/summary.txt"
