#!/usr/bin/env bash
# Plain Keras `fit` against a TrainingJob with 1 worker on 1 GPU, in float32 and with training.mixedPrecision:
# samples/s, seconds to the first epoch, wall time (benchmarks.training's table) and the GPU's peak memory.
#   benchmarks/gpu.sh [more benchmarks.training arguments, e.g. --repeats 3]
# From any directory; PYTHON picks the interpreter (default: the repository's .venv). Results:
# benchmarks/results/<date>-training-gpu-{float32,mixed}.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
  echo "benchmarks/gpu.sh: no NVIDIA GPU on this machine (nvidia-smi is missing or lists no GPU); run it where one is." >&2
  exit 2
fi
if ! "$PY" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else 1)' 2>/dev/null; then
  echo "benchmarks/gpu.sh: TensorFlow in $PY sees no GPU: install its GPU build (pip install 'tensorflow[and-cuda]')" \
    "with the versions in pyproject.toml, or set PYTHON to an interpreter that has it." >&2
  exit 3
fi

day=$(date -u +%F)
for precision in float32 mixed; do
  log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$log" &
  sampler=$!
  extra=()
  [ "$precision" = mixed ] && extra=(--mixed-precision)
  "$PY" -m benchmarks.training --scenarios mlp-200k cnn-40k --workers 1 --gpus 1 --repeats 1 "${extra[@]}" "$@"
  kill "$sampler" 2>/dev/null || true
  echo "$precision: peak GPU memory used $(sort -n "$log" | tail -1) MiB (nvidia-smi, every process, the whole run)"
  rm -f "$log"
  for ext in json md png; do
    mv "benchmarks/results/$day-training.$ext" "benchmarks/results/$day-training-gpu-$precision.$ext"
  done
done
