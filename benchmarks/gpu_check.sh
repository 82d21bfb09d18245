#!/usr/bin/env bash
# GPU check of stef_ray on one CUDA machine, inside a wall-clock deadline:
#   1. `stef-ray train` on vic-elec with the neural residual on --device cuda, then on --device cpu (wall time each);
#      both bundles scored on the same 28-day holdout (day-ahead forecasts from every midnight);
#   2. `stef-ray forecast` from the CUDA-trained bundle with --device cpu, --device cuda, and with no
#      --device on a process that sees no GPU;
#   3. the Ray Tune search of $TUNE_CONFIG (default tune_configs/prod.yaml) with 0.25 GPU + 2 CPUs per trial via
#      benchmarks/tune_gpu.py ($WINDOWS rolling-origin windows per trial, a Tune time budget that fits the
#      deadline); if enough time is left, the same search again at the config's own windows.
# Needs stef_ray and its dependencies importable (no MLflow needed) and data/vic_elec.csv
# (`stef-ray data vic-elec --out data/vic_elec.csv`). Each step is guarded by `timeout`; one failing step
# does not stop the next. Logs and JSON go to $OUT (at most 8 files).
#   OUT=out/gpu_check DEADLINE=380 bash benchmarks/gpu_check.sh
set -u
PY=${PY:-python3}
OUT=${OUT:-out/gpu_check}
DEADLINE=${DEADLINE:-380}     # seconds from start for everything, Ray shutdown included
WINDOWS=${WINDOWS:-4}         # first search: the tune config with this many objective windows
TUNE_CONFIG=${TUNE_CONFIG:-tune_configs/prod.yaml}
TUNE_EXTRA=${TUNE_EXTRA:-}    # more benchmarks/tune_gpu.py flags (a CPU rehearsal: --num-samples 2)
TRAIN_EXTRA=${TRAIN_EXTRA:-}  # more `stef-ray train` flags (a CPU rehearsal: --epochs 1)
W=${WORK:-/tmp/stef_gpu_check}
DATA=data/vic_elec.csv
mkdir -p "$OUT" "$W"
export STEF_RAY_DASHBOARD=0 RAY_DISABLE_DOCKER_CPU_WARNING=1 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
export MPLBACKEND=Agg
SUMMARY=$OUT/summary.txt
left() { echo $((DEADLINE - SECONDS)); }
step() {  # step NAME LOGFILE LIMIT CMD...: run with a time limit, log, record wall time and rc
  local name=$1 log=$2 limit=$3; shift 3
  local t0 rc
  t0=$(date +%s.%N)
  echo "===== $name (limit ${limit}s): $*" >>"$log"
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  printf '%-28s rc=%-3s wall=%6.1f s\n' "$name" "$rc" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" | tee -a "$SUMMARY"
  return $rc
}

