#!/usr/bin/env bash
# One lease of a GPU machine (the `device` tool), as one script: check the CUDA and NVML paths
# for real, profile the GPU, fit a predictor, and run the network benchmark with power and
# energy. Every stage has its own time limit and the next runs whatever happened; everything
# lands in $OUT (log.txt, nvml_probe.json, and results.tgz with the campaign CSVs, sidecars,
# predictor, model card and benchmark output). Runs from the repository root:
#
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh [TOTAL_SECONDS=550] [NAME=gpu]
#
# Knobs (environment): STAGES (the stages to run, by name; default all), PW (the power window
# in seconds: skips the probe), SYN_PCT / ZOO_PCT (shares of TOTAL for the synthetic and zoo
# campaigns; default 25 / 15), POWER_SHARE (of the synthetic campaign's time on power windows;
# default 0.5), KINDS (the synthetic campaign's kinds; default all), SEED (both campaigns' seed;
# default 0: another seed gives other networks than an earlier lease's), PREDICTOR (the one the
# `validate` and network benchmark stages score when `fit` is not a stage), NA_DATA (the files
# the network benchmark fits its baselines on; default this lease's campaigns), DEMO_BUDGET
# (the demo stage's profiling seconds; default 180, the demo's own).
#
# The device machine's image lacks skops (the predictor format): carry its wheels, downloaded
# here into .whl/ (listed in .git/info/exclude) with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl skops==0.16.0 prettytable wcwidth
# The working tree the tool sends must stay under 64 MiB with the wheels (61 MiB of tracked
# files on 2026-11-27, the zoo campaigns gzipped: close; `git ls-files -z | xargs -0 du -cb |
# tail -1`).
set -u
TOTAL=${1:-550}
NAME=${2:-gpu}
OUT=${OUT:-gpu_out}
START=$(date +%s)
D=$OUT/$NAME
mkdir -p "$D"
LOG=$OUT/log.txt
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
DEV=${DEV:-cuda}   # DEV=cpu rehearses the script on a machine without a GPU

STAGES=${STAGES:-nvml_probe gpu_tests hook_check kernel_count profile profile_zoo fit predict validate network_accuracy}
# (demo, the README's first command on this device, runs only when STAGES names it)
PREDICTOR=${PREDICTOR:-$D/$NAME.predictor}

left() { echo $((START + TOTAL - $(date +%s))); }
stage() {  # stage NAME SECONDS COMMAND...: SIGINT at the limit (campaigns save and stop)
  local name=$1 limit=$2; shift 2
  case " $STAGES " in *" ${name%_plain} "*) ;; *) return ;; esac
  local l; l=$(left); [ "$limit" -gt "$((l - 20))" ] && limit=$((l - 20))
  if [ "$limit" -le 5 ]; then echo "=== $name: skipped, no time left" | tee -a "$LOG"; return; fi
  echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  timeout -s INT -k 15 "$limit" "$@" >>"$LOG" 2>&1
  echo "=== $name: rc=$? in $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
}

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
{ nvidia-smi; $PY -c "import sys, torch, sklearn, pandas, numpy, timm, pynvml, skops
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'cudnn', torch.backends.cudnn.version(), 'sklearn', sklearn.__version__, 'pandas',
      pandas.__version__, 'numpy', numpy.__version__, 'timm', timm.__version__, 'skops',
      skops.__version__, torch.cuda.get_device_name())"; } >>"$LOG" 2>&1

stage nvml_probe 30 $PY benchmarks/nvml_probe.py --json "$OUT/nvml_probe.json"
# the shortest window whose counter power varies by at most 3 % under a steady load
PW=${PW:-$($PY -c "import json; w = json.load(open('$OUT/nvml_probe.json'))['busy']['windows']
print(min([x['window_s'] for x in w if x['window_s'] >= 0.1 and x.get('cv_pct', 99) <= 3]
          or [0.5]))" 2>/dev/null || echo 0.5)}
echo "=== power window $PW s" | tee -a "$LOG"
stage gpu_tests 90 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py
stage hook_check 60 $PY benchmarks/gpu_hook_check.py --device $DEV
stage kernel_count 60 $PY benchmarks/kernel_count.py --device $DEV
# synthetic networks, half the time on power windows (0.5 s a layer on an H100), then real
# networks for runtime only
SYN=$(( (TOTAL * ${SYN_PCT:-25}) / 100 )); ZOO=$(( (TOTAL * ${ZOO_PCT:-15}) / 100 ))
stage profile $((SYN + 40)) $PY -m neuralpower profile -o "$D/$NAME.csv" --device $DEV \
  --budget $SYN --power-window $PW --power-share ${POWER_SHARE:-0.5} ${KINDS:+--kinds $KINDS} \
  --seed ${SEED:-0} --quiet
stage profile_zoo $((ZOO + 40)) $PY -m neuralpower profile -o "$D/${NAME}_zoo.csv" \
  --device $DEV --budget $ZOO --zoo --no-power --seed ${SEED:-0} --quiet
# calibrated on the zoo networks' whole times (fit --calibrate); plain if that fails
stage fit 90 $PY -m neuralpower fit "$D/$NAME.csv" "$D/${NAME}_zoo.csv" \
  -o "$D/$NAME.predictor" --card "$D/$NAME.md" --calibrate
[ -f "$D/$NAME.predictor" ] || stage fit_plain 60 $PY -m neuralpower fit "$D/$NAME.csv" \
  "$D/${NAME}_zoo.csv" -o "$D/$NAME.predictor" --card "$D/$NAME.md"
stage predict 30 $PY -m neuralpower predict "$PREDICTOR" torchvision:resnet50 \
  --input 8x3x224x224 --top 5
# the command a user runs: two networks predicted and measured, with its table and plot
stage validate 90 $PY -m neuralpower validate "$PREDICTOR" torchvision:resnet18 \
  torchvision:vit_b_16 --device $DEV --json --plot "$D/validate.png"
# the README's first command on this device: profile, fit, validate, report, rank
stage demo $(( ${DEMO_BUDGET:-180} + 150 )) $PY -m neuralpower demo --device $DEV \
  -o "$D/demo" --budget ${DEMO_BUDGET:-180} --quiet
stage network_accuracy $(( $(left) - 25 )) $PY benchmarks/network_accuracy.py \
  --predictor "$PREDICTOR" --data ${NA_DATA:-"$D/$NAME.csv" "$D/${NAME}_zoo.csv"} \
  --device $DEV --target-s 0.5 --calibrate --json "$D/network_accuracy_$NAME.json"
tar -C "$OUT" -czf "$OUT/results.tgz" "$NAME" && echo "=== packed $(du -h "$OUT/results.tgz" | cut -f1)" | tee -a "$LOG"
echo "=== done in $(( $(date +%s) - START ))s" | tee -a "$LOG"
