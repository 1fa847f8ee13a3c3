#!/usr/bin/env bash
# The speed issue's GPU benchmark on one NVIDIA GPU, JAX backend (needs no TensorFlow):
# ResNet-50, 224 px, batch 256, mixed_bfloat16, LARS, views already on the device
# (benchmarks/jax_step.py), then end to end from uint8 256 px images with the paper's views
# made inside the jitted step (--views=device: images/s, and the views' share of a step),
# the same with both views in one pass (--concat-views, slower on CPUs, unmeasured on GPUs),
# then batch 512 for the memory scaling. Four compilations of about a minute each; meant to
# finish in under 6 minutes on an H200.
#
# Not yet run on a GPU (none was available where it was written). A CPU smoke run
# of the whole script (tiny model, so it ends in about a minute):
#   JAX_STEP_ARGS="--arch resnet18 --size 32 --batch 4 --dtype float32 --small-images
#   --warmup 1 --steps 1" PATH=/path/to/venv/bin:$PATH bash benchmarks/gpu.sh /tmp/gpu
#
# Where Keras and its small dependencies are missing (the lent H200 image has JAX, not
# Keras), put their wheels in .whl/ first (ignored by git; see the device tool's README):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
#
# Usage: bash benchmarks/gpu.sh [OUT_DIR]   (JSON lines also go to OUT_DIR, default $OUT or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$out/gpu.txt" || true
# JAX_STEP_ARGS, if set, is appended to every run (argparse: the last value wins).
python3 benchmarks/jax_step.py --batch 256 ${JAX_STEP_ARGS:-} | tee "$out/gpu_step.jsonl"
python3 benchmarks/jax_step.py --batch 256 --views=device ${JAX_STEP_ARGS:-} \
  | tee -a "$out/gpu_step.jsonl"
python3 benchmarks/jax_step.py --batch 256 --steps 10 --concat-views ${JAX_STEP_ARGS:-} \
  | tee -a "$out/gpu_step.jsonl"
python3 benchmarks/jax_step.py --batch 512 --steps 10 ${JAX_STEP_ARGS:-} \
  | tee -a "$out/gpu_step.jsonl"
