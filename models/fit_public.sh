#!/usr/bin/env bash
# Rebuild the shipped predictors from the public measurements in profiling/public/.
set -euo pipefail
cd "$(dirname "$0")/.."
P=profiling/public
fit() { out=$1; shift; neuralpower fit "$@" -o "models/$out.predictor" --card "models/$out.md"; }
fit v100 "$P/neusight_v100_conv.csv" "$P/neusight_v100_linear.csv"
fit t4 "$P/neusight_t4_conv.csv" "$P/neusight_t4_linear.csv"
fit jetson_tx2_gpu "$P/sysidentif_tx2_gpu_conv.csv"
fit raptorlake_cpu "$P/willowec_raptorlake_cpu.csv"