{
  echo "start $(date -u +%FT%TZ), deadline ${DEADLINE}s"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  nproc; free -g | head -2; df -h /dev/shm /tmp 2>&1 | tail -2
  $PY - <<'EOF' 2>&1
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for name in ("ray", "pydantic", "pydantic_core", "numpy", "pandas", "pyarrow", "jsonschema", "tensorboardX"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"), module.__file__)
    except Exception as err:
        print(name, "IMPORT FAILED", type(err).__name__, err)
EOF
} >>"$OUT/env.txt" 2>&1

# 1. train on CUDA and on CPU (the holdout month, from 2014-12-04, is kept out of both)
TRAIN=(-m stef_ray train --config configs/vic_elec.yaml --data $DATA --end 2014-12-04 $TRAIN_EXTRA)
step train_cuda "$OUT/train.txt" 120 $PY "${TRAIN[@]}" --device cuda --out "$W/bundle_cuda"
step forecast_cuda_bundle_cpu "$OUT/train.txt" 60 $PY -m stef_ray forecast --model "$W/bundle_cuda" \
  --data $DATA --origin 2014-12-04 --device cpu --no-plot --out "$W/fc_cpu"
step forecast_cuda_bundle_cuda "$OUT/train.txt" 60 $PY -m stef_ray forecast --model "$W/bundle_cuda" \
  --data $DATA --origin 2014-12-04 --device cuda --no-plot --out "$W/fc_cuda"
step forecast_cuda_bundle_nogpu "$OUT/train.txt" 60 env CUDA_VISIBLE_DEVICES= $PY -m stef_ray forecast \
  --model "$W/bundle_cuda" --data $DATA --origin 2014-12-04 --no-plot --out "$W/fc_nogpu"
step train_cpu "$OUT/train.txt" 120 $PY "${TRAIN[@]}" --device cpu --out "$W/bundle_cpu"
step holdout_scores "$OUT/train.txt" 60 $PY - "$W/bundle_cuda" "$W/bundle_cpu" <<'EOF'
import sys
from stef_ray.bundle import load_bundle
from stef_ray.data import load_hourly
from stef_ray.integrations.tune import holdout_start, score_holdout
for path in sys.argv[1:]:
    try:
        model, manifest = load_bundle(path, device="cpu")
        data = load_hourly(manifest.data, "data/vic_elec.csv")
        start = holdout_start(data, 28)
        m = score_holdout(model, data, start)
        n = manifest.training.neural or {}
        print(f"{path}: trained on {manifest.model_settings['residual']['device']}, neural kept {n.get('kept')}, "
              f"epochs {n.get('epochs_run')}; holdout from {start} ({int(m['origins'])} day-ahead forecasts): "
              f"MAPE {m['MAPE']:.3f} %  MAE {m['MAE']:.1f} MW  RMSE {m['RMSE']:.1f} MW")
    except Exception as err:
        print(f"{path}: FAILED {type(err).__name__}: {err}")
EOF
grep -E "TRAINING NEURAL|Neural residual trained|gate:|evaluation against|holdout from|error|Error" "$OUT/train.txt" | tee -a "$SUMMARY"

# 2. the Ray Tune search, fractional GPUs; the budget leaves ~60 s for Ray start, the driver's base fit,
# holdout scoring and shutdown
tune_run() {  # tune_run WINDOWS JSON
  local budget=$(($(left) - 60)) limit=$(($(left) - 8))
  if [ "$budget" -lt 60 ]; then echo "skip tune windows=$1: only $(left) s left" | tee -a "$SUMMARY"; return 1; fi
  step "tune_windows_$1" "$OUT/tune.txt" "$limit" $PY benchmarks/tune_gpu.py --config "$TUNE_CONFIG" $TUNE_EXTRA \
    --data $DATA --windows "$1" --time-budget-s "$budget" --storage "$W/ray_results" \
    --bundle-out "$W/bundle_tuned_$1" --name "tune_gpu_$1" --out "$2"
  local rc=$?
  {
    echo "===== ray logs after tune windows=$1 (rc $rc)"
    ls -la /tmp/ray/session_latest/logs 2>&1 | head -40
    for f in gcs_server.err raylet.err raylet.out; do
      echo "--- $f"; tail -n 25 "/tmp/ray/session_latest/logs/$f" 2>&1
    done
    echo "--- worker errors"; grep -l -E "Traceback|Error" /tmp/ray/session_latest/logs/worker-*.err 2>/dev/null |
      head -3 | while read -r f; do echo "# $f"; grep -v UserWarning "$f" | tail -n 30; done
  } >>"$OUT/ray_logs.txt" 2>&1
  return $rc
}
tune_run "$WINDOWS" "$OUT/tune_gpu_${WINDOWS}w.json"
# The config's own windows (prod: 8) if there is room for a real try
FULL=$($PY -c "import yaml; print(yaml.safe_load(open('$TUNE_CONFIG'))['objective']['windows'])")
if [ "$(left)" -gt 200 ] && [ "$FULL" != "$WINDOWS" ]; then
  tune_run "$FULL" "$OUT/tune_gpu_${FULL}w.json"
fi
grep -E "trials \(|best rolling-origin MAPE|holdout from|window seconds|search ended early|a trial's resources" "$OUT/tune.txt" |
  tee -a "$SUMMARY"
echo "end after ${SECONDS}s" | tee -a "$SUMMARY"
