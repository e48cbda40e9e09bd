#!/usr/bin/env bash
# The one-call GPU check (not a test): run on a lent GPU machine that has nvcc/torch/peft but no
# Rust toolchain and no network. Prepare here, then carry and run in one go. A device call carries
# at most 64 MiB with the working tree (~23 MB), so the 95 MB binary travels gzipped (~28 MB):
#
#   CUDA_ARCHS=90 scripts/build-cuda.sh                     # CUDA binary (here, ~22 min)
#   mkdir -p target/gpu-carry && gzip -c target-cuda-sm90/release/hfsky > target/gpu-carry/hfsky.gz
#   .venv-pyref/bin/pip download --no-deps -d target/gpu-carry diffusers==0.42.1
#   device run, carry [target/gpu-carry]:
#     HFSKY=target/gpu-carry/hfsky.gz WHEELS=target/gpu-carry benches/gpu_check.sh
#
# What it does, with random-weight pipelines in the real SD 1.5 / SDXL configs made on the
# machine (benches/realsize/make_pipeline.py): `hfsky env`; then benches/realsize_bench.sh in
# CUDA mode, bf16 frozen weights (LoRA f32) on both sides: generation parity with diffusers from
# the same latents and the time of a 20-step SD 1.5 512 px and a 30-step SDXL 1024 px render; SD
# 1.5 512 px and SDXL 1024 px LoRA training steps, SDXL with and without gradient checkpointing,
# s/step, peak memory and hfsky's preflight memory estimate against diffusers + peft in the same
# run; then the SD 1.5 rows again with the GPU convolutions as im2col + cuBLAS instead of cuDNN
# (does cuDNN earn its place as the default?). Prints the table last (paste it into the README with
# the date); each row is also printed as it is measured ("row: …"), so a run cut short keeps them.
# TIME_LIMIT (default 420 s) bounds the benchmark so the whole check stays under 8 minutes. With
# $OUT set (the device tool's output folder) everything printed is also kept in $OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ]; then exec > >(tee -a "$OUT/gpu_check.log") 2>&1; fi
HFSKY="${HFSKY:?set HFSKY to the CUDA build of hfsky (or its .gz)}"
if [[ "$HFSKY" == *.gz ]]; then
  mkdir -p target/gpu-bin
  gzip -dc "$HFSKY" > target/gpu-bin/hfsky && chmod +x target/gpu-bin/hfsky
  HFSKY="$PWD/target/gpu-bin/hfsky"
fi
PY="${PYTHON:-python3}"
if [ -n "${WHEELS:-}" ]; then
  # diffusers is not on the GPU machine: install the carried wheel beside the system packages.
  "$PY" -m pip install -q --no-deps --no-index --target "$PWD/target/gpu-pydeps" "$WHEELS"/*.whl
  export PYTHONPATH="$PWD/target/gpu-pydeps${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, diffusers, peft, transformers; assert torch.cuda.is_available(), 'no CUDA device visible to torch'"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# The binary opens cuBLAS, cuRAND and cuDNN at run time: from the system, else from NVIDIA's
# wheels in a Python environment (devices::wheel_libs: torch's here). First what it finds by
# itself, as on Colab; then with the wheels' folders on LD_LIBRARY_PATH, so the rows below run
# either way. If it cannot use the GPU, `hfsky env` says why.
echo "without LD_LIBRARY_PATH (the wheels found by hfsky itself):" >&2
env -u LD_LIBRARY_PATH "$HFSKY" env 2>&1 | grep -E "^(device|gpu convolutions)" >&2 || true
NVLIBS=$("$PY" -c 'import glob, os, site
dirs = {os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "*.so*"))}
print(":".join(sorted(dirs)))')
if [ -n "$NVLIBS" ]; then export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
"$HFSKY" env || { echo "hfsky env failed: the CUDA binary does not start here" >&2; exit 1; }
"$HFSKY" env --json | "$PY" -c 'import json, sys
e = json.load(sys.stdin)
if e["auto_device"] == "cpu":
    sys.exit("hfsky does not use the GPU here: %s" % e["gpu_unavailable"])
conv = e.get("gpu_conv") or {}
if conv.get("backend") != "cudnn":
    print("note: GPU convolutions are not cuDNN here (%s): the +im2col rows compare im2col with itself" % conv.get("note"), file=sys.stderr)'

export DEVICE=cuda PRECISION=bf16 PYTHON="$PY" HFSKY DIR="${DIR:-target/realsize}"
export THREADS="${THREADS:-$(nproc)}" STEPS="${STEPS:-5}" WARMUP="${WARMUP:-2}"
export CASES="${CASES:-sd15-gen-512 sdxl-gen-1024 sd15-512 sdxl-1024 sdxl-1024-gc sd15-gen-512+im2col sd15-512+im2col}"
timeout "${TIME_LIMIT:-420}" benches/realsize_bench.sh
